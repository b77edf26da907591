"""Assets the ragops DAGs produce and consume.

An index is chosen per run (a Param), so the ingest DAG emits through an AssetAlias and
attaches the concrete ``ragops://index/<name>`` asset at run time; downstream DAGs schedule on
:func:`index_asset` of the index they care about.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

INDEX_UPDATES = AssetAlias("ragops_index_updates")
PIPELINE_CHANGES = AssetAlias("ragops_pipeline_changes")
EVAL_REPORTS = AssetAlias("ragops_eval_reports")


def index_asset(index: str) -> Asset:
    return Asset(name=f"ragops_index_{index}", uri=f"ragops://index/{index}", group="ragops")


PROMPT_VERSIONS = Asset(name="ragops_prompt_versions", uri="ragops://prompts/versions", group="ragops")
"""Updated by sync_prompts (through the alias, so only when new prompt versions were
registered; extra: the versions); promote_prompt runs on it."""
PROMPT_UPDATES = AssetAlias("ragops_prompt_updates")


def pipeline_asset(index: str) -> Asset:
    """Updated by an ingest that finds the settings' model or chunking changed for ``index``;
    rebuild_index runs on it to apply the change through a validated blue/green rebuild."""
    return Asset(name=f"ragops_pipeline_{index}", uri=f"ragops://pipeline/{index}", group="ragops")


def eval_asset(index: str) -> Asset:
    """Updated by nightly_eval with each report (extra: run id, status, key metrics, report path)."""
    return Asset(name=f"ragops_eval_{index}", uri=f"ragops://eval/{index}", group="ragops")


def index_from_uri(uri: str, kind: str = "index") -> str | None:
    prefix = f"ragops://{kind}/"
    return uri[len(prefix):] if uri.startswith(prefix) else None
