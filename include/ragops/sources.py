"""Discover the documents behind a source URI: a local directory, a single file, a JSONL or
Parquet record file, or any fsspec URL (s3://, gs://, memory://, file://...).

Discovery reads and hashes content but does not parse it: parsing and embedding happen in the
mapped batch tasks. Anything unusable is reported as a :class:`Problem` (quarantined), never
dropped silently, and problems protect already-indexed documents from deletion.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ragops.config import RecordSettings, Settings
from ragops.errors import SourceError, SourceUnreachableError, brief

log = logging.getLogger(__name__)

FILE_FORMATS = {".md": "md", ".markdown": "md", ".txt": "txt", ".rst": "rst", ".html": "html", ".htm": "html",
                ".pdf": "pdf", ".docx": "docx"}
RECORD_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass
class SourceDoc:
    """A document found in a source. ``record`` is set for documents from record files."""

    doc_id: str
    uri: str
    fmt: str
    content_hash: str
    size: int
    origin: str  # the file the document came from (protects it from deletion on problems)
    record: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Problem:
    """Something in the source that cannot be indexed; becomes a quarantine entry."""

    doc_id: str
    reason: str
    detail: str
    origin: str
    stage: str = "source"


@dataclass
class Skipped:
    """A file of a directory that is not read: a type ragops has no reader for, or a type it
    reads that ``ingest.include`` leaves out. Counted and listed, never silently ignored."""

    path: str
    reason: str


@dataclass
class Discovery:
    source_id: str
    docs: list[SourceDoc] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # files in which something went wrong: documents that came from them are not deleted
    protected_origins: set[str] = field(default_factory=set)
    skipped: list[Skipped] = field(default_factory=list)


@lru_cache(maxsize=64)
def _glob_re(pattern: str) -> re.Pattern[str]:
    """Translate a glob with ``**`` into a regex over POSIX relative paths (a newline in a name is
    just a character: DOTALL, or such a file would match no pattern and vanish unreported)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(rel: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(_glob_re(p).match(rel) for p in patterns)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_source(uri: str, settings: Settings, fs: fsspec.AbstractFileSystem | None = None,
                   storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """Return (filesystem, path on it, stable source id) or raise a SourceError with the fix."""
    if not uri or not str(uri).strip():
        raise SourceError("empty source: pass a directory, a .jsonl/.parquet file or an fsspec URL")
    uri = str(uri).strip()
    if fs is None:
        target = settings.resolve_path(uri)
        try:
            fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise SourceError(
                f"cannot open source {uri!r}: {exc}. Install the fsspec implementation for this "
                "scheme (e.g. s3fs, gcsfs); in the DAG, name its Airflow Connection in the source_conn_id Param"
            ) from exc
    else:
        path = fs._strip_protocol(uri)  # noqa: SLF001 - fsspec's own normaliser
    try:
        exists = fs.exists(path)
    except OSError as exc:
        raise SourceUnreachableError(f"cannot reach source {uri!r}: {exc}; retrying may help") from exc
    if not exists:
        raise SourceError(
            f"source {uri!r} does not exist (resolved to {path!r}); check the path, the mount or "
            "the bucket, and that relative paths are relative to the project root"
        )
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if isinstance(fs, LocalFileSystem):
        source_id = "file://" + os.path.realpath(path)
    else:
        source_id = f"{protocol}://{path.lstrip('/')}" if protocol != "memory" else f"memory://{path}"
    return fs, path, source_id


def discover(uri: str, settings: Settings, fs: fsspec.AbstractFileSystem | None = None,
             storage_options: dict[str, Any] | None = None) -> Discovery:
    """Walk a source and return its documents (hashed) and the problems found on the way."""
    fs, root, source_id = resolve_source(uri, settings, fs, storage_options)
    disc = Discovery(source_id=source_id)
    seen: dict[str, str] = {}
    if fs.isdir(root):
        files = _walk(fs, root, settings, disc)
        for rel, full in files:
            _read_entry(fs, full, rel, settings, disc, seen, in_directory=True)
    else:
        ext = posixpath.splitext(root)[1].lower()
        if ext not in RECORD_FORMATS and ext not in FILE_FORMATS:
            raise SourceError(
                f"source {uri!r} is a file of unsupported type {ext or '(none)'}: supported are "
                f"{', '.join(sorted({**FILE_FORMATS, **RECORD_FORMATS}))} or a directory"
            )
        _read_entry(fs, root, posixpath.basename(root), settings, disc, seen, in_directory=False)
    log.info("discovered %d documents and %d problems in %s; skipped %d files", len(disc.docs), len(disc.problems),
             source_id, len(disc.skipped))
    return disc


def _walk(fs: fsspec.AbstractFileSystem, root: str, settings: Settings, disc: Discovery) -> list[tuple[str, str]]:
    inc, exc = settings.ingest.include, settings.ingest.exclude
    local = isinstance(fs, LocalFileSystem)
    real_root = os.path.realpath(root) if local else root
    out: list[tuple[str, str]] = []
    if local:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                if matches(rel, exc):
                    continue
                if not matches(rel, inc):
                    if not os.path.isdir(full):
                        _skip(disc, rel)
                    continue
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    if os.path.commonpath([target, real_root]) != real_root:
                        disc.problems.append(Problem(rel, "symlink_outside_root",
                                                     f"{rel} is a symlink to {target}, outside the source root "
                                                     f"{real_root}; copy the file into the source or remove the link", rel))
                        disc.protected_origins.add(rel)
                        continue
                    if os.path.isdir(full):
                        continue  # linked directories are not followed (loops, double counting)
                out.append((rel, full))
    else:
        for full in sorted(fs.find(root)):
            rel = posixpath.relpath(full, root.rstrip("/")) if full != root else posixpath.basename(full)
            if matches(rel, exc):
                continue
            if matches(rel, inc):
                out.append((rel, full))
            else:
                _skip(disc, rel)
    return out


def _skip(disc: Discovery, rel: str) -> None:
    ext = posixpath.splitext(rel)[1].lower()
    if ext in FILE_FORMATS or ext in RECORD_FORMATS:
        reason = "not matched by ingest.include"
    else:
        reason = f"unsupported type {ext or '(no extension)'}"
    disc.skipped.append(Skipped(rel, reason))


def _add(disc: Discovery, seen: dict[str, str], doc: SourceDoc) -> None:
    if doc.doc_id in seen:
        disc.problems.append(Problem(doc.doc_id, "duplicate_id",
                                     f"id {doc.doc_id!r} at {doc.uri} was already used at {seen[doc.doc_id]}; "
                                     "the first occurrence is indexed, give each record a unique id", doc.origin))
        disc.protected_origins.add(doc.origin)
        return
    seen[doc.doc_id] = doc.uri
    disc.docs.append(doc)


def _read_entry(fs: fsspec.AbstractFileSystem, full: str, rel: str, settings: Settings, disc: Discovery,
                seen: dict[str, str], in_directory: bool) -> None:
    ext = posixpath.splitext(full)[1].lower()
    limit = settings.quality.max_document_bytes
    try:
        size = int(fs.size(full) or 0)
    except OSError as exc:
        _unreadable(disc, rel, exc)
        return
    if ext in RECORD_FORMATS:
        prefix = f"{rel}#" if in_directory else ""
        try:
            if ext == ".jsonl":
                _read_jsonl(fs, full, rel, prefix, settings.ingest.records, limit, disc, seen)
            else:
                _read_parquet(fs, full, rel, prefix, settings.ingest.records, limit, disc, seen)
        except OSError as exc:
            _unreadable(disc, rel, exc)
        return
    if size > limit:
        disc.problems.append(Problem(rel, "too_large",
                                     f"{rel} is {size:,} bytes, above quality.max_document_bytes={limit:,}; "
                                     "split the file or raise the limit", rel))
        disc.protected_origins.add(rel)
        return
    try:
        with fs.open(full, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        _unreadable(disc, rel, exc)
        return
    _add(disc, seen, SourceDoc(doc_id=rel, uri=rel, fmt=FILE_FORMATS.get(ext, "txt"), content_hash=sha256(data),
                               size=len(data), origin=rel))


def _unreadable(disc: Discovery, rel: str, exc: BaseException) -> None:
    disc.problems.append(Problem(rel, "unreadable", f"{rel} cannot be read: {exc.__class__.__name__}: {exc}", rel))
    disc.protected_origins.add(rel)


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    for n in names:
        if n in record and record[n] is not None and record[n] != "":
            return n, record[n]
    return None, None


def record_to_doc(record: Any, where: str, rel: str, prefix: str, rs: RecordSettings,
                  disc: Discovery, seen: dict[str, str], limit: int) -> None:
    """Map one JSON/Parquet record onto a document, or report why it cannot be one."""
    if not isinstance(record, dict):
        disc.problems.append(Problem(where, "malformed_record", f"{where}: expected a JSON object, got "
                                     f"{type(record).__name__}", rel))
        disc.protected_origins.add(rel)
        return
    id_key, rid = _pick(record, rs.id_field)
    if rid is None or isinstance(rid, (dict, list)):
        disc.problems.append(Problem(where, "missing_id", f"{where}: no id in fields {list(rs.id_field)}; set "
                                     "ingest.records.id_field to the record's id field", rel))
        disc.protected_origins.add(rel)
        return
    doc_id = f"{prefix}{rid}"
    if not _encodable(doc_id):
        _surrogates(disc, where, rel, where, "id")
        return
    text_key, text = _pick(record, rs.text_field)
    title_key, title = _pick(record, rs.title_field)
    if text is None or not isinstance(text, str) or not text.strip():
        disc.problems.append(Problem(doc_id, "missing_text", f"{where}: record {brief(rid)} has no text in fields "
                                     f"{list(rs.text_field)}; set ingest.records.text_field", rel))
        disc.protected_origins.add(rel)
        return
    used = {id_key, text_key, title_key}
    if rs.metadata_fields:
        meta = {k: record.get(k) for k in rs.metadata_fields if k in record}
    else:
        meta = {k: v for k, v in record.items() if k not in used}
    meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}  # what Chroma stores
    body = {"title": str(title) if title is not None else None, "text": text, "metadata": meta}
    try:
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        _surrogates(disc, doc_id, rel, where, f"record {brief(rid)}")
        return
    if len(blob) > limit:
        disc.problems.append(Problem(doc_id, "too_large", f"{where}: record {brief(rid)} is {len(blob):,} bytes, above "
                                     f"quality.max_document_bytes={limit:,}", rel))
        disc.protected_origins.add(rel)
        return
    _add(disc, seen, SourceDoc(doc_id=doc_id, uri=where, fmt="record", content_hash=sha256(blob), size=len(blob),
                               origin=rel, record=body))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _surrogates(disc: Discovery, doc_id: str, rel: str, where: str, what: str) -> None:
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``); such text exists in no encoding."""
    disc.problems.append(Problem(doc_id, "invalid_characters", f"{where}: {what} contains a lone UTF-16 surrogate "
                                 "(a \\ud800-\\udfff escape without its pair), which is not text; fix the exporter "
                                 "or remove the escape", rel))
    disc.protected_origins.add(rel)


def _read_jsonl(fs: fsspec.AbstractFileSystem, full: str, rel: str, prefix: str, rs: RecordSettings, limit: int,
                disc: Discovery, seen: dict[str, str]) -> None:
    with fs.open(full, "rb") as fh:
        for lineno, raw in enumerate(_lines(fh), start=1):
            where = f"{rel}:{lineno}"
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                record = json.loads(text)
            except UnicodeDecodeError as exc:
                disc.problems.append(Problem(where, "invalid_utf8", f"{where}: invalid UTF-8 at byte {exc.start}; "
                                             "re-encode the file as UTF-8", rel))
                disc.protected_origins.add(rel)
                continue
            except json.JSONDecodeError as exc:
                disc.problems.append(Problem(where, "malformed_jsonl", f"{where}: not valid JSON ({exc.msg} at "
                                             f"column {exc.colno}); fix or remove the line", rel))
                disc.protected_origins.add(rel)
                continue
            except (RecursionError, ValueError) as exc:  # nested beyond the parser's depth; a 4,300+ digit number
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                disc.problems.append(Problem(where, "malformed_jsonl", f"{where}: not valid JSON ({why}); fix or "
                                             "remove the line", rel))
                disc.protected_origins.add(rel)
                continue
            record_to_doc(record, where, rel, prefix, rs, disc, seen, limit)


def _lines(fh: io.BufferedIOBase) -> Iterator[bytes]:
    """Lines of a binary file handle, CRLF tolerant, streaming."""
    for line in fh:
        yield line.rstrip(b"\r\n")


def _read_parquet(fs: fsspec.AbstractFileSystem, full: str, rel: str, prefix: str, rs: RecordSettings, limit: int,
                  disc: Discovery, seen: dict[str, str]) -> None:
    import pyarrow.parquet as pq

    try:
        with fs.open(full, "rb") as fh:
            pf = pq.ParquetFile(fh)
            row = 0
            for batch in pf.iter_batches(batch_size=2048):
                for record in batch.to_pylist():
                    row += 1
                    record_to_doc(record, f"{rel}:row {row}", rel, prefix, rs, disc, seen, limit)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not str(exc):
            raise
        disc.problems.append(Problem(rel, "unreadable", f"{rel}: not a readable Parquet file: {exc}", rel))
        disc.protected_origins.add(rel)


def read_file_bytes(source_uri: str, rel: str, settings: Settings, fs: fsspec.AbstractFileSystem | None = None,
                    storage_options: dict[str, Any] | None = None) -> bytes:
    """Read one file of a source again (in a batch task, possibly on another worker)."""
    fs, root, _ = resolve_source(source_uri, settings, fs, storage_options)
    full = root if not fs.isdir(root) else posixpath.join(root, rel) if not isinstance(fs, LocalFileSystem) \
        else os.path.join(root, rel)
    with fs.open(full, "rb") as fh:
        return fh.read(settings.quality.max_document_bytes + 1)
