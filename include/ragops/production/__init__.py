"""The live RAG application's side: traces (``tracing``), the reference application path
(``app``), the semantic answer cache (``cache``), loading traces into the state store
(``load``), online evaluation, aggregates and breaches (``monitor``) and the review queue
(``review``). ``ragops.app`` and ``ragops.tracing`` are the short names applications import."""
