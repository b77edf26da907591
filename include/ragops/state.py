"""The state store: SQLAlchemy 2 models, engine set-up and Alembic migrations.

It holds the record manager (documents and chunks with their hashes), index versions and the
live alias, sync runs, quarantine entries and the append-only audit log. Chroma holds vectors;
this database is the truth about what *should* be in Chroma, and the self-check compares them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ragops.errors import StateStoreError, StateStoreUnavailableError

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# a server restart (pg_ctl restart, failover, container restart) takes seconds: new connections
# wait for it this long before the error reaches the caller
CONNECT_RETRY_SECONDS = 30.0
# what PostgreSQL and libpq say while a server goes down, restarts or cannot be reached
TRANSIENT_MARKERS = (
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "the database system is not yet accepting connections",
    "terminating connection due to administrator command", "server closed the connection unexpectedly",
    "connection refused", "could not connect to server", "connection timed out", "timeout expired",
    "connection reset by peer", "no route to host", "could not receive data from server",
    "could not send data to server", "ssl syscall error", "connection already closed", "server conn crashed",
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Document(Base):
    """One source document as last indexed: its content hash and the settings that chunked it."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("index_name", "source_id", "doc_id", name="uq_documents_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(1024))
    doc_id: Mapped[str] = mapped_column(String(1024))
    content_hash: Mapped[str] = mapped_column(String(64))
    settings_hash: Mapped[str] = mapped_column(String(32))
    title: Mapped[str | None] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(Text)  # the file it came from (records share one)
    n_chunks: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Chunk(Base):
    """A chunk that must be in the live Chroma collection, with the text it was embedded from."""

    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_doc", "index_name", "source_id", "doc_id"),)

    index_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(1024))
    doc_id: Mapped[str] = mapped_column(String(1024))
    position: Mapped[int] = mapped_column(Integer)
    text_hash: Mapped[str] = mapped_column(String(64))
    n_tokens: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IndexVersion(Base):
    """A versioned Chroma collection (`<index>__v<N>`) and the settings it was built with."""

    __tablename__ = "index_versions"
    __table_args__ = (UniqueConstraint("index_name", "version", name="uq_index_versions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    collection: Mapped[str] = mapped_column(String(128), unique=True)
    embedding_model: Mapped[str] = mapped_column(Text)
    # model + chunking the version was built with (ragops.pipelines); NULL = built before 0004
    pipeline: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    built_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # chunks, reused, embedded, seconds
    # retrieval mode and fusion weights tuned on the index's golden set, with the evidence
    # (ragops.tuning); NULL = not tuned, the settings' retrieval serves
    retrieval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="live")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexAlias(Base):
    """Which collection serves an index. Moved in one transaction; readers resolve it per query."""

    __tablename__ = "index_aliases"

    index_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("index_versions.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncRun(Base):
    __tablename__ = "sync_runs"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(24))
    trigger: Mapped[str] = mapped_column(String(64), default="cli")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Quarantine(Base):
    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_run", "run_id"), Index("ix_quarantine_index", "index_name"),
                      Index("ix_quarantine_doc", "index_name", "source_id", "doc_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128))
    index_name: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(1024))
    doc_id: Mapped[str] = mapped_column(String(1024))
    stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    # failure = quarantined; repaired / warning = indexed after ragops.repair fixed or flagged the text
    severity: Mapped[str] = mapped_column(String(16), default="failure", server_default="failure")
    # hash of content + pipeline + quality settings of a failure: unchanged documents are not read again
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptVersion(Base):
    """A registered prompt version: its file may never change again (content hash)."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(256), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    registered_by: Mapped[str] = mapped_column(String(128))
    registered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    announced: Mapped[int] = mapped_column(Integer, default=0)  # 1 once an Asset event told promote_prompt


class PromptAlias(Base):
    """Which version an alias (production, candidate, ...) of a prompt points at."""

    __tablename__ = "prompt_aliases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptEvent(Base):
    """History of a prompt's aliases and gate decisions: who moved what, when, why, with evidence."""

    __tablename__ = "prompt_events"
    __table_args__ = (Index("ix_prompt_events_name", "name", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # initial | promoted | rejected | rolled_back | set
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Append-only log of decisions: who, when, what, why, with the evidence."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    index_name: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertRecord(Base):
    """The alert outbox: every alert is recorded before it is sent, so none is lost silently.

    ``status``: pending (not yet delivered), sending (claimed by a process that is sending it;
    ``sent_at`` holds the claim time until it is sent), sent, folded (an identical alert was or
    will be sent; it is counted in that e-mail), failed (delivery gave up; retried later),
    undeliverable (no recipients configured)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_fingerprint", "fingerprint", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    recipients: Mapped[list[str]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    folded_into: Mapped[int | None] = mapped_column(Integer)


class EvalRun(Base):
    """One evaluation run: what was evaluated (prompt, index version, dataset) and its aggregates."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_index", "index_name", "started_at"),)

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # running | success | partial | failed
    trigger: Mapped[str] = mapped_column(String(64), default="cli")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    index_name: Mapped[str] = mapped_column(String(64))
    index_version: Mapped[int | None] = mapped_column(Integer)
    collection: Mapped[str | None] = mapped_column(String(128))
    prompt_name: Mapped[str] = mapped_column(String(128))
    prompt_version: Mapped[int] = mapped_column(Integer)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    dataset_path: Mapped[str] = mapped_column(Text)
    dataset_hash: Mapped[str] = mapped_column(String(64))
    n_questions: Mapped[int] = mapped_column(Integer, default=0)
    generator: Mapped[str] = mapped_column(String(256))
    output_dir: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class EvalResult(Base):
    """Per-question outcome of an eval run (retrieved ids, answer, every metric, or the error)."""

    __tablename__ = "eval_results"

    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.run_id", ondelete="CASCADE"), primary_key=True)
    question_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    ok: Mapped[int] = mapped_column(Integer, default=1)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DriftSnapshot(Base):
    """A reference for corpus drift: a seeded sample of the live collection's vectors plus the
    index's length distributions, taken at an index swap, a prompt promotion or by name."""

    __tablename__ = "drift_snapshots"
    __table_args__ = (UniqueConstraint("index_name", "name", name="uq_drift_snapshots_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(32))  # index_swap | index_rollback | prompt_promotion | first_check | named
    named: Mapped[int] = mapped_column(Integer, default=0)  # 1 = kept until deleted
    collection: Mapped[str] = mapped_column(String(128))
    index_version: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    n_vectors: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # npz: vectors, chunk token lengths, chunks per document
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftCheck(Base):
    """One check_drift run: its parameters, every test's figures, the breaches and the report."""

    __tablename__ = "drift_checks"
    __table_args__ = (Index("ix_drift_checks_index", "index_name", "started_at"),)

    check_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | ok | breach | failed
    trigger: Mapped[str] = mapped_column(String(64), default="cli")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    snapshot_id: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    breaches: Mapped[list[str]] = mapped_column(JSON, default=list)
    report_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class LlmCacheEntry(Base):
    """Responses of a chat endpoint keyed by model, rendered messages and parameters."""

    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(256))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Trace(Base):
    """One request of the live application (ragops.tracing), loaded from the trace files.

    ``hour`` is the request time cut to the hour and ``latency_bucket`` its latency's bucket
    (ragops.production.aggregate), so hourly and daily figures are one GROUP BY in any database."""

    __tablename__ = "traces"
    __table_args__ = (Index("ix_traces_hour", "hour"), Index("ix_traces_prompt", "prompt_name", "prompt_version", "ts"))

    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    hour: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    index_name: Mapped[str | None] = mapped_column(String(64))
    index_version: Mapped[int | None] = mapped_column(Integer)
    prompt_name: Mapped[str | None] = mapped_column(String(128))
    prompt_version: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(256))  # requested
    served_model: Mapped[str | None] = mapped_column(String(256))
    retrieval_mode: Mapped[str | None] = mapped_column(String(16))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    latency_bucket: Mapped[int | None] = mapped_column(Integer)
    retrieval_ms: Mapped[float | None] = mapped_column(Float)
    generation_ms: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)  # None = unknown price (never counted as free)
    cache_hit: Mapped[int] = mapped_column(Integer, default=0)
    saved_tokens: Mapped[int] = mapped_column(Integer, default=0)  # a cache hit: tokens the cached answer cost
    saved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    user_hash: Mapped[str | None] = mapped_column(String(64))
    session_hash: Mapped[str | None] = mapped_column(String(64))
    chunks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    feedback: Mapped[float | None] = mapped_column(Float)  # the latest feedback score (> 0 good, < 0 bad)
    feedback_comment: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)  # file it was loaded from
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TraceFeedback(Base):
    """Feedback rows, kept even when their trace has not arrived yet (it is joined when it does)."""

    __tablename__ = "trace_feedback"
    __table_args__ = (Index("ix_trace_feedback_trace", "trace_id"),)

    feedback_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)


class TraceEval(Base):
    """Online evaluation of one sampled trace: groundedness, citations, safety, judge."""

    __tablename__ = "trace_evals"
    __table_args__ = (Index("ix_trace_evals_at", "evaluated_at"),)

    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    evaluated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(128))
    faithfulness: Mapped[float | None] = mapped_column(Float)
    hallucinated: Mapped[int | None] = mapped_column(Integer)  # None = nothing to check (refusal, no claims)
    citation_validity: Mapped[float | None] = mapped_column(Float)
    pii: Mapped[int] = mapped_column(Integer, default=0)
    blocklist: Mapped[int] = mapped_column(Integer, default=0)
    injection: Mapped[int] = mapped_column(Integer, default=0)  # instructions found in the retrieved text
    judge: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TraceSource(Base):
    """Load watermark of one trace file: how many bytes of it are loaded (only whole lines)."""

    __tablename__ = "trace_sources"

    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TraceReview(Base):
    """A person's verdict on a production trace from the review queue."""

    __tablename__ = "trace_reviews"

    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(32))  # answer | unanswerable | not_a_problem
    reference_answer: Mapped[str | None] = mapped_column(Text)
    relevant: Mapped[list[str]] = mapped_column(JSON, default=list)
    reviewer: Mapped[str] = mapped_column(String(256))
    reviewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    golden_path: Mapped[str | None] = mapped_column(Text)


class MonitorRun(Base):
    """One monitor_production run: what it loaded, evaluated, aggregated and found."""

    __tablename__ = "monitor_runs"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # running | ok | breach | failed
    trigger: Mapped[str] = mapped_column(String(64), default="cli")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    breaches: Mapped[list[str]] = mapped_column(JSON, default=list)


class AnswerCacheEntry(Base):
    """The semantic cache: an answer keyed EXACTLY by index version and prompt version, found by
    the similarity of the question's embedding (ragops.production.cache)."""

    __tablename__ = "answer_cache"
    __table_args__ = (Index("ix_answer_cache_key", "scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(256))  # index@version|prompt@version
    question: Mapped[str] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, normalised
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # answer, refused, citations, chunks, tokens, model
    trace_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (mapped tasks) do not block the writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL and process. SQLite files get WAL mode and a busy timeout."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # pre-ping: a pooled connection that a server restart killed is replaced, not used
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "do_connect", partial(_connect_with_retry, url))
    return engine


def transient(exc: BaseException) -> bool:
    """The database went away or is restarting (a retry can succeed), as opposed to a bad query,
    a constraint violation or a wrong password. Only SQLAlchemy's errors qualify: a Chroma or
    HTTP error raised inside a transaction is not the state store's."""
    if isinstance(exc, DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or _transient_text(str(exc.orig or exc))


def _transient_text(text: str) -> bool:
    text = text.lower()
    return any(m in text for m in TRANSIENT_MARKERS)


def _connect_with_retry(url: str, dialect: Any, _conn_rec: Any, cargs: tuple, cparams: dict) -> Any:
    """New connections wait out a restarting server (bounded by CONNECT_RETRY_SECONDS)."""
    deadline = time.monotonic() + CONNECT_RETRY_SECONDS
    delay = 0.2
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.Error as exc:
            if not _transient_text(str(exc)) or time.monotonic() + delay > deadline:
                raise
            log.warning("state store %s not reachable (%s); retrying in %.1fs", redact_url(url),
                        " ".join(str(exc).split())[:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Apply Alembic migrations; safe to run any number of times."""
    from alembic import command

    get_engine(url)  # creates the SQLite parent dir
    command.upgrade(alembic_config(url), revision)
    return current_revision(url) or ""


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def require_schema(url: str) -> None:
    """Fail with the fix when the state store has not been migrated to this code's schema.

    A SQLite file that does not exist yet is not created by asking (a failed command leaves nothing behind)."""
    sqlite_file = _sqlite_path(url)
    if sqlite_file is not None and not sqlite_file.exists():
        raise StateStoreError(
            f"the state store at {redact_url(url)} does not exist yet: run `ragops db upgrade` (or `make demo`) first"
        )
    engine = get_engine(url)
    if not inspect(engine).has_table("documents"):
        raise StateStoreError(
            f"the state store at {redact_url(url)} has no ragops schema: run `ragops db upgrade` "
            "(or `make demo`) first"
        )
    cur, head = current_revision(url), head_revision()
    if cur != head:
        raise StateStoreError(
            f"the state store at {redact_url(url)} is at migration {cur}, this code needs {head}: "
            "run `ragops db upgrade`"
        )


def _sqlite_path(url: str) -> Path | None:
    """The file of a file-backed SQLite URL, else None (memory databases, other dialects)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:" or \
            u.database.startswith("file:"):
        return None
    return Path(u.database)


def redact_url(url: str) -> str:
    """Hide a password in a database URL before it reaches a log or an error."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown without its credentials part
        return url.split("@")[-1]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error. A connection lost in between (the
    server restarted) becomes :class:`StateStoreUnavailableError`, which the DAGs retry."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    committing = False
    try:
        yield session
        committing = True
        session.commit()
    except BaseException as exc:
        session.rollback()
        if transient(exc):
            raise StateStoreUnavailableError(_lost_connection(url, exc, committing)) from exc
        raise
    finally:
        session.close()


def _lost_connection(url: str, exc: BaseException, committing: bool) -> str:
    first = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    outcome = ("it was lost while committing, so the transaction may or may not have been saved"
               if committing else "the transaction was rolled back, nothing of it was saved")
    return (f"lost the connection to the state store at {redact_url(url)} ({first}): the server restarted or the "
            f"network dropped, and {outcome}. Every ragops step is safe to repeat: Airflow retries the task (on the "
            "command line, run the command again); if it keeps failing, check that the database server is up")


def audit(session: Session, actor: str, action: str, index_name: str | None, **detail: Any) -> None:
    session.add(AuditEntry(actor=actor, action=action, index_name=index_name,
                           detail=json.loads(json.dumps(detail, default=str))))


def live_version(session: Session, index_name: str) -> IndexVersion | None:
    row = session.execute(
        select(IndexVersion).join(IndexAlias, IndexAlias.version_id == IndexVersion.id)
        .where(IndexAlias.index_name == index_name)
    ).scalar_one_or_none()
    return row


def known_indexes(session: Session) -> list[str]:
    return sorted(session.execute(select(IndexAlias.index_name)).scalars())
