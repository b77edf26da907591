"""Settings: defaults here, overridden by a YAML file, overridden by environment variables.

Frozen dataclasses so a settings object can be hashed into chunk ids and passed between
functions without anyone mutating it. Loading is cheap (YAML only), so DAG files may call it
at parse time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragops.errors import ConfigError, UnknownIndexError, brief
from ragops.yamlio import YamlDoc, dotted, load_yaml

PACKAGE_DIR = Path(__file__).resolve().parent
INDEX_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,46}[a-z0-9]$")


def project_root() -> Path:
    """The project checkout this package lives in (editable install), else the working dir."""
    env = os.environ.get("RAGOPS_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parent.parent  # <root>/include/ragops
    if (candidate / "include" / "config").is_dir():
        return candidate
    return Path.cwd().resolve()


@dataclass(frozen=True)
class ChromaSettings:
    mode: str = "embedded"  # embedded | server
    conn_id: str = "chroma_default"
    url: str | None = None
    token: str | None = field(default=None, repr=False)
    upsert_batch_size: int = 1000
    # dense search tuning (ragops.vectorstore.VectorStore.tune_search): the smallest HNSW ef_search whose
    # recall@10 against exact search reaches target_recall on tune_sample queries; re-tuned when a
    # collection has grown or shrunk by more than retune_growth since it was tuned
    target_recall: float = 0.995
    tune_sample: int = 300
    retune_growth: float = 0.2


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str = "bundled:all-MiniLM-L6-v2"
    batch_size: int = 8
    normalize: bool = True
    device: str = "cpu"
    backend: str = "onnx"  # torch | onnx | openvino (onnx/openvino: an export of the same model, written once)
    quantize: str = "none"  # none | int8 (dynamic int8, onnx backend only: faster, measured quality loss)
    threads: int = 0  # inference threads of onnx/openvino; 0 = every core
    cache_dir: str | None = None  # where exports are written; None = <data_dir>/models


@dataclass(frozen=True)
class ChunkingSettings:
    profile: str = "default"
    chunk_tokens: int = 200
    overlap_tokens: int = 30
    markdown_headers: tuple[str, ...] = ("#", "##", "###")
    # name -> {chunk_tokens, overlap_tokens, markdown_headers}, resolved on load; "default" = the fields above
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    def with_profile(self, name: str) -> ChunkingSettings:
        """These settings with the named profile's values (what a rebuild with that profile uses)."""
        profiles = self.profiles or {"default": {k: getattr(self, k) for k in PROFILE_KEYS}}
        if name not in profiles:
            raise ConfigError(f"unknown chunking profile {name!r}: the settings define {', '.join(sorted(profiles))} "
                              "(chunking.profiles)")
        values = dict(profiles[name])
        values["markdown_headers"] = tuple(values["markdown_headers"])
        return dataclasses.replace(self, profile=name, **values)


PROFILE_KEYS = ("chunk_tokens", "overlap_tokens", "markdown_headers")


@dataclass(frozen=True)
class QualitySettings:
    min_chars: int = 20
    max_chars: int = 2_000_000
    max_document_bytes: int = 10 * 1024 * 1024
    max_failed_share: float = 0.2
    max_duplicate_text_share: float = 0.5
    max_delete_share: float = 0.5
    # ragops.repair: a document is quarantined as mostly_broken above this share of lost (U+FFFD) or
    # meaningless (control) characters; repairable ones (C1 as Windows-1252, mojibake) do not count
    max_bad_char_share: float = 0.05
    replacement_chars: str = "keep"  # U+FFFD: keep (listed as a warning) or remove (also a warning)
    # ragops.safety.toxicity at ingest: documents with a toxic sentence are indexed with a warning finding
    # (none | profanity | embedding | combined; profanity is nearly free, the others embed every sentence)
    toxicity_checker: str = "profanity"
    # source URI prefix -> overrides of the settings above for documents of that source
    sources: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class RecordSettings:
    id_field: tuple[str, ...] = ("id", "_id", "doc_id")
    title_field: tuple[str, ...] = ("title",)
    text_field: tuple[str, ...] = ("text", "content", "body")
    metadata_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestSettings:
    schedule: str | None = "@hourly"
    default_index: str = "docs"
    default_source: str = "include/corpus"
    batch_documents: int = 200
    include: tuple[str, ...] = (
        "**/*.md", "**/*.markdown", "**/*.txt", "**/*.rst", "**/*.html", "**/*.htm", "**/*.pdf", "**/*.docx",
        "**/*.jsonl", "**/*.parquet",
    )
    exclude: tuple[str, ...] = ("**/.*", "**/.*/**")
    records: RecordSettings = RecordSettings()


EVENT_TYPES = ("failure", "gate", "prompt", "index", "drift", "quality", "eval", "model", "production")


@dataclass(frozen=True)
class AlertSettings:
    """Who gets which e-mail. ``recipients`` maps an event type (or ``default``) to addresses."""

    smtp_conn_id: str = "smtp_default"
    from_email: str = "ragops@localhost"
    base_url: str | None = None  # Airflow UI base URL for links; None = [api] base_url or localhost:8080
    dedupe_window_minutes: int = 60
    send_attempts: int = 4
    retry_backoff_seconds: float = 2.0
    log_lines: int = 30
    recipients: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"default": ("ragops-oncall@localhost",)},
                                                    hash=False)

    def recipients_for(self, event: str) -> tuple[str, ...]:
        return tuple(self.recipients.get(event) or self.recipients.get("default") or ())


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation runs: datasets, metric cut-offs, the regression check, the LLM connection."""

    schedule: str | None = "0 2 * * *"  # nightly_eval cron (also runs when an index Asset is updated)
    timezone: str = "UTC"
    default_dataset: str = "include/eval/golden/docs.jsonl"
    default_prompt: str = "rag_answer@production"
    output_dir: str | None = None  # None = <data_dir>/eval
    ks: tuple[int, ...] = (1, 3, 5, 10)  # cut-offs of the retrieval metrics
    sample_size: int = 0  # 0 = every question
    seed: int = 13
    support_threshold: float = 0.7  # cosine at which a context sentence supports an answer sentence
    allow_unknown_doc_ids: bool = False  # relevant ids not in the index: error (False) or never retrieved
    semantic_metrics: bool = True  # answer relevance and similarity: one embedding per answer and reference
    blocklist: tuple[str, ...] = ()  # words or phrases that must never appear in an answer
    # ragops.safety.toxicity checker of answers and retrieved passages: combined | embedding | profanity | none
    toxicity_checker: str = "combined"
    # sentence vectors of passages and answers kept on disk (<data_dir>/cache, one file per embedder) so the next
    # run does not embed them again; the oldest go first beyond this size; 0 = off
    vector_cache_mb: int = 256
    baseline_runs: int = 7  # nightly_eval compares with the mean of this many previous runs
    regression_margin: float = 0.02  # a drop smaller than this is never a regression
    confidence: float = 0.95  # of the paired bootstrap interval on each metric's difference
    bootstrap_samples: int = 2000
    watch_metrics: tuple[str, ...] = ("hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1",
                                      "answer_similarity", "refusal_accuracy", "toxicity_rate")
    max_consecutive_errors: int = 5  # the generator failed this often in a row = stop the run
    llm_conn_id: str = "llm_default"
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 3
    judge: bool = True  # LLM-as-judge when an LLM connection is configured
    judge_model: str | None = None  # None = the connection's default model
    judge_runs: int = 3
    judge_toxicity: bool = False  # the judge's second opinion on toxicity, beside the shipped checker (one more call
    # per answer and judge run): judge_toxicity (0-1) and judge_toxicity_rate
    # answers per question when the prompt samples (chat model, temperature > 0 or unset): each sample is
    # scored, the question's metric is their mean, the per-sample values and spread are kept and the gate's
    # bootstrap resamples them too; 1 = one answer per question
    samples: int = 1
    # model -> {input_per_1m, output_per_1m} per 1M tokens, or {free: true} (a local model); no entry = unknown cost
    prices: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)


RETRIEVAL_MODES = ("dense", "lexical", "hybrid")


@dataclass(frozen=True)
class RebuildSettings:
    schedule: str | None = "0 3 * * 0"  # weekly blue/green rebuild (compacts Chroma); null = only on demand
    timezone: str = "UTC"
    keep: int = 2  # versions kept for rollback (live included); older ones are dropped


@dataclass(frozen=True)
class DriftSettings:
    """check_drift: corpus, query, document-statistics and quality drift (ragops.drift)."""

    schedule: str | None = "30 4 * * *"  # after nightly_eval (02:00); null = on demand only
    timezone: str = "UTC"
    checks: tuple[str, ...] = ("corpus", "documents", "queries", "gaps", "quality")
    methods: tuple[str, ...] = ("mmd", "classifier", "centroid")  # two-sample tests on embeddings
    alpha: float = 0.01  # significance of a breach, split over the methods of a check (Bonferroni)
    sample_size: int = 2000  # vectors per side (reference, current); sampled with `seed`
    permutations: int = 200  # permutation resamples behind every p-value and the classifier's threshold
    seed: int = 13
    snapshot_keep: int = 10  # automatic reference snapshots kept per index (named ones are kept until deleted)
    query_log: str | None = None  # file, folder or fsspec URL of JSONL/Parquet; null = <data_dir>/querylog
    reference_window: str = "7d"  # queries of this long before the current window are the reference
    current_window: str = "1d"  # the newest queries, ending at the run's data interval end
    min_queries: int = 30  # fewer queries in a window: the query tests are skipped (reported, not a breach)
    gap_threshold: float = 0.35  # a query whose best chunk's cosine similarity is below this is uncovered
    max_gap_share: float = 0.2  # breach when more of the current window's queries are uncovered
    gap_clusters: int = 5  # largest clusters of uncovered queries listed, with examples
    cluster_distance: float = 0.55  # cosine distance below which uncovered queries share a cluster
    psi_threshold: float = 0.2  # population stability index of a distribution above this (and KS significant)
    count_change: float = 0.5  # relative change of document or chunk count beyond this is a breach
    quarantine_rise: float = 0.1  # quarantine rate up by more than this (and significant) is a breach
    feedback_rise: float = 0.05  # share of negative user feedback up by more than this (and significant)
    baseline_runs: int = 14  # nightly eval runs before the window that set each metric's control limits
    window_runs: int = 7  # newest nightly runs checked against them
    min_sigma: float = 0.01  # floor of a metric's standard deviation (deterministic evals have none)
    ewma_lambda: float = 0.3
    run_length: int = 5  # this many runs in a row below the centre line (by half a sigma) is a breach
    targeted_eval: bool = True  # on a corpus/query/gap breach, run nightly_eval on the nearest golden questions
    targeted_questions: int = 10
    targeted_min_similarity: float = 0.3  # golden questions less similar than this to the drifted region are not "near"


@dataclass(frozen=True)
class CacheSettings:
    """The semantic answer cache of ``ragops.app`` (off by default)."""

    enabled: bool = False
    threshold: float = 0.96  # cosine similarity of two questions' embeddings that counts as the same question
    max_entries: int = 10000  # per index version x prompt version; the least recently used go first
    ttl_hours: float = 168.0  # an entry older than this is never served


@dataclass(frozen=True)
class ProductionSettings:
    """The live application's traces and the monitor_production DAG (ragops.production)."""

    traces: str | None = None  # folder or fsspec URL the traces are written to; null = <data_dir>/traces
    otlp_endpoint: str | None = None  # OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces); null = off
    store_contexts: bool = True  # the retrieved chunks' text goes into the trace (online evaluation reads it)
    max_context_chars: int = 2000  # per chunk in a trace
    max_answer_chars: int = 20000  # a longer answer (or question) is skipped by the loader, with its reason
    max_future_minutes: int = 60  # a trace stamped further ahead than this is skipped (clock skew)
    hash_salt: str = "ragops"  # user and session ids are stored as salted SHA-256 hashes, never in clear
    schedule: str | None = "@hourly"  # monitor_production; null = on demand only
    timezone: str = "UTC"
    sample_rate: float = 0.2  # share of new traces evaluated online (groundedness, citations, safety, judge)
    daily_eval_cap: int = 500  # at most this many evaluated traces per UTC day
    min_per_version: int = 5  # every prompt version in traffic gets at least this many a day (stratified)
    judge: bool = False  # also ask the LLM judge (llm_default) about sampled traces; costs a call each
    window: str = "1d"  # breaches are judged on the traces of this window, ending now
    min_traces: int = 20  # fewer traces (or evaluated ones) in the window: that check is skipped, said why
    alpha: float = 0.01  # one-sided binomial test: the rate exceeds its limit at this significance
    max_hallucination_rate: float = 0.2  # of evaluated answers with an unsupported claim
    max_negative_feedback: float = 0.2  # of traces with feedback, share negative
    max_refusal_rate: float = 0.3
    max_toxicity_rate: float = 0.05  # of evaluated answers the toxicity checker flags (its false alarms: ~1-3%)
    latency_slo_ms: float = 5000.0  # answers slower than this ...
    latency_slo_share: float = 0.05  # ... may be at most this share of the traffic
    daily_budget_usd: float | None = None  # cost of a UTC day (known prices); null = no budget
    worst_traces: int = 5  # listed in the breach e-mail
    reviewed_dir: str | None = None  # reviewed production failures (golden JSONL per index); null = <data_dir>/reviewed
    cache: CacheSettings = CacheSettings()


@dataclass(frozen=True)
class RetrievalSettings:
    """Dense (Chroma), lexical (BM25 over the same chunks, bm25s) or hybrid (reciprocal rank fusion)."""

    mode: str = "hybrid"  # the default of `ragops search`, eval runs and the app; a query may override it
    rrf_k: int = 60  # reciprocal rank fusion constant: score = sum(weight / (rrf_k + rank))
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    candidates: int = 50  # chunks each retriever contributes before fusion
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    stemmer: str = "english"  # PyStemmer language; "" = no stemming
    # a validated rebuild also picks the new version's mode and fusion weights from the index's golden
    # set (ragops.tuning); the choice serves ahead of ``mode`` unless a call or prompt names a mode
    tune_on_rebuild: bool = True
    tune_min_questions: int = 20  # fewer golden questions: keep dense (the simplest mode), said so


@dataclass(frozen=True)
class PromptSettings:
    dir: str = "include/prompts"  # relative paths resolve against the project root
    sync_schedule: str | None = "*/15 * * * *"  # sync_prompts registers new versions; null = CLI only
    gate: str = "default"  # the gates.<profile> promote_prompt applies unless a run picks another
    dataset: str | None = None  # questions for candidate vs production; null = eval.default_dataset
    index: str | None = None  # null = ingest.default_index
    require_approval: bool = False  # a passed gate also waits for a person (Airflow's Required Actions)
    approval_timeout_hours: int = 72  # no answer by then = not promoted
    auto_rollback: bool = True  # nightly_eval rolls production back on a significant post-promotion drop


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    state_db_url: str
    chroma: ChromaSettings = ChromaSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    quality: QualitySettings = QualitySettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()
    eval: EvalSettings = EvalSettings()
    prompts: PromptSettings = PromptSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    rebuild: RebuildSettings = RebuildSettings()
    drift: DriftSettings = DriftSettings()
    production: ProductionSettings = ProductionSettings()
    gates: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_GATES), hash=False)
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    source_file: Path | None = None

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def eval_dir(self) -> Path:
        return Path(self.resolve_path(self.eval.output_dir)) if self.eval.output_dir else self.data_dir / "eval"

    @property
    def drift_dir(self) -> Path:
        return self.data_dir / "drift"

    @property
    def query_log_uri(self) -> str:
        return self.resolve_path(self.drift.query_log) if self.drift.query_log else str(self.data_dir / "querylog")

    @property
    def traces_uri(self) -> str:
        p = self.production.traces
        return self.resolve_path(p) if p else str(self.data_dir / "traces")

    @property
    def reviewed_dir(self) -> Path:
        p = self.production.reviewed_dir
        return Path(self.resolve_path(p)) if p else self.data_dir / "reviewed"

    @property
    def prompts_dir(self) -> Path:
        return Path(self.resolve_path(os.environ.get("RAGOPS_PROMPTS_DIR") or self.prompts.dir))

    def golden_set(self, index: str) -> str | None:
        """The golden questions of ``index`` as configured (``indexes.<index>.golden``; the default
        index falls back to ``eval.default_dataset``); resolve with :meth:`resolve_path`."""
        return (self.indexes.get(index) or {}).get("golden") or (
            self.eval.default_dataset if index == self.ingest.default_index else None)

    def resolve_path(self, value: str) -> str:
        """Resolve a relative local path against the project root; URLs pass through."""
        if "://" in value:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (project_root() / p).resolve())

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class _Key:
    """A settings field as messages name it: ``<file>:<line>: <dotted.field>`` (the line when the
    field, or else its nearest parent, is in the file)."""

    file: str
    doc: YamlDoc | None = None
    keys: tuple[Any, ...] = ()

    def child(self, *names: Any) -> _Key:
        return _Key(self.file, self.doc, (*self.keys, *names))

    @property
    def loc(self) -> str:
        return self.doc.at(*self.keys) if self.doc is not None else self.file

    @property
    def name(self) -> str:
        return dotted(self.keys)

    def __str__(self) -> str:
        return ": ".join(part for part in (self.loc, self.name) if part)


def _unknown(where: _Key, unknown: list[Any], allowed: Any) -> ConfigError:
    """Unknown keys, at the line of the first of them."""
    return ConfigError(f"{where.child(unknown[0]).loc}: {where.name}: unknown key(s) "
                       f"{', '.join(map(str, unknown))}; allowed: {', '.join(sorted(allowed))}")


def _embedding(e: EmbeddingSettings, data_dir: Path) -> EmbeddingSettings:
    """Exports of the model go to ``embedding.cache_dir``, else ``RAGOPS_MODEL_CACHE``, else <data_dir>/models."""
    if e.cache_dir:
        p = Path(e.cache_dir).expanduser()
        cache = p if p.is_absolute() else project_root() / p
    else:
        env = os.environ.get("RAGOPS_MODEL_CACHE")
        cache = Path(env).expanduser() if env else data_dir / "models"
    return dataclasses.replace(e, cache_dir=str(cache.resolve()))


def _coerce(cls: type, raw: Any, where: _Key) -> Any:
    """Build dataclass ``cls`` from a mapping, naming unknown keys and bad types."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise _unknown(where, unknown, fields)
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in raw.items():
        default = getattr(defaults, name)
        key = where.child(name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _coerce(type(default), value, key)
        elif name == "prices":  # model -> {input_per_1m, output_per_1m}
            kwargs[name] = _prices(value, key)
        elif name == "profiles":  # chunking profile name -> overrides of the default profile
            kwargs[name] = _profiles(value, key)
        elif name == "sources" and cls is QualitySettings:  # source prefix -> quality overrides
            kwargs[name] = _quality_sources(value, key)
        elif isinstance(default, dict):  # event type -> list of e-mail addresses
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of event type to a list of addresses")
            out: dict[str, tuple[str, ...]] = {}
            for event, addrs in value.items():
                if event not in (*EVENT_TYPES, "default"):
                    raise ConfigError(f"{key.child(event)}: unknown event type; use one of default, "
                                      f"{', '.join(EVENT_TYPES)}")
                addrs = [addrs] if isinstance(addrs, str) else (addrs or [])
                if not isinstance(addrs, list) or not all(isinstance(a, str) and "@" in a for a in addrs):
                    raise ConfigError(f"{key.child(event)}: expected a list of e-mail addresses, got {brief(addrs)}")
                out[event] = tuple(addrs)
            kwargs[name] = out
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{key}: expected a list of {'numbers' if kind is int else 'strings'}, got {brief(value)}")
            kwargs[name] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false, got {brief(value)}")
            kwargs[name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}: expected a number, got {brief(value)}")
            if value < 0:
                raise ConfigError(f"{key}: must not be negative, got {brief(value)}")
            kwargs[name] = type(default)(value) if isinstance(default, float) else int(value)
        else:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}: expected a string, got {brief(value)}")
            kwargs[name] = value
    return cls(**kwargs)


def _quality_sources(value: Any, key: _Key) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of source URI prefix to quality settings, e.g. "
                          "{'s3://legacy-exports/': {max_bad_char_share: 0.2}}")
    out: dict[str, dict[str, Any]] = {}
    for prefix, overrides in value.items():
        if isinstance(overrides, dict) and "sources" in overrides:
            raise ConfigError(f"{key.child(prefix)}: quality.sources cannot nest")
        _coerce(QualitySettings, overrides, key.child(prefix))  # validates names and types
        out[str(prefix)] = dict(overrides or {})
    return out


def quality_for(q: QualitySettings, source: str) -> QualitySettings:
    """The quality settings for documents of ``source``: the longest matching ``quality.sources`` prefix wins."""
    matches = [p for p in q.sources if source.startswith(p) or source.rstrip("/").startswith(p.rstrip("/"))]
    if not matches:
        return q
    return dataclasses.replace(q, **q.sources[max(matches, key=len)])


def _prices(value: Any, key: _Key) -> dict[str, dict[str, float]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of model name to {{input_per_1m: ..., output_per_1m: ...}}")
    out: dict[str, dict[str, float]] = {}
    for model, p in value.items():
        if not isinstance(p, dict) or set(p) - {"input_per_1m", "output_per_1m", "free"}:
            raise ConfigError(f"{key.child(model)}: expected input_per_1m and output_per_1m (price per million tokens), "
                              "or free: true")
        if "free" in p:  # a local model: no bill, and the cost budget knows it (unknown cost is not zero)
            if p["free"] is not True or len(p) > 1:
                raise ConfigError(f"{key.child(model, 'free')}: expected free: true alone (else give the prices)")
            out[str(model)] = {"input_per_1m": 0.0, "output_per_1m": 0.0, "free": True}
            continue
        for k, v in p.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{key.child(model, k)}: expected a non-negative number, got {brief(v)}")
        out[str(model)] = {k: float(p.get(k, 0.0)) for k in ("input_per_1m", "output_per_1m")}
    return out


def _profiles(value: Any, key: _Key) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of profile name to {{chunk_tokens, overlap_tokens, "
                          "markdown_headers}")
    out: dict[str, dict[str, Any]] = {}
    for name, p in value.items():
        if not isinstance(p, dict) or not p or set(p) - set(PROFILE_KEYS):
            raise ConfigError(f"{key.child(name)}: expected some of {', '.join(PROFILE_KEYS)}, got {brief(p)}")
        for k, v in p.items():
            ok = (isinstance(v, list) and all(isinstance(h, str) for h in v)) if k == "markdown_headers" else \
                (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            if not ok:
                raise ConfigError(f"{key.child(name, k)}: expected "
                                  f"{'a list of strings' if k == 'markdown_headers' else 'a whole number'}, got {brief(v)}")
        out[str(name)] = dict(p)
    return out


def _resolve_profiles(c: ChunkingSettings, where: _Key) -> ChunkingSettings:
    """Every profile fully spelled out (the default's values fill the gaps), then the chosen one applied."""
    base = {k: (list(getattr(c, k)) if k == "markdown_headers" else getattr(c, k)) for k in PROFILE_KEYS}
    if "default" in c.profiles:
        raise ConfigError(f"{where.child('chunking', 'profiles', 'default')}: the default profile is chunking's own "
                          "chunk_tokens/overlap_tokens/markdown_headers; give the profile another name")
    full = {"default": base, **{n: {**base, **p} for n, p in c.profiles.items()}}
    return dataclasses.replace(c, profiles=full).with_profile(c.profile)


DEFAULT_GATES: dict[str, dict[str, Any]] = {"default": {
    "thresholds": {"hit_rate@5": (">=", 0.8), "faithfulness": (">=", 0.8)},
    "non_regression": {"metrics": ["answer_f1", "faithfulness", "answer_similarity", "refusal_accuracy",
                                   "hit_rate@5", "toxicity_rate"], "margin": 0.02},
    "budget": {"latency_p95_ms": 5000.0, "cost_per_1k_usd": 10.0},
    "require_approval": None,
    "free_models": [],  # YAML budget.free_models: models whose unknown cost is zero (local ones)
}}
GATE_KEYS = ("thresholds", "non_regression", "budget", "require_approval", "bias")
BUDGETS = ("latency_p95_ms", "cost_per_1k_usd")


def _gates(value: Any, key: _Key | str) -> dict[str, dict[str, Any]]:
    """Gate profiles: absolute thresholds, non-regression against production, budgets. ``key``
    names them in messages (a dotted name outside a settings file)."""
    if isinstance(key, str):
        key = _Key("", None, (key,))
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{key}: expected a mapping of profile name to {{thresholds, non_regression, budget}}")
    out: dict[str, dict[str, Any]] = {}
    for name, g in value.items():
        at = key.child(name)
        if not isinstance(g, dict) or set(g) - set(GATE_KEYS):
            raise ConfigError(f"{at}: expected some of {', '.join(GATE_KEYS)}, got {brief(g)}")
        thresholds: dict[str, tuple[str, float]] = {}
        if not isinstance(g.get("thresholds") or {}, dict):
            raise ConfigError(f"{at.child('thresholds')}: expected a mapping of metric to a number or '>= 0.8' / '<= 0.1'")
        for metric, rule in (g.get("thresholds") or {}).items():
            m = re.fullmatch(r"\s*(>=|<=)?\s*(-?[0-9]+(?:\.[0-9]+)?|-?\.[0-9]+)\s*", str(rule)) \
                if not isinstance(rule, bool) else None
            if m is None:
                raise ConfigError(f"{at.child('thresholds', metric)}: expected a number or '>= 0.8' / '<= 0.1', "
                                  f"got {brief(rule)}")
            thresholds[str(metric)] = (m.group(1) or "", float(m.group(2)))  # "" = by the metric's direction
        nr = g.get("non_regression") or {}
        if not isinstance(nr, dict) or set(nr) - {"metrics", "margin"} or \
                not isinstance(nr.get("metrics") or [], list) or \
                not all(isinstance(x, str) for x in nr.get("metrics") or []):
            raise ConfigError(f"{at.child('non_regression')}: expected metrics (a list of names) and margin")
        margin = nr.get("margin", 0.02)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
            raise ConfigError(f"{at.child('non_regression', 'margin')}: expected a number between 0 and 1, "
                              f"got {brief(margin)}")
        budget = dict(g.get("budget") or {})
        free = budget.pop("free_models", None) if isinstance(budget, dict) else None
        if free is not None and (not isinstance(free, list) or not all(isinstance(x, str) for x in free)):
            raise ConfigError(f"{at.child('budget', 'free_models')}: expected a list of model names")
        if not isinstance(budget, dict) or set(budget) - set(BUDGETS) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in budget.values()):
            raise ConfigError(f"{at.child('budget')}: expected non-negative numbers for {', '.join(BUDGETS)}, and "
                              "free_models (a list of model names)")
        approval = g.get("require_approval")
        if approval is not None and not isinstance(approval, bool):
            raise ConfigError(f"{at.child('require_approval')}: expected true, false or null (= prompts.require_approval)")
        bias = g.get("bias")
        if bias is True:
            bias = {}
        if bias is not None and bias is not False and (not isinstance(bias, dict) or set(bias) - {
                "attributes", "terms", "limit"} or not isinstance(bias.get("attributes") or [], list)
                or not isinstance(bias.get("limit", 20), int) or isinstance(bias.get("limit", 20), bool)):
            raise ConfigError(f"{at.child('bias')}: expected true, false, or {{attributes: [..], terms: FILE, limit: N}} "
                              "(the counterfactual bias test of `ragops eval bias`, run on candidate and production)")
        out[str(name)] = {"thresholds": thresholds,
                          "non_regression": {"metrics": list(nr.get("metrics") or []), "margin": float(margin)},
                          "budget": {k: float(v) for k, v in budget.items()}, "require_approval": approval,
                          "free_models": list(free or []), "bias": None if bias in (None, False) else dict(bias)}
    return out


def _validate(s: Settings, root: _Key | None = None) -> None:
    """Cross-field and range checks; ``root`` knows the lines of the settings file."""
    root = root or _Key(str(s.source_file or "settings"))

    def at(*keys: str) -> str:
        return root.child(*keys).loc

    if s.chroma.mode not in ("embedded", "server"):
        raise ConfigError(f"{at('chroma', 'mode')}: chroma.mode must be 'embedded' or 'server', "
                          f"got {brief(s.chroma.mode)}")
    if not 0 < s.chroma.target_recall <= 1 or s.chroma.tune_sample < 10 or s.chroma.retune_growth <= 0:
        raise ConfigError(f"{at('chroma', 'target_recall')}: chroma.target_recall must be in (0, 1], "
                          "chroma.tune_sample at least 10 and chroma.retune_growth above 0")
    for name, c in (s.chunking.profiles or {"default": {k: getattr(s.chunking, k) for k in PROFILE_KEYS}}).items():
        keys = ("chunking",) if name == "default" else ("chunking", "profiles", name)
        where = dotted(keys)
        if c["chunk_tokens"] < 16:
            raise ConfigError(f"{at(*keys, 'chunk_tokens')}: {where}.chunk_tokens must be at least 16, "
                              f"got {c['chunk_tokens']}")
        if c["overlap_tokens"] >= c["chunk_tokens"]:
            raise ConfigError(
                f"{at(*keys, 'overlap_tokens')}: {where}.overlap_tokens ({c['overlap_tokens']}) must be smaller than "
                f"{where}.chunk_tokens ({c['chunk_tokens']})"
            )
    for prefix in ("", *s.quality.sources):
        q = quality_for(s.quality, prefix) if prefix else s.quality
        keys = ("quality", "sources", prefix) if prefix else ("quality",)
        for name in ("max_failed_share", "max_duplicate_text_share", "max_delete_share", "max_bad_char_share"):
            v = getattr(q, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"{at(*keys, name)}: {dotted(keys)}.{name} must be between 0 and 1, got {v}")
        if q.toxicity_checker not in ("none", "profanity", "embedding", "combined"):
            raise ConfigError(f"{at(*keys, 'toxicity_checker')}: {dotted(keys)}.toxicity_checker must be none, "
                              f"profanity, embedding or combined, got {brief(q.toxicity_checker)}")
        if q.replacement_chars not in ("keep", "remove"):
            raise ConfigError(f"{at(*keys, 'replacement_chars')}: {dotted(keys)}.replacement_chars must be 'keep' or "
                              f"'remove', got {brief(q.replacement_chars)}")
    if s.ingest.batch_documents < 1:
        raise ConfigError(f"{at('ingest', 'batch_documents')}: ingest.batch_documents must be at least 1")
    if s.embedding.batch_size < 1:
        raise ConfigError(f"{at('embedding', 'batch_size')}: embedding.batch_size must be at least 1")
    for name in s.indexes:
        check_index_name(name)
    if s.indexes and s.ingest.default_index not in s.indexes:
        # the DAGs offer the declared indexes in their trigger forms, with this one as the default:
        # Airflow refuses to load a DAG whose default is not among the choices
        raise ConfigError(f"{at('indexes')}: ingest.default_index is {brief(s.ingest.default_index)} but indexes "
                          f"declares only {', '.join(sorted(s.indexes))}: add it under indexes: or set "
                          "ingest.default_index to one of them")
    r = s.retrieval
    if r.mode not in RETRIEVAL_MODES:
        raise ConfigError(f"{at('retrieval', 'mode')}: retrieval.mode must be one of {', '.join(RETRIEVAL_MODES)}, "
                          f"got {brief(r.mode)}")
    if r.rrf_k < 1 or r.candidates < 1 or r.candidates > 200:
        raise ConfigError(f"{at('retrieval', 'rrf_k' if r.rrf_k < 1 else 'candidates')}: retrieval.rrf_k must be at "
                          "least 1 and retrieval.candidates between 1 and 200")
    if r.tune_min_questions < 2:
        raise ConfigError(f"{at('retrieval', 'tune_min_questions')}: retrieval.tune_min_questions must be at least 2 "
                          "(a paired test needs pairs)")
    if s.prompts.gate not in s.gates:
        raise ConfigError(f"{at('prompts', 'gate')}: prompts.gate is {brief(s.prompts.gate)} but gates defines "
                          f"{', '.join(sorted(s.gates))}")
    if s.rebuild.keep < 1:
        raise ConfigError(f"{at('rebuild', 'keep')}: rebuild.keep must be at least 1 (the live version), "
                          f"got {s.rebuild.keep}")
    _validate_drift(s.drift, root.child("drift"))
    _validate_production(s.production, root.child("production"))
    e = s.eval
    if not e.ks or any(k < 1 or k > 100 for k in e.ks):
        raise ConfigError(f"{at('eval', 'ks')}: eval.ks must be cut-offs between 1 and 100, got {brief(list(e.ks))}")
    for name in ("support_threshold", "regression_margin"):
        if not 0 <= getattr(e, name) <= 1:
            raise ConfigError(f"{at('eval', name)}: eval.{name} must be between 0 and 1, got {getattr(e, name)}")
    if not 0.5 <= e.confidence < 1:
        raise ConfigError(f"{at('eval', 'confidence')}: eval.confidence must be in [0.5, 1), got {e.confidence}")
    if e.judge_runs < 1 or e.baseline_runs < 1 or e.bootstrap_samples < 100:
        bad = "judge_runs" if e.judge_runs < 1 else "baseline_runs" if e.baseline_runs < 1 else "bootstrap_samples"
        raise ConfigError(f"{at('eval', bad)}: eval.judge_runs and eval.baseline_runs must be at least 1, "
                          "eval.bootstrap_samples at least 100")
    if not 1 <= e.samples <= 50:
        raise ConfigError(f"{at('eval', 'samples')}: eval.samples must be between 1 and 50 answers per question, "
                          f"got {e.samples}")
    if e.toxicity_checker not in ("combined", "embedding", "profanity", "none"):
        raise ConfigError(f"{at('eval', 'toxicity_checker')}: eval.toxicity_checker must be combined, embedding, "
                          f"profanity or none, got {brief(e.toxicity_checker)}")


DRIFT_CHECKS = ("corpus", "documents", "queries", "gaps", "quality")
DRIFT_METHODS = ("mmd", "classifier", "centroid")
WINDOW_RE = re.compile(r"^(\d+)\s*(m|h|d|w)$")


def parse_window(value: str, key: str = "window") -> Any:
    """'90m', '12h', '7d', '2w' -> timedelta; anything else names the problem."""
    import datetime as dt

    m = WINDOW_RE.match(str(value).strip().lower())
    if not m or int(m.group(1)) < 1:
        raise ConfigError(f"{key}: expected a duration like 90m, 12h, 7d or 2w, got {brief(value)}")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": dt.timedelta(minutes=n), "h": dt.timedelta(hours=n), "d": dt.timedelta(days=n),
            "w": dt.timedelta(weeks=n)}[unit]


def _validate_drift(d: DriftSettings, where: _Key) -> None:
    def at(name: str) -> str:
        return where.child(name).loc

    bad = sorted(set(d.checks) - set(DRIFT_CHECKS))
    if bad:
        raise ConfigError(f"{at('checks')}: drift.checks has unknown check(s) {', '.join(bad)}; "
                          f"use {', '.join(DRIFT_CHECKS)}")
    bad = sorted(set(d.methods) - set(DRIFT_METHODS))
    if bad or not d.methods:
        raise ConfigError(f"{at('methods')}: drift.methods must be some of {', '.join(DRIFT_METHODS)}, "
                          f"got {brief(list(d.methods))}")
    if not 0 < d.alpha < 0.5:
        raise ConfigError(f"{at('alpha')}: drift.alpha must be between 0 and 0.5, got {d.alpha}")
    if d.sample_size < 50 or d.permutations < 19:
        raise ConfigError(f"{at('sample_size' if d.sample_size < 50 else 'permutations')}: drift.sample_size must be "
                          "at least 50 and drift.permutations at least 19 (a p-value of 0.05 needs 19 resamples), "
                          f"got {d.sample_size} and {d.permutations}")
    for name in ("gap_threshold", "max_gap_share", "cluster_distance", "quarantine_rise", "feedback_rise",
                 "ewma_lambda"):
        if not 0 < getattr(d, name) <= 1:
            raise ConfigError(f"{at(name)}: drift.{name} must be in (0, 1], got {getattr(d, name)}")
    if d.baseline_runs < 3 or d.window_runs < 1 or d.run_length < 2 or d.snapshot_keep < 1:
        bad_key = next(k for k, v, lo in (("baseline_runs", d.baseline_runs, 3), ("window_runs", d.window_runs, 1),
                                          ("run_length", d.run_length, 2), ("snapshot_keep", d.snapshot_keep, 1))
                       if v < lo)
        raise ConfigError(f"{at(bad_key)}: drift.baseline_runs must be at least 3, drift.window_runs and "
                          "drift.snapshot_keep at least 1, drift.run_length at least 2")
    parse_window(d.reference_window, str(where.child("reference_window")))
    parse_window(d.current_window, str(where.child("current_window")))


def check_index_name(name: str) -> str:
    """Index names become Chroma collection names (`<index>__v<N>`), so they are restricted."""
    if not isinstance(name, str) or not INDEX_NAME_RE.match(name) or "__" in name:
        raise UnknownIndexError(
            f"invalid index name {name!r}: use 3-48 characters of a-z, 0-9, '_' or '-', "
            "starting and ending with a letter or digit, without '__'"
        )
    return name


def default_config_path() -> Path:
    return project_root() / "include" / "config" / "ragops.yaml"


def _validate_production(p: ProductionSettings, where: _Key) -> None:
    def at(*keys: str) -> str:
        return where.child(*keys).loc

    for name in ("sample_rate", "max_hallucination_rate", "max_negative_feedback", "max_refusal_rate",
                 "latency_slo_share", "max_toxicity_rate"):
        if not 0 <= getattr(p, name) <= 1:
            raise ConfigError(f"{at(name)}: production.{name} must be between 0 and 1, got {getattr(p, name)}")
    if not 0 < p.alpha <= 0.5:
        raise ConfigError(f"{at('alpha')}: production.alpha must be in (0, 0.5], got {p.alpha}")
    for name in ("daily_eval_cap", "min_per_version", "min_traces", "max_context_chars", "max_answer_chars"):
        if getattr(p, name) < 0:
            raise ConfigError(f"{at(name)}: production.{name} must not be negative, got {getattr(p, name)}")
    if p.latency_slo_ms <= 0 or (p.daily_budget_usd is not None and p.daily_budget_usd < 0):
        bad = "latency_slo_ms" if p.latency_slo_ms <= 0 else "daily_budget_usd"
        raise ConfigError(f"{at(bad)}: production.{bad} must be positive, got {getattr(p, bad)}")
    if not 0 < p.cache.threshold <= 1 or p.cache.max_entries < 1:
        bad = "threshold" if not 0 < p.cache.threshold <= 1 else "max_entries"
        raise ConfigError(f"{at('cache', bad)}: production.cache.threshold must be in (0, 1] and "
                          f"production.cache.max_entries at least 1, got {getattr(p.cache, bad)}")
    parse_window(p.window, at("window"))


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings: defaults < YAML file < RAGOPS_* environment variables < ``overrides``."""
    cfg_path = Path(path or os.environ.get("RAGOPS_CONFIG") or default_config_path())
    raw: dict[str, Any] = {}
    doc: YamlDoc | None = None
    if cfg_path.exists():
        try:
            data = cfg_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{cfg_path}: cannot read settings file: {exc}") from exc
        doc = load_yaml(data, cfg_path, ConfigError)
        if doc.data is not None and not isinstance(doc.data, dict):
            raise ConfigError(f"{cfg_path}: expected a mapping at the top level")
        raw = doc.data or {}
    elif path or os.environ.get("RAGOPS_CONFIG"):
        raise ConfigError(f"settings file {cfg_path} does not exist (set by RAGOPS_CONFIG or --config)")

    where = _Key(str(cfg_path), doc)
    top = {"data_dir", "state_db_url", "chroma", "embedding", "chunking", "quality", "ingest", "alerts", "eval",
           "prompts", "retrieval", "rebuild", "drift", "production", "gates", "indexes"}
    unknown = sorted(set(raw) - top, key=str)
    if unknown:
        raise ConfigError(f"{where.child(unknown[0]).loc}: unknown top-level key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(sorted(top))}")
    for name in ("data_dir", "state_db_url"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ConfigError(f"{where.child(name)}: expected a string, got {brief(raw[name])}")

    data_dir_raw = os.environ.get("RAGOPS_DATA_DIR") or raw.get("data_dir")
    data_dir = Path(data_dir_raw).expanduser() if data_dir_raw else project_root() / ".ragops"
    if not data_dir.is_absolute():
        data_dir = project_root() / data_dir
    state_url = os.environ.get("RAGOPS_STATE_DB_URL") or raw.get("state_db_url") or f"sqlite:///{data_dir / 'state.db'}"

    chroma = _coerce(ChromaSettings, raw.get("chroma"), where.child("chroma"))
    env_mode = os.environ.get("RAGOPS_CHROMA_MODE")
    env_url = os.environ.get("RAGOPS_CHROMA_URL")
    chroma = dataclasses.replace(
        chroma,
        mode=env_mode or ("server" if env_url else chroma.mode),  # a server URL in the env means server mode
        url=env_url or chroma.url,
        token=os.environ.get("RAGOPS_CHROMA_TOKEN") or chroma.token,
    )
    indexes_raw = raw.get("indexes") or {}
    if not isinstance(indexes_raw, dict):
        raise ConfigError(f"{where.child('indexes')}: expected a mapping of index name to options")
    for name, options in indexes_raw.items():
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{where.child('indexes', name)}: expected a mapping of options (e.g. golden: ...), "
                              f"got {brief(options)}")
    settings = Settings(
        data_dir=data_dir.resolve(),
        state_db_url=state_url,
        chroma=chroma,
        embedding=_embedding(_coerce(EmbeddingSettings, raw.get("embedding"), where.child("embedding")), data_dir),
        chunking=_resolve_profiles(_coerce(ChunkingSettings, raw.get("chunking"), where.child("chunking")), where),
        quality=_coerce(QualitySettings, raw.get("quality"), where.child("quality")),
        ingest=_coerce(IngestSettings, raw.get("ingest"), where.child("ingest")),
        alerts=_coerce(AlertSettings, raw.get("alerts"), where.child("alerts")),
        eval=_coerce(EvalSettings, raw.get("eval"), where.child("eval")),
        prompts=_coerce(PromptSettings, raw.get("prompts"), where.child("prompts")),
        retrieval=_coerce(RetrievalSettings, raw.get("retrieval"), where.child("retrieval")),
        rebuild=_coerce(RebuildSettings, raw.get("rebuild"), where.child("rebuild")),
        drift=_coerce(DriftSettings, raw.get("drift"), where.child("drift")),
        production=_coerce(ProductionSettings, raw.get("production"), where.child("production")),
        gates=_gates(raw["gates"], where.child("gates")) if raw.get("gates") is not None else dict(DEFAULT_GATES),
        indexes={k: dict(v or {}) for k, v in indexes_raw.items()},
        source_file=cfg_path if cfg_path.exists() else None,
    )
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    _validate(settings, where)
    return settings


def settings_fingerprint(*parts: Any) -> str:
    """Stable short hash of settings objects; goes into chunk ids."""
    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [plain(o) for o in obj]
        return obj

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
