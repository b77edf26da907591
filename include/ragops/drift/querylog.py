"""The query log: what users asked the RAG application, read for query drift and knowledge gaps.

Schema (one JSON object per line in ``*.jsonl`` / ``*.jsonl.gz``, or columns of ``*.parquet``):

- ``timestamp`` (required): ISO 8601 (``2026-11-22T08:15:00Z``; no offset = UTC) or Unix seconds;
- ``query`` (required): the user's question, a non-empty string;
- ``index`` (optional): the index that answered; rows for other indexes are ignored;
- ``feedback`` (optional): the user's verdict: a number (> 0 good, < 0 bad, 0 neutral) or
  ``true``/``false`` or ``"up"``/``"down"``;
- ``answer`` (optional): the answer given; any other field is ignored.

The URI (``drift.query_log``) is a file, a folder (every matching file under it) or any fsspec
URL. :func:`append` writes this schema for applications that want ragops to keep their log.
The live application's traces (``ragops.tracing``, ``production.traces``) carry the same fields
and are read too, with their feedback lines joined by trace id.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ragops.config import Settings
from ragops.errors import DriftError

log = logging.getLogger(__name__)
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
MAX_EXAMPLES = 5


@dataclass
class Query:
    at: dt.datetime
    text: str
    feedback: float | None = None
    answer: str | None = None


@dataclass
class LogRead:
    """Queries of one read, and what was wrong with the rows that were skipped."""

    queries: list[Query] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)

    def bad(self, where: str, why: str) -> None:
        self.invalid += 1
        if len(self.problems) < MAX_EXAMPLES:
            self.problems.append(f"{where}: {why}")


def parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            ts = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp {value!r} is not a Unix time in range") from exc
    elif isinstance(value, str) and value.strip():
        try:
            ts = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"timestamp {value!r} is not ISO 8601 (e.g. 2026-11-22T08:15:00Z) or Unix seconds") from exc
    else:
        raise ValueError(f"timestamp missing or not a time: {value!r}")
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def parse_feedback(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else -1.0
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"feedback {value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        table = {"up": 1.0, "good": 1.0, "positive": 1.0, "down": -1.0, "bad": -1.0, "negative": -1.0,
                 "neutral": 0.0, "": None}
        if word in table:
            return table[word]
        try:
            number = float(word)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ValueError(f"feedback {value!r} is not a number, true/false or up/down")


def _files(uri: str) -> tuple[Any, list[str]]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise DriftError(f"query log {uri!r}: cannot open ({exc}); set drift.query_log to a file, folder or "
                         "fsspec URL") from exc
    if not fs.exists(path):
        return fs, []
    if fs.isfile(path):
        if not path.endswith(SUFFIXES):
            raise DriftError(f"query log {uri!r}: unsupported file type; use {', '.join(SUFFIXES)}")
        return fs, [path]
    found = sorted(p for p in fs.find(path) if p.endswith(SUFFIXES) and "/." not in p[len(path):])
    return fs, found


def _rows(fs: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row; a row that is not a JSON object comes through as its error."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            try:
                table = pq.read_table(fh)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
                raise DriftError(f"query log file {path}: not a readable Parquet file ({exc})") from exc
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path} row {i}", row
        return
    with fs.open(path, "rb") as raw:
        stream = gzip.open(raw) if path.endswith(".gz") else raw
        try:
            for i, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"), start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path} line {i}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{path} line {i}", ValueError(f"not JSON ({exc.msg})")
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DriftError(f"query log file {path}: not a readable gzip file ({exc}); re-write or remove it") from exc


def read(settings: Settings, start: dt.datetime, end: dt.datetime, index: str | None = None,
         uri: str | None = None) -> LogRead:
    """Queries with ``start <= timestamp < end`` (for ``index``, or with no index field).
    Without ``uri``: the query log (``drift.query_log``) and the live application's traces
    (``production.traces``), so drift reads what the application recorded (one source of truth).
    Trace feedback lines (``kind: feedback``) give their trace's query its latest feedback.
    Invalid rows are skipped and counted with examples; a log where nothing is readable fails."""
    uris = [uri] if uri else list(dict.fromkeys([settings.query_log_uri, settings.traces_uri]))
    out = LogRead()
    by_trace: dict[str, Query] = {}
    late: dict[str, tuple[str, float]] = {}  # trace id -> (timestamp, score) of its latest feedback
    for u in uris:
        fs, files = _files(u)
        out.files.extend(files)
        for path in files:
            for where, row in _rows(fs, path):
                out.rows += 1
                if isinstance(row, Exception):
                    out.bad(where, str(row))
                    continue
                if not isinstance(row, dict):
                    out.bad(where, "not a JSON object")
                    continue
                if row.get("kind") == "feedback":  # a trace's feedback, joined below
                    tid, score = row.get("trace_id"), row.get("score")
                    if isinstance(tid, str) and isinstance(score, (int, float)) and not isinstance(score, bool):
                        stamp = str(row.get("timestamp") or "")
                        if tid not in late or stamp >= late[tid][0]:
                            late[tid] = (stamp, float(score))
                    else:
                        out.bad(where, "feedback line without trace_id or numeric score")
                    continue
                text = row.get("query")
                if not isinstance(text, str) or not text.strip():
                    out.bad(where, "field 'query' missing or empty")
                    continue
                try:
                    at = parse_time(row.get("timestamp"))
                    fb = parse_feedback(row.get("feedback"))
                except ValueError as exc:
                    out.bad(where, str(exc))
                    continue
                if index and row.get("index") not in (None, "", index):
                    continue
                if start <= at < end:
                    answer = row.get("answer")
                    q = Query(at=at, text=text.strip(), feedback=fb, answer=answer if isinstance(answer, str) else None)
                    out.queries.append(q)
                    if isinstance(row.get("trace_id"), str):
                        by_trace[row["trace_id"]] = q
    for tid, (_stamp, score) in late.items():
        if tid in by_trace:
            by_trace[tid].feedback = score
    where_ = " and ".join(uris)
    if out.rows and out.invalid == out.rows:
        raise DriftError(f"query log {where_}: none of its {out.rows} rows is valid, e.g. {out.problems[0]}. "
                         "Each row needs 'timestamp' (ISO 8601 or Unix seconds) and 'query' (see docs/drift.md)")
    if out.invalid:
        log.warning("query log %s: skipped %d of %d rows, e.g. %s", where_, out.invalid, out.rows, out.problems[0])
    out.queries.sort(key=lambda q: q.at)
    return out


def append(settings: Settings, queries: Iterable[dict[str, Any]], uri: str | None = None) -> str:
    """Append queries to ``<log>/queries-YYYY-MM-DD.jsonl`` (one file per UTC day of writing).
    Each dict needs ``query``; ``timestamp`` defaults to now. Needs a filesystem that can append
    (local disk, NFS; not object stores: there, write one file per batch with your own writer)."""
    import fsspec

    base = (uri or settings.query_log_uri).rstrip("/")
    now = dt.datetime.now(dt.UTC)
    rows = []
    for q in queries:
        if not isinstance(q.get("query"), str) or not q["query"].strip():
            raise DriftError(f"query log entry without a 'query' string: {q!r}")
        try:
            at = parse_time(q.get("timestamp") or now)
            parse_feedback(q.get("feedback"))
        except ValueError as exc:
            raise DriftError(f"query log entry {q!r}: {exc}") from exc
        rows.append(json.dumps({**q, "timestamp": at.isoformat()}, ensure_ascii=False))
    # drift.query_log may name one file (append to it) or a folder (one file per day)
    path = base if base.endswith(".jsonl") else f"{base}/queries-{now:%Y-%m-%d}.jsonl"
    fs, p = fsspec.core.url_to_fs(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "a", encoding="utf-8") as fh:
        fh.write("".join(r + "\n" for r in rows))
    return path
