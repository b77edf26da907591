"""Load trace files into the state store: incremental, idempotent, and loud about bad lines.

Each file has a watermark (``trace_sources``): the bytes of it already loaded, always ending at a
line break, so a partial last line (a writer still writing, or killed mid-line) waits for the next
load. Every row is keyed by its trace id (feedback: its feedback id), so a file read twice, a
watermark lost, or two loads racing never count a trace twice. Feedback that arrives before its
trace is kept and joined when the trace comes. Bad rows are skipped and counted by reason
(with examples); nothing already loaded is touched. Old query-log files (``drift.query_log``:
``timestamp, query, index?, feedback?, answer?``) load too, each row keyed by its content.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from ragops import state
from ragops.config import Settings
from ragops.drift.querylog import parse_feedback, parse_time
from ragops.production.aggregate import bucket_of

log = logging.getLogger(__name__)
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
BATCH_LINES = 5000
READ_BYTES = 8 << 20
EXAMPLES = 3


@dataclass
class LoadResult:
    files: int = 0
    lines: int = 0
    traces: int = 0  # new traces stored
    duplicates: int = 0  # rows whose trace (or feedback) id was already stored
    feedback: int = 0  # new feedback rows
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES:
            ex.append(where)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "lines": self.lines, "traces": self.traces, "duplicates": self.duplicates,
                "feedback": self.feedback, "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
                "examples": self.examples, "seconds": round(self.seconds, 3)}


class _Bad(ValueError):
    """A row that cannot be loaded; the message is the reason's name."""


def _time(value: Any) -> dt.datetime:
    """The query log's reading of a time (ISO 8601, Unix seconds, a Parquet timestamp)."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _Bad("timestamp not a time") from exc


def _int(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{name} not a number")
    if value < 0:
        raise _Bad("negative token count")
    return int(value)


def _num(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _Bad(f"{name} not a non-negative number")
    return float(value)


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{name} not an integer")
    return value


def _legacy_feedback(value: Any) -> float | None:
    try:
        return parse_feedback(value)
    except ValueError as exc:
        raise _Bad("feedback not a score") from exc


class _Rules:
    def __init__(self, settings: Settings, now: dt.datetime) -> None:
        p = settings.production
        from ragops.production.app import cost_of  # prices: ragops.evaluation, imported once per load

        self.settings = settings
        self.cost_of = cost_of
        self.max_chars = p.max_answer_chars
        self.latest = now + dt.timedelta(minutes=p.max_future_minutes)
        with state.session_scope(settings.state_db_url) as s:
            self.prompts = {(n, v) for n, v in s.execute(select(state.PromptVersion.name,
                                                                state.PromptVersion.version))}

    def when(self, value: Any) -> dt.datetime:
        ts = _time(value)
        if ts > self.latest:
            raise _Bad("timestamp in the future")
        return ts.astimezone(dt.UTC)

    def text(self, value: Any, name: str, required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise _Bad(f"{name} missing" if value is None or value == "" else f"{name} not text")
        if len(value) > self.max_chars:
            raise _Bad(f"{name} too long")
        return value

    def trace(self, row: dict[str, Any], source: str) -> dict[str, Any]:
        a = row.get("attributes")
        if not isinstance(a, dict):
            raise _Bad("attributes not an object")
        tid = row.get("trace_id")
        if not isinstance(tid, str) or not 8 <= len(tid) <= 64:
            raise _Bad("trace_id missing")
        ts = self.when(row.get("timestamp"))
        pname, pver = a.get("ragops.prompt.name"), _opt_int(a.get("ragops.prompt.version"), "prompt version")
        if pname is not None and pver is not None and (pname, pver) not in self.prompts:
            raise _Bad("unknown prompt version")
        latency = _num(a.get("ragops.latency.total_ms"), "latency")
        model, served = a.get("gen_ai.request.model"), a.get("gen_ai.response.model")
        tin, tout = _int(a.get("gen_ai.usage.input_tokens"), "tokens"), _int(a.get("gen_ai.usage.output_tokens"), "tokens")
        cost = _num(a.get("ragops.cost_usd"), "cost")
        if cost is None and model and not a.get("ragops.error"):  # priced here when the app did not
            cost = self.cost_of(self.settings, str(model), str(served or model), tin, tout)
        chunks = a.get("ragops.retrieval.chunks") or []
        if not isinstance(chunks, list):
            raise _Bad("chunks not a list")
        return {"trace_id": tid, "ts": ts, "hour": ts.replace(minute=0, second=0, microsecond=0),
                "index_name": row.get("index") or a.get("gen_ai.data_source.id"),
                "index_version": _opt_int(a.get("ragops.index.version"), "index version"),
                "prompt_name": pname, "prompt_version": pver, "model": model, "served_model": served,
                "retrieval_mode": a.get("ragops.retrieval.mode"),
                "question": self.text(row.get("query"), "question", True),
                "answer": self.text(row.get("answer"), "answer", False),
                "refused": int(bool(a.get("ragops.refused"))), "error": (str(a["ragops.error"])[:2000]
                                                                       if a.get("ragops.error") else None),
                "tokens_in": tin, "tokens_out": tout, "latency_ms": latency, "latency_bucket": bucket_of(latency),
                "retrieval_ms": _num(a.get("ragops.latency.retrieval_ms"), "latency"),
                "generation_ms": _num(a.get("ragops.latency.generation_ms"), "latency"),
                "cost_usd": cost, "cache_hit": int(bool(a.get("ragops.cache.hit"))),
                "saved_tokens": _int(a.get("ragops.cache.saved_tokens"), "tokens"),
                "saved_usd": _num(a.get("ragops.cache.saved_usd"), "cost") or 0.0,
                "user_hash": a.get("ragops.user.hash"), "session_hash": a.get("gen_ai.conversation.id"),
                "chunks": chunks, "feedback": None, "feedback_comment": None, "source": source}

    def legacy(self, row: dict[str, Any], source: str) -> tuple[dict[str, Any], float | None]:
        ts = self.when(row.get("timestamp"))
        q = self.text(row.get("query"), "question", True)
        fb = _legacy_feedback(row.get("feedback"))
        answer = row.get("answer") if isinstance(row.get("answer"), str) else None
        key = json.dumps([ts.isoformat(), q, row.get("index"), answer], ensure_ascii=False)
        tid = "log-" + hashlib.sha256(key.encode()).hexdigest()[:28]
        return ({"trace_id": tid, "ts": ts, "hour": ts.replace(minute=0, second=0, microsecond=0),
                 "index_name": row.get("index") if isinstance(row.get("index"), str) else None,
                 "index_version": None, "prompt_name": None, "prompt_version": None, "model": None,
                 "served_model": None, "retrieval_mode": None, "question": q,
                 "answer": self.text(answer, "answer", False), "refused": 0, "error": None, "tokens_in": 0,
                 "tokens_out": 0, "latency_ms": None, "latency_bucket": None, "retrieval_ms": None,
                 "generation_ms": None, "cost_usd": None, "cache_hit": 0, "saved_tokens": 0, "saved_usd": 0.0, "user_hash": None, "session_hash": None,
                 "chunks": [], "feedback": fb, "feedback_comment": None, "source": source}, fb)

    def feedback(self, row: dict[str, Any]) -> dict[str, Any]:
        tid, fid = row.get("trace_id"), row.get("feedback_id")
        if not isinstance(tid, str) or not tid or len(tid) > 64:
            raise _Bad("trace_id missing")
        if not isinstance(fid, str) or not fid or len(fid) > 64:
            raise _Bad("feedback_id missing")
        score = row.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise _Bad("feedback not a score")
        comment = row.get("comment")
        return {"feedback_id": fid, "trace_id": tid, "ts": self.when(row.get("timestamp")), "score": float(score),
                "comment": comment[:2000] if isinstance(comment, str) else None}


def _files(uri: str) -> tuple[Any, list[str]]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return fs, []
    if fs.isfile(path):
        return fs, [path] if path.endswith(SUFFIXES) else []
    return fs, sorted(p for p in fs.find(path) if p.endswith(SUFFIXES) and "/." not in p[len(path):])


def _line_blocks(fs: Any, path: str, offset: int) -> Iterator[tuple[list[bytes], int]]:
    """(whole lines, byte offset after them) from ``offset``; a trailing partial line is left."""
    with fs.open(path, "rb") as fh:
        fh.seek(offset)
        start, rest = offset, b""  # start: the file offset where ``rest`` begins
        while True:
            block = fh.read(READ_BYTES)
            if not block:
                return
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            lines, rest = data[:cut].split(b"\n"), data[cut + 1:]
            start += cut + 1
            yield lines, start


def _whole_rows(fs: Any, path: str) -> Iterator[tuple[int, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            for i, row in enumerate(pq.read_table(fh).to_pylist(), start=1):
                yield i, row
        return
    with fs.open(path, "rb") as raw, gzip.open(raw) as fh:
        for i, line in enumerate(fh, start=1):
            yield i, line


def _store(settings: Settings, traces: list[dict[str, Any]], feedbacks: list[dict[str, Any]], res: LoadResult,
           watermark: dict[str, Any] | None) -> None:
    """Insert what is new (by id), join feedback, move the watermark: one transaction."""
    with state.session_scope(settings.state_db_url) as s:
        by_id = {t["trace_id"]: t for t in traces}
        have: set[str] = set()
        ids = list(by_id)
        for i in range(0, len(ids), 500):
            have.update(s.execute(select(state.Trace.trace_id).where(state.Trace.trace_id.in_(ids[i:i + 500])))
                        .scalars())
        new = [t for tid, t in by_id.items() if tid not in have]
        res.duplicates += len(traces) - len(new)
        fb_by_id = {f["feedback_id"]: f for f in feedbacks}
        fids = list(fb_by_id)
        have_fb: set[str] = set()
        for i in range(0, len(fids), 500):
            have_fb.update(s.execute(select(state.TraceFeedback.feedback_id)
                                     .where(state.TraceFeedback.feedback_id.in_(fids[i:i + 500]))).scalars())
        new_fb = [f for fid, f in fb_by_id.items() if fid not in have_fb]
        res.duplicates += len(feedbacks) - len(new_fb)
        if new_fb:  # render_nulls: one executemany, not one INSERT per pattern of None values
            s.execute(insert(state.TraceFeedback).execution_options(render_nulls=True), new_fb)
        # the latest feedback of every trace this batch touches (new traces may have early feedback)
        touched = sorted({f["trace_id"] for f in new_fb} | {t["trace_id"] for t in new if t["feedback"] is None})
        latest: dict[str, tuple[dt.datetime, float, str | None]] = {}
        for i in range(0, len(touched), 500):
            for tid, ts, score, comment in s.execute(select(
                    state.TraceFeedback.trace_id, state.TraceFeedback.ts, state.TraceFeedback.score,
                    state.TraceFeedback.comment).where(state.TraceFeedback.trace_id.in_(touched[i:i + 500]))):
                ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
                if tid not in latest or ts >= latest[tid][0]:
                    latest[tid] = (ts, score, comment)
        for t in new:
            if t["trace_id"] in latest:
                t["feedback"], t["feedback_comment"] = latest[t["trace_id"]][1], latest[t["trace_id"]][2]
        if new:
            s.execute(insert(state.Trace).execution_options(render_nulls=True), new)
        new_ids = {t["trace_id"] for t in new}
        for tid, (_ts, score, comment) in latest.items():
            if tid not in new_ids:
                s.execute(update(state.Trace).where(state.Trace.trace_id == tid)
                          .values(feedback=score, feedback_comment=comment))
        res.traces += len(new)
        res.feedback += len(new_fb)
        if watermark is not None:
            src = s.get(state.TraceSource, watermark["path"])
            if src is None:
                src = state.TraceSource(path=watermark["path"], offset=0, size=0, lines=0, skipped=0)
                s.add(src)
            src.offset, src.size = watermark["offset"], watermark["size"]
            src.lines = (src.lines or 0) + watermark["lines"]
            src.skipped = (src.skipped or 0) + watermark["skipped"]
            src.updated_at = dt.datetime.now(dt.UTC)


def _parse(rules: _Rules, raw: Any, where: str, source: str, traces: list[dict[str, Any]],
           feedbacks: list[dict[str, Any]], res: LoadResult) -> bool:
    """Sort one row into traces / feedbacks; False (and counted) when skipped."""
    try:
        row = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    except (json.JSONDecodeError, UnicodeDecodeError):
        res.skip("not JSON", where)
        return False
    if not isinstance(row, dict):
        res.skip("not a JSON object", where)
        return False
    try:
        if row.get("kind") == "feedback":
            feedbacks.append(rules.feedback(row))
        elif "attributes" in row or "trace_id" in row:
            traces.append(rules.trace(row, source))
        else:
            traces.append(rules.legacy(row, source)[0])
    except _Bad as exc:
        res.skip(str(exc), where)
        return False
    return True


def load(settings: Settings, *, uris: list[str] | None = None, now: dt.datetime | None = None) -> LoadResult:
    """Load what is new in the trace files (and old query-log files) into the state store."""
    state.require_schema(settings.state_db_url)
    t0 = time.perf_counter()
    rules = _Rules(settings, now or dt.datetime.now(dt.UTC))
    res = LoadResult()
    for uri in uris or list(dict.fromkeys([settings.traces_uri, settings.query_log_uri])):
        fs, files = _files(uri)
        for path in files:
            res.files += 1
            key = f"{fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol}://{path}"
            size = int(fs.size(path) or 0)
            with state.session_scope(settings.state_db_url) as s:
                src = s.get(state.TraceSource, key)
                offset, seen = (src.offset, src.size) if src else (0, -1)
            if path.endswith(".jsonl"):
                if size < offset:  # truncated or replaced: read again from the start (ids keep it idempotent)
                    log.warning("trace file %s shrank from %d to %d bytes: reading it again", path, offset, size)
                    offset = 0
                if size == offset:
                    continue
                line_no = 0
                for lines, pos in _line_blocks(fs, path, offset):
                    for i in range(0, len(lines), BATCH_LINES):
                        part = lines[i:i + BATCH_LINES]
                        traces: list[dict[str, Any]] = []
                        feedbacks: list[dict[str, Any]] = []
                        bad = 0
                        for line in part:
                            line_no += 1
                            if not line.strip():
                                continue
                            res.lines += 1
                            bad += not _parse(rules, line, f"{path} line +{line_no}", key, traces, feedbacks, res)
                        last = i + BATCH_LINES >= len(lines)
                        _store(settings, traces, feedbacks, res, {"path": key, "offset": pos if last else offset,
                                                                  "size": size, "lines": len(part), "skipped": bad})
                    offset = pos
            else:  # gzip and Parquet files are written whole: loaded once, again only if they change
                if size == seen:
                    continue
                traces, feedbacks, bad, n = [], [], 0, 0
                for i, raw in _whole_rows(fs, path):
                    n += 1
                    res.lines += 1
                    bad += not _parse(rules, raw, f"{path} row {i}", key, traces, feedbacks, res)
                _store(settings, traces, feedbacks, res, {"path": key, "offset": size, "size": size, "lines": n,
                                                          "skipped": bad})
    res.seconds = time.perf_counter() - t0
    if res.skipped:
        log.warning("trace load: skipped %d row(s): %s", sum(res.skipped.values()),
                    "; ".join(f"{r} x{n} (e.g. {res.examples[r][0]})" for r, n in res.skipped.most_common()))
    log.info("trace load: %d file(s), %d line(s), %d new trace(s), %d feedback, %d duplicate(s) in %.1fs",
             res.files, res.lines, res.traces, res.feedback, res.duplicates, res.seconds)
    return res
