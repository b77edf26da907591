"""The reference application path: answer a question the way production should, and trace it.

``answer(question)`` resolves the live version of the index and the prompt's ``production``
alias, retrieves, generates, and writes a trace (``ragops.tracing``). With
``production.cache.enabled``, a question close enough to an earlier one, asked of the SAME index
version with the SAME prompt version, is answered from the semantic cache (marked on the trace).
Embedding model, Chroma client and LLM client are kept per process, so a long-lived application
pays their start-up once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ragops import pipelines, state
from ragops.config import Settings, load_settings
from ragops.errors import LlmError, RagopsError, UnknownIndexError
from ragops.production import tracing

log = logging.getLogger(__name__)
_RES: dict[tuple[Any, ...], Any] = {}
_RES_LOCK = threading.Lock()
MAX_QUESTION_CHARS = 4000


@dataclass
class Answer:
    """What the application shows, and what the trace recorded."""

    trace_id: str
    question: str
    answer: str
    refused: bool
    citations: list[int]
    contexts: list[dict[str, Any]]
    index: str
    index_version: int
    prompt: str  # name@version
    model: str
    served_model: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    retrieval_ms: float
    generation_ms: float
    cost_usd: float | None
    cache_hit: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resource(key: tuple[Any, ...], make: Any) -> Any:
    with _RES_LOCK:
        if key not in _RES:
            _RES[key] = make()
        return _RES[key]


def reset() -> None:
    """Forget the per-process clients and models (tests, or after changing settings)."""
    with _RES_LOCK:
        _RES.clear()


def cost_of(settings: Settings, model: str, served: str, tokens_in: int, tokens_out: int) -> float | None:
    """USD of one request at ``eval.prices``; None when the model has no price (unknown, not free)."""
    from ragops.evaluation.runner import price_of

    price = price_of(settings, model, served)
    if price is None:
        return None
    return round((tokens_in * price["input_per_1m"] + tokens_out * price["output_per_1m"]) / 1e6, 9)


def answer(question: str, index: str | None = None, prompt: str = "rag_answer", *, settings: Settings | None = None,
           user_id: str | None = None, session_id: str | None = None, mode: str | None = None,
           prompt_ttl_seconds: float = 30.0) -> Answer:
    """Answer ``question`` from the live version of ``index`` with ``prompt`` (``NAME`` = its
    production alias, or ``NAME@VERSION`` / ``NAME@ALIAS``) and record the trace."""
    from ragops.embedding import Embedder
    from ragops.evaluation.runner import Retriever, make_generator
    from ragops.llm import ChatClient, LlmSettings, SentenceEncoder
    from ragops.registry import get_prompt
    from ragops.retrieval import effective
    from ragops.vectorstore import VectorStore

    s = settings or load_settings()
    if not isinstance(question, str) or not question.strip():
        raise RagopsError("empty question: pass the text to answer")
    question = question.strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise RagopsError(f"question of {len(question)} characters: at most {MAX_QUESTION_CHARS} are answered")
    index = index or s.ingest.default_index
    t0 = time.perf_counter()
    state.require_schema(s.state_db_url)
    with state.session_scope(s.state_db_url) as sess:
        live = state.live_version(sess, index)
        known = state.known_indexes(sess)
    if live is None:
        raise UnknownIndexError(f"unknown index {index!r}: known indexes are {', '.join(known) or '(none yet)'}; "
                                f"ingest into it first with `ragops ingest SOURCE --index {index}`")
    name, _, alias = prompt.partition("@")
    p = get_prompt(name, alias or "production", settings=s, ttl_seconds=prompt_ttl_seconds)
    pipe = pipelines.for_index(s, index).embedding
    encoder = _resource(("encoder", pipe), lambda: SentenceEncoder(Embedder(pipe)))
    store = _resource(("store", s.chroma, str(s.data_dir)), lambda: VectorStore(s))
    model = p.model.name if p.model.provider != "extractive" else "extractive"
    # the call's mode > the prompt's > the live version's tuned choice > retrieval.mode
    eff = effective(s, index, mode, prompt_mode=p.retrieval_mode, version=live)
    retrieval_mode = eff.mode
    common = {"index": index, "index_version": live.version, "prompt": p.name, "prompt_version": p.version,
              "model": model, "retrieval_mode": retrieval_mode, "user_id": user_id, "session_id": session_id}

    from ragops.production import cache

    scope = cache.scope(index, live.version, p.name, p.version)
    qvec = encoder([question])[0] if s.production.cache.enabled else None
    if qvec is not None:
        hit = cache.lookup(s, scope, qvec, question=question)
        if hit is not None:
            total = (time.perf_counter() - t0) * 1000
            pl = hit["payload"]
            trace_id = tracing.record(question, pl["answer"], settings=s, **common, served_model=pl["served_model"],
                                      chunks=pl["chunks"], tokens_in=0, tokens_out=0, retrieval_ms=0.0,
                                      generation_ms=0.0, latency_ms=total, refused=pl["refused"], cost_usd=0.0,
                                      cache_hit=True, saved_tokens=pl["tokens_in"] + pl["tokens_out"],
                                      saved_usd=pl.get("cost_usd"))
            return Answer(trace_id, question, pl["answer"], pl["refused"], pl["citations"], pl["chunks"], index,
                          live.version, p.ref, model, pl["served_model"], 0, 0, round(total, 2), 0.0, 0.0, 0.0,
                          cache_hit=True, detail={"cache": {"similarity": hit["similarity"],
                                                            "cached_question": hit["question"],
                                                            "saved_tokens": pl["tokens_in"] + pl["tokens_out"]}})

    retriever = Retriever(store, encoder, live.collection, retrieval_mode, s.replace(retrieval=eff.retrieval))
    t_r = time.perf_counter()
    _docs, contexts, _chunk_docs = retriever.block([question], p.top_k, p.top_k)[0]
    retrieval_ms = (time.perf_counter() - t_r) * 1000
    client = None
    if p.model.provider != "extractive":
        llm = LlmSettings.from_env(s)
        if llm is not None:
            client = _resource(("llm", llm), lambda: ChatClient(llm, s, use_cache=False))
    chunks = [{"id": c.chunk_id, "doc_id": c.doc_id, "score": c.score, "n": c.n, "title": c.title,
               **({"page": c.page} if c.page else {}),
               **({"text": c.text[:s.production.max_context_chars]} if s.production.store_contexts else {})}
              for c in contexts]
    t_g = time.perf_counter()
    try:
        gen = make_generator(p, encoder, client).generate(p, question, contexts)
    except LlmError as exc:
        total = (time.perf_counter() - t0) * 1000
        tracing.record(question, None, settings=s, **common, chunks=chunks, retrieval_ms=retrieval_ms,
                       generation_ms=(time.perf_counter() - t_g) * 1000, latency_ms=total, error=str(exc)[:500])
        raise
    generation_ms = (time.perf_counter() - t_g) * 1000
    total = (time.perf_counter() - t0) * 1000
    served = gen.model or model
    cost = cost_of(s, model, served, gen.tokens_in, gen.tokens_out)
    trace_id = tracing.record(question, gen.answer, settings=s, **common, served_model=served, chunks=chunks,
                              tokens_in=gen.tokens_in, tokens_out=gen.tokens_out, retrieval_ms=retrieval_ms,
                              generation_ms=generation_ms, latency_ms=total, refused=gen.refused, cost_usd=cost)
    if qvec is not None:
        cache.store(s, scope, question, qvec, trace_id, {
            "answer": gen.answer, "refused": gen.refused, "citations": gen.citations, "chunks": chunks,
            "served_model": served, "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out, "cost_usd": cost})
    return Answer(trace_id, question, gen.answer, gen.refused, gen.citations, chunks, index, live.version, p.ref,
                  model, served, gen.tokens_in, gen.tokens_out, round(total, 2), round(retrieval_ms, 2),
                  round(generation_ms, 2), cost, detail=dict(gen.detail))
