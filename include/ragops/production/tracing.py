"""Traces of the live application: one JSON line per request, one per feedback.

A trace line reads like an OpenTelemetry span: ``trace_id`` (32 hex), ``span_id`` (16 hex),
``name``, ``timestamp`` (ISO 8601, UTC) and ``attributes`` named after the OpenTelemetry GenAI
semantic conventions where one exists (``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.data_source.id``, ``gen_ai.conversation.id``) and
``ragops.*`` otherwise. It also carries the query-log fields (``query``, ``index``,
``answer``), so drift's query checks read the same files (one source of truth).

Feedback lines are ``{"kind": "feedback", "trace_id", "feedback_id", "timestamp", "score",
"comment"}``. Files go to ``production.traces`` (default ``<data_dir>/traces``) as
``YYYY-MM-DD/<host>-<pid>.jsonl``; one ``write`` per line, so a crash leaves at most one partial
last line, which the loader leaves for later. User and session ids are stored as salted hashes.

With ``production.otlp_endpoint`` set (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), each trace is
also exported as a span over OTLP/HTTP with the same trace id and attributes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from ragops.config import Settings, load_settings
from ragops.errors import RagopsError

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
SPAN_NAME = "ragops.answer"


class TracingError(RagopsError):
    """A trace or feedback that cannot be written as asked."""


def _settings(settings: Settings | None) -> Settings:
    return settings or load_settings()


def hash_id(value: str | None, salt: str) -> str | None:
    """Salted SHA-256 of a user or session id: countable, never readable."""
    if value is None or value == "":
        return None
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:32]


def new_trace_id() -> str:
    return uuid.uuid4().hex


def _file_for(settings: Settings, at: dt.datetime) -> str:
    base = settings.traces_uri.rstrip("/")
    return f"{base}/{at:%Y-%m-%d}/{socket.gethostname()}-{os.getpid()}.jsonl"


def write_lines(settings: Settings, rows: Sequence[dict[str, Any]], at: dt.datetime | None = None) -> str:
    """Append rows to this process's trace file of the day (one write per row); returns the path."""
    import fsspec

    path = _file_for(settings, at or dt.datetime.now(dt.UTC))
    fs, p = fsspec.core.url_to_fs(path)
    with _LOCK:
        fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
        try:
            fh = fs.open(p, "ab")
        except (NotImplementedError, ValueError):  # object stores cannot append: one file per write
            p = p.replace(".jsonl", f"-{uuid.uuid4().hex[:12]}.jsonl")
            fh = fs.open(p, "wb")
        with fh:
            for row in rows:
                fh.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
                fh.flush()
    return path


def span_record(*, question: str, answer: str | None, trace_id: str | None = None,
                timestamp: dt.datetime | None = None, index: str | None = None, index_version: int | None = None,
                prompt: str | None = None, prompt_version: int | None = None, model: str | None = None,
                served_model: str | None = None, provider: str | None = None, retrieval_mode: str | None = None,
                chunks: Sequence[dict[str, Any]] = (), tokens_in: int = 0, tokens_out: int = 0,
                retrieval_ms: float | None = None, generation_ms: float | None = None,
                latency_ms: float | None = None, refused: bool = False, cost_usd: float | None = None,
                cache_hit: bool = False, saved_tokens: int | None = None, saved_usd: float | None = None,
                error: str | None = None, user_id: str | None = None,
                session_id: str | None = None, salt: str = "ragops") -> dict[str, Any]:
    """The trace line of one request (see the module doc for the names)."""
    at = (timestamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider or ("ragops.extractive" if model == "extractive" else "openai"),
        "gen_ai.request.model": model,
        "gen_ai.response.model": served_model or model,
        "gen_ai.usage.input_tokens": tokens_in,
        "gen_ai.usage.output_tokens": tokens_out,
        "gen_ai.data_source.id": index,
        "gen_ai.conversation.id": hash_id(session_id, salt),
        "ragops.user.hash": hash_id(user_id, salt),
        "ragops.index.version": index_version,
        "ragops.prompt.name": prompt,
        "ragops.prompt.version": prompt_version,
        "ragops.retrieval.mode": retrieval_mode,
        "ragops.retrieval.chunks": list(chunks),
        "ragops.latency.retrieval_ms": retrieval_ms,
        "ragops.latency.generation_ms": generation_ms,
        "ragops.latency.total_ms": latency_ms,
        "ragops.refused": bool(refused),
        "ragops.cost_usd": cost_usd,
        "ragops.cache.hit": bool(cache_hit),
        "ragops.cache.saved_tokens": saved_tokens,
        "ragops.cache.saved_usd": saved_usd,
        "ragops.error": error,
    }
    return {"trace_id": trace_id or new_trace_id(), "span_id": uuid.uuid4().hex[:16], "name": SPAN_NAME,
            "timestamp": at.isoformat(), "query": question, "index": index, "answer": answer,
            "attributes": {k: v for k, v in attrs.items() if v is not None}}


def record(question: str, answer: str | None, *, settings: Settings | None = None, **fields: Any) -> str:
    """Write the trace of one request (for applications that do not use ``ragops.app``);
    returns its trace id. Keywords: see :func:`span_record`."""
    s = _settings(settings)
    if not isinstance(question, str) or not question.strip():
        raise TracingError("a trace needs the question: pass a non-empty string")
    for name in ("tokens_in", "tokens_out"):
        v = fields.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TracingError(f"{name} must be a non-negative integer, got {v!r}")
    row = span_record(question=question, answer=answer, salt=s.production.hash_salt, **fields)
    at = dt.datetime.fromisoformat(row["timestamp"])
    if otlp_endpoint(s):
        export_span(s, row)
    write_lines(s, [row], at)
    return str(row["trace_id"])


def feedback(trace_id: str, score: float | str | bool, comment: str | None = None, *,
             settings: Settings | None = None, timestamp: dt.datetime | None = None) -> str:
    """Record a user's verdict on a trace (score > 0 good, < 0 bad; ``up``/``down``, ``true``/
    ``false`` as the query log takes them); returns the feedback id. The trace may be loaded
    before or after this row."""
    from ragops.drift.querylog import parse_feedback

    s = _settings(settings)
    if not isinstance(trace_id, str) or not trace_id.strip() or len(trace_id) > 64:
        raise TracingError(f"feedback needs the trace id the answer came with (at most 64 characters), got {trace_id!r}")
    try:
        value = parse_feedback(score)
    except ValueError as exc:
        raise TracingError(f"{exc}: use up or down, or a finite number (> 0 good, < 0 bad)") from exc
    if value is None:
        raise TracingError("feedback without a score: use up or down, or a number (> 0 good, < 0 bad)")
    at = (timestamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    fid = uuid.uuid4().hex
    write_lines(s, [{"kind": "feedback", "feedback_id": fid, "trace_id": trace_id.strip(),
                     "timestamp": at.isoformat(), "score": value, "comment": comment}], at)
    return fid


# ---- OTLP export (optional) -------------------------------------------------------------------

_PROVIDERS: dict[str, Any] = {}


def otlp_endpoint(settings: Settings) -> str | None:
    return settings.production.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None


def _provider(endpoint: str) -> Any:
    if endpoint not in _PROVIDERS:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
            "OTEL_SERVICE_NAME", "ragops-app")}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
        _PROVIDERS[endpoint] = provider
    return _PROVIDERS[endpoint]


def _otel_value(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float)):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def export_span(settings: Settings, row: dict[str, Any]) -> None:
    """Send the trace as one span with the same trace id; a collector that is down loses the span
    (logged), never the request or the trace file."""
    from opentelemetry import trace as ot
    from opentelemetry.sdk.trace import RandomIdGenerator

    endpoint = otlp_endpoint(settings)
    provider = _provider(endpoint)  # type: ignore[arg-type]
    start = int(dt.datetime.fromisoformat(row["timestamp"]).timestamp() * 1e9)
    total = float(row["attributes"].get("ragops.latency.total_ms") or 0.0)
    parent = ot.set_span_in_context(ot.NonRecordingSpan(ot.SpanContext(
        trace_id=int(row["trace_id"], 16), span_id=RandomIdGenerator().generate_span_id(), is_remote=True,
        trace_flags=ot.TraceFlags(ot.TraceFlags.SAMPLED))))
    tracer = provider.get_tracer("ragops")
    attrs = {k: _otel_value(v) for k, v in row["attributes"].items()}
    attrs["gen_ai.input.messages"] = _otel_value([{"role": "user", "parts": [{"type": "text",
                                                                            "content": row["query"]}]}])
    if row.get("answer") is not None:
        attrs["gen_ai.output.messages"] = _otel_value([{"role": "assistant", "parts": [{"type": "text",
                                                                                     "content": row["answer"]}]}])
    try:
        span = tracer.start_span(row["name"], context=parent, start_time=start, attributes=attrs,
                                 kind=ot.SpanKind.CLIENT)
        span.end(end_time=start + int(total * 1e6))
    except Exception as exc:  # noqa: BLE001 - the exporter must never fail a request
        log.warning("OTLP export to %s failed (%s); the trace file keeps the trace", endpoint, exc)
