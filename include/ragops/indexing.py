"""The record manager: keep a Chroma collection exactly in sync with a source.

A sync is three steps, each safe to retry and each one library call behind a DAG task:

``plan_sync``      discover + hash the source, compare with the state store, stage batches
``process_batch``  parse, validate (GX), chunk, embed only chunks whose vectors do not exist
``commit_sync``    the single writer: upsert new vectors, one state-store transaction, delete
                   stale vectors, repair this source's orphans, then the self-check

The order in ``commit_sync`` means a crash at any point leaves only *extra* vectors of this
source in Chroma (never missing ones), and the next commit removes them. The self-check
compares every chunk id in the state store with every id in the live collection and fails on
any difference, instead of silently diverging like other record managers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select

from ragops import pipelines, state
from ragops.chunking import Chunker, chunk_id, text_hash
from ragops.config import Settings, check_index_name, quality_for, settings_fingerprint
from ragops.embedding import Embedder
from ragops.errors import (
    DataIncidentError,
    LexicalIndexError,
    MassDeleteError,
    RagopsError,
    SyncMismatchError,
    UnknownIndexError,
)
from ragops.lexical import LexicalIndex, build_lexical, folder_for, ids_digest
from ragops.parsing import ParseError, parse_file, parse_record
from ragops.progress import Progress
from ragops.quality import validate
from ragops.repair import Repair, repair_text
from ragops.sources import discover, read_file_bytes, sha256
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
SAMPLE = 20
RUN_RETENTION_DAYS = 14


def new_run_id(prefix: str = "cli") -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}"


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; staging folders need a portable name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:120]


def collection_name(index: str, version: int) -> str:
    return f"{index}__v{version}"


def pipeline_fingerprint(settings: Settings, embedder: Embedder) -> str:
    """Hash of everything that changes chunk texts or vectors: chunker and embedding model."""
    c = settings.chunking
    return settings_fingerprint("chunker-v1", c.chunk_tokens, c.overlap_tokens, list(c.markdown_headers),
                                embedder.max_tokens, embedder.fingerprint)


def _write_json(path: Path, data: Any) -> None:
    """Atomic write: a killed task never leaves a half-written file behind."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.runs_dir / safe_run_id(run_id)


def read_plan(settings: Settings, run_id: str) -> dict[str, Any]:
    path = run_dir(settings, run_id) / "plan.json"
    if not path.exists():
        raise RagopsError(f"run {run_id} has no plan at {path}; run the plan step first")
    return _read_json(path)


def _prune_runs(settings: Settings) -> None:
    if not settings.runs_dir.exists():
        return
    cutoff = time.time() - RUN_RETENTION_DAYS * 86400
    for d in settings.runs_dir.iterdir():
        if d.is_dir() and d.stat().st_mtime < cutoff:
            shutil.rmtree(d, ignore_errors=True)


def resolve_index(settings: Settings, index: str, allow_create: bool) -> str:
    """Validate an index name; unknown names are an error unless the caller may create them."""
    check_index_name(index)
    if index in settings.indexes or allow_create:
        return index
    with state.session_scope(settings.state_db_url) as s:
        known = state.known_indexes(s)
    if index in known:
        return index
    choices = sorted(set(known) | set(settings.indexes)) or ["(none yet)"]
    raise UnknownIndexError(
        f"unknown index {index!r}: known indexes are {', '.join(choices)}. Create it with "
        f"`ragops ingest SOURCE --index {index}` or declare it under `indexes:` in the settings file"
    )


# ----------------------------------------------------------------------------------------------
# plan


def plan_sync(settings: Settings, source: str, index: str, run_id: str, *, full_resync: bool = False,
              dry_run: bool = False, allow_mass_delete: bool = False, allow_create: bool = True,
              trigger: str = "cli", fs: Any = None, storage_options: dict[str, Any] | None = None,
              embedder: Embedder | None = None, store: VectorStore | None = None,
              pipeline: dict[str, Any] | None = None, target_collection: str | None = None) -> dict[str, Any]:
    """Compare the source with the state store and stage the work. Returns a small summary.

    The index's live pipeline (model, chunking) is used, not the settings file's (see
    ``ragops.pipelines``). A rebuild that changes the pipeline passes ``pipeline`` and
    ``target_collection``: it stages into a shadow index whose chunks go to its new collection."""
    t0 = time.perf_counter()
    state.require_schema(settings.state_db_url)
    drift = None
    if target_collection is None:
        index = resolve_index(settings, index, allow_create)
        drift = pipelines.drift(settings, index)
        if drift:
            log.warning("index %s: the settings changed %s since its live version was built; this sync keeps the "
                        "live pipeline, and a rebuild (ragops index rebuild, or the rebuild_index DAG) applies the "
                        "change", index, sorted(drift))
    pipeline = pipeline or pipelines.live(settings, index) or pipelines.configured(settings)
    settings = pipelines.apply(settings, pipeline)
    embedder = _embedder_for(settings, embedder)
    fp = pipeline_fingerprint(settings, embedder)
    disc = discover(source, settings, fs=fs, storage_options=storage_options)

    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(
            select(state.Document.doc_id, state.Document.content_hash, state.Document.settings_hash,
                   state.Document.origin)
            .where(state.Document.index_name == index, state.Document.source_id == disc.source_id)
        ).all()
        live = state.live_version(s, index)

    indexed = {r.doc_id: r for r in rows}
    added, changed, unchanged = [], [], []
    for d in disc.docs:
        old = indexed.get(d.doc_id)
        if old is None:
            added.append(d)
        elif full_resync or old.content_hash != d.content_hash or old.settings_hash != fp:
            changed.append(d)
        else:
            unchanged.append(d)
    seen = {d.doc_id for d in disc.docs}
    problem_ids = {p.doc_id for p in disc.problems}
    deleted, protected = [], []
    for doc_id, row in indexed.items():
        if doc_id in seen:
            continue
        if doc_id in problem_ids or row.origin in disc.protected_origins:
            protected.append(doc_id)  # cannot be read now: keep the last good version
        else:
            deleted.append(doc_id)
    blocked = bool(indexed) and not allow_mass_delete and len(deleted) / len(indexed) > settings.quality.max_delete_share
    if blocked and not dry_run:
        raise MassDeleteError(
            f"this sync would delete {len(deleted)} of {len(indexed)} indexed documents "
            f"({len(deleted) / len(indexed):.0%}) of source {disc.source_id}, above quality.max_delete_share="
            f"{settings.quality.max_delete_share:.0%}. If the source is mounted and this is intended, rerun with "
            "--allow-mass-delete (Param allow_mass_delete); nothing was changed"
        )

    still: list[dict[str, Any]] = []
    if not full_resync:  # unchanged documents that were quarantined for this content are not read again
        added, changed, still = _still_quarantined(settings, index, disc.source_id, source, fp, added, changed)
    to_process = added + changed
    batch_size = settings.ingest.batch_documents
    batches = list(range((len(to_process) + batch_size - 1) // batch_size))
    summary: dict[str, Any] = {
        "run_id": run_id, "index": index, "source": source, "source_id": disc.source_id,
        "settings_hash": fp, "embedding_model": embedder.fingerprint, "full_resync": full_resync,
        "dry_run": dry_run, "trigger": trigger, "pipeline": pipeline, "pipeline_drift": drift,
        "target_collection": target_collection,
        "collection": target_collection or (live.collection if live else None),
        "counts": {"discovered": len(disc.docs), "added": len(added), "changed": len(changed),
                   "unchanged": len(unchanged), "deleted": len(deleted), "protected": len(protected),
                   "source_problems": len(disc.problems), "skipped": len(disc.skipped),
                   "still_quarantined": len(still)},
        "batches": [] if dry_run else batches,
        "samples": {"added": [d.doc_id for d in added[:SAMPLE]], "changed": [d.doc_id for d in changed[:SAMPLE]],
                    "deleted": deleted[:SAMPLE], "protected": protected[:SAMPLE],
                    "skipped": [f"{k.path} ({k.reason})" for k in disc.skipped[:SAMPLE]]},
        "problems": [p.__dict__ for p in disc.problems[:SAMPLE]],
        "mass_delete_blocked": blocked,  # a real run would refuse without allow_mass_delete
    }
    log.info("plan %s: %s", run_id, summary["counts"])
    _prune_runs(settings)
    rd = run_dir(settings, run_id)
    rd.mkdir(parents=True, exist_ok=True)
    for stale in rd.glob("batch-*"):  # a re-planned run starts from a clean slate
        stale.unlink()
    if dry_run:  # the plan is kept so the commit step can report it; nothing else is written
        summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
        _write_json(rd / "plan.json", summary)
        return summary

    for b in batches:
        items = [d.to_json() for d in to_process[b * batch_size:(b + 1) * batch_size]]
        _write_json(rd / f"batch-{b:05d}.in.json", items)
    if full_resync and live is not None:
        store = store or VectorStore(settings)
        with store.writer():
            present = sorted(store.ids(live.collection))
        _write_json(rd / "present_ids.json", present)
    full = dict(summary, delete_doc_ids=deleted, problems=[p.__dict__ for p in disc.problems], still_quarantined=still,
                discovered_total=len(disc.docs) + len({p.doc_id for p in disc.problems}),
                elapsed_s=round(time.perf_counter() - t0, 3))  # discover + plan, for the report's phases
    _write_json(rd / "plan.json", full)
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.SyncRun, run_id)
        if run is None:
            s.add(state.SyncRun(run_id=run_id, index_name=index, source_id=disc.source_id, status="planned",
                                trigger=trigger, stats=summary["counts"]))
        else:  # a re-planned run is a new attempt: its commit must run (and self-check) again
            run.status, run.stats, run.finished_at = "planned", summary["counts"], None
    (rd / "report.json").unlink(missing_ok=True)
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return summary


def _still_quarantined(settings: Settings, index: str, source_id: str, source: str, fp: str, added: list[Any],
                       changed: list[Any]) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    """Split off the documents whose last verdict was a quarantine of this very content and settings."""
    cands = {d.doc_id: d for d in added + changed}
    if not cands:
        return added, changed, []
    qs = quality_for(settings.quality, source)
    last: dict[str, Any] = {}
    ids = sorted(cands)
    with state.session_scope(settings.state_db_url) as s:
        for i in range(0, len(ids), 500):
            for row in s.execute(select(state.Quarantine).where(
                    state.Quarantine.index_name == index, state.Quarantine.source_id == source_id,
                    state.Quarantine.doc_id.in_(ids[i:i + 500])).order_by(state.Quarantine.id)).scalars():
                last[row.doc_id] = row  # the newest entry per document decides
    still = []
    for doc_id, row in last.items():
        d = cands[doc_id]
        if row.severity == "failure" and row.fingerprint and \
                row.fingerprint == quarantine_fingerprint(d.content_hash, fp, qs):
            still.append({"doc_id": doc_id, "stage": row.stage, "reason": row.reason, "detail": row.detail,
                          "origin": d.origin, "fingerprint": row.fingerprint, "since": row.run_id})
    skip = {e["doc_id"] for e in still}
    return ([d for d in added if d.doc_id not in skip], [d for d in changed if d.doc_id not in skip],
            sorted(still, key=lambda e: e["doc_id"]))


# ----------------------------------------------------------------------------------------------
# process


@dataclass
class _Prepared:
    doc: dict[str, Any]
    title: str
    pieces: list[Any]
    record_meta: dict[str, Any]


def process_batch(settings: Settings, run_id: str, batch_no: int, *, embedder: Embedder | None = None,
                  fs: Any = None, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse, validate, chunk and embed one staged batch; write its output atomically."""
    t0 = time.perf_counter()
    rd = run_dir(settings, run_id)
    plan = _read_json(rd / "plan.json")
    items = _read_json(rd / f"batch-{batch_no:05d}.in.json")
    settings = pipelines.apply(settings, plan.get("pipeline"))
    embedder = _embedder_for(settings, embedder)
    fp = pipeline_fingerprint(settings, embedder)
    if fp != plan["settings_hash"]:
        raise RagopsError(f"settings changed between plan and batch {batch_no} of run {run_id}; re-run the sync")
    quarantine: list[dict[str, Any]] = []
    qs = quality_for(settings.quality, plan["source"])

    def q(doc: dict[str, Any], stage: str, reason: str, detail: str) -> None:
        quarantine.append({"doc_id": doc["doc_id"], "stage": stage, "reason": reason, "detail": detail,
                           "origin": doc["origin"], "fingerprint": quarantine_fingerprint(doc["content_hash"], fp, qs)})

    parsed = []
    for item in items:
        try:
            if item["record"] is not None:
                doc = parse_record(item["doc_id"], item["record"])
            else:
                data = read_file_bytes(plan["source"], item["origin"], settings, fs=fs, storage_options=storage_options)
                if len(data) > settings.quality.max_document_bytes:
                    raise ParseError("too_large", f"{item['doc_id']} grew above quality.max_document_bytes")
                item = dict(item, content_hash=sha256(data))  # the content actually indexed
                doc = parse_file(item["doc_id"], data, item["fmt"])
        except ParseError as exc:
            q(item, "parse", exc.reason, exc.detail)
            continue
        except OSError as exc:
            q(item, "parse", "unreadable", f"{item['doc_id']} cannot be read: {exc}")
            continue
        parsed.append((item, doc))

    t_parse = time.perf_counter()
    repaired, doc_rows = [], []
    for it, d in parsed:
        d, rep = _repair(d, qs.replacement_chars)
        repaired.append((it, d, rep))
        doc_rows.append({"doc_id": d.doc_id, "title": d.title, "uri": it["uri"], "text": d.text,
                         "bad_char_share": rep.bad_share(), "n_repairs": sum(rep.repairs.values())})
    parsed = [(it, d) for it, d, _ in repaired]
    t_repair = time.perf_counter()
    dq = validate("documents", doc_rows, qs)
    for row, (_, _, rep) in enumerate(repaired):  # e.g. an escape in the title, which the suite does not read
        if rep.dangerous and row not in dq.failed_rows:
            dq.failed_rows[row] = ["invalid_characters: terminal escapes"]
    for row, reasons in sorted(dq.failed_rows.items()):
        code = reasons[0].split(":")[0]
        rep = repaired[row][2]
        detail = rep.dangerous if code == "invalid_characters" and rep.dangerous else "; ".join(reasons)
        if code == "mostly_broken":
            detail = (f"{rep.bad_share():.1%} of the characters ({rep.bad_chars} of {rep.length}) were lost upstream "
                      f"(U+FFFD) or are controls with no meaning, above quality.max_bad_char_share="
                      f"{qs.max_bad_char_share:.1%}; re-export the document from its original, or raise the "
                      "threshold for this source under quality.sources")
        q(parsed[row][0], "quality", code, detail)
    findings = []
    for i, (it, d, rep) in enumerate(repaired):
        if i in dq.failed_rows:
            continue
        entries = rep.findings() + [{"severity": "warning", "kind": "reader", "count": 1, "detail": w}
                                    for w in getattr(d, "warnings", ())]
        if entries:
            findings.append({"doc_id": d.doc_id, "origin": it["origin"], "findings": entries})
    parsed = [p for i, p in enumerate(parsed) if i not in dq.failed_rows]
    if qs.toxicity_checker != "none" and parsed:  # a toxic document is a finding, not silently indexed
        by_doc = {f["doc_id"]: f for f in findings}
        for f in _toxicity_findings(qs.toxicity_checker, settings.embedding.backend, parsed):
            if f["doc_id"] in by_doc:
                by_doc[f["doc_id"]]["findings"] += f["findings"]
            else:
                findings.append(f)
    t_quality = time.perf_counter()

    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    prepared: list[_Prepared] = []
    chunk_rows: list[dict[str, Any]] = []
    for item, doc in parsed:
        pieces = chunker.split(doc)
        if not pieces:
            q(item, "chunk", "empty", f"{doc.doc_id} produced no chunks")
            continue
        prepared.append(_Prepared(item, doc.title, pieces, dict(doc.metadata)))
        for p in pieces:
            chunk_rows.append({"chunk_id": chunk_id(plan["source_id"], doc.doc_id, p.position, p.text, fp),
                               "doc_id": doc.doc_id, "body": p.body, "n_tokens": p.n_tokens,
                               "text_hash": text_hash(p.text), "_doc": len(prepared) - 1, "_piece": p})
    cq = validate("chunks", [{k: v for k, v in r.items() if not k.startswith("_")} for r in chunk_rows],
                  settings.quality, max_tokens=embedder.max_tokens)
    bad_docs: dict[int, list[str]] = {}
    for i, reasons in sorted(cq.failed_rows.items()):
        bad_docs.setdefault(chunk_rows[i]["_doc"], reasons)  # the first failing chunk explains it
    for di, reasons in bad_docs.items():
        code = reasons[0].split(":")[0]
        q(prepared[di].doc, "quality", code if code.startswith("chunk_") else f"chunk_{code}", "; ".join(reasons))
    chunk_rows = [r for r in chunk_rows if r["_doc"] not in bad_docs]

    existing, reusable = _existing_vectors(settings, plan, rd, [prepared[i].doc["doc_id"] for i in range(len(prepared))
                                                               if i not in bad_docs])
    to_embed = [r for r in chunk_rows if r["chunk_id"] not in existing and _suffix(r["chunk_id"]) not in
                reusable.get(r["doc_id"], {})]
    t_embed = time.perf_counter()
    vectors = embedder.encode([r["_piece"].text for r in to_embed]) if to_embed else None
    vec_of = {r["chunk_id"]: vectors[i] for i, r in enumerate(to_embed)} if vectors is not None else {}
    t_write = time.perf_counter()

    out_rows = []
    for r in chunk_rows:
        p = r["_piece"]
        prep = prepared[r["_doc"]]
        meta = {"doc_id": r["doc_id"], "source_id": plan["source_id"], "title": prep.title[:500],
                "uri": prep.doc["uri"], "position": p.position, "headings": p.headings[:500],
                "n_tokens": p.n_tokens, "format": prep.doc["fmt"], "context_chars": len(p.context)}
        meta.update(p.meta)  # page / pages of a PDF chunk
        meta.update({k: v for k, v in prep.record_meta.items() if k not in meta})  # record fields
        copy_from = None
        if r["chunk_id"] not in existing and r["chunk_id"] not in vec_of:
            copy_from = reusable[r["doc_id"]][_suffix(r["chunk_id"])]
        vec = vec_of.get(r["chunk_id"])
        out_rows.append({"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "position": p.position,
                         "text": p.text, "context_chars": len(p.context), "text_hash": r["text_hash"],
                         "n_tokens": p.n_tokens, "meta": json.dumps(meta, ensure_ascii=False),
                         "embedding": vec.tolist() if vec is not None else None, "copy_from": copy_from})
    ok_docs = [{"doc_id": prep.doc["doc_id"], "content_hash": prep.doc["content_hash"], "title": prep.title,
                "uri": prep.doc["uri"], "origin": prep.doc["origin"], "n_chunks": len(prep.pieces)}
               for i, prep in enumerate(prepared) if i not in bad_docs]
    _write_parquet(rd / f"batch-{batch_no:05d}.out.parquet", out_rows)
    result = {"batch": batch_no, "documents": len(items), "documents_ok": len(ok_docs),
              "quarantined": len(quarantine), "chunks": len(out_rows), "embedded": len(to_embed),
              "reused": sum(1 for r in out_rows if r["embedding"] is None and r["copy_from"] is None),
              "copied": sum(1 for r in out_rows if r["copy_from"] is not None),
              "incidents": dq.incidents + cq.incidents, "elapsed_s": round(time.perf_counter() - t0, 3)}
    ok_ids = {d["doc_id"] for d in ok_docs}
    findings = [f for f in findings if f["doc_id"] in ok_ids]
    result["repaired"] = sum(1 for f in findings if any(e["severity"] == "repaired" for e in f["findings"]))
    result["warned"] = sum(1 for f in findings if any(e["severity"] == "warning" for e in f["findings"]))
    t_end = time.perf_counter()
    result["phases_s"] = {"parse": round(t_parse - t0, 3), "repair": round(t_repair - t_parse, 3),
                          "quality": round(t_quality - t_repair, 3),
                          "chunk": round(t_embed - t_quality, 3), "embed": round(t_write - t_embed, 3),
                          "write": round(t_end - t_write, 3)}
    _write_json(rd / f"batch-{batch_no:05d}.docs.json",
                {"docs": ok_docs, "quarantine": quarantine, "findings": findings, "summary": result})
    log.info("batch %d of run %s: %s", batch_no, run_id, result)
    return result


@functools.lru_cache(maxsize=4)
def _ingest_checker(name: str, backend: str) -> Any:
    """One checker per process: ``embedding`` and ``combined`` load the model, not once per batch."""
    from ragops.safety.toxicity import make_checker

    return make_checker(name, backend=backend)


def _toxicity_findings(checker_name: str, backend: str, parsed: list[tuple[dict[str, Any], Any]]) -> list[dict[str, Any]]:
    """Warning findings for documents with a toxic sentence (ragops.safety.toxicity); indexed, and listed."""
    from ragops.safety.toxicity import flag_documents

    checker = _ingest_checker(checker_name, backend)
    found = flag_documents([(d.doc_id, f"{d.title}\n{d.text}") for _, d in parsed], checker)
    origin = {d.doc_id: it["origin"] for it, d in parsed}
    return [{"doc_id": f["doc_id"], "origin": origin[f["doc_id"]], "findings": [{
        "severity": "warning", "kind": "toxicity", "count": f["toxic_sentences"],
        "detail": f"{f['toxic_sentences']} sentence(s) the {found['checker']} toxicity checker flags (worst "
                  f"{f['score']:.2f} >= {found['threshold']:.2f}): {f['sentence'][:200]!r}; indexed: read it and "
                  "fix or remove the document at its source if it should not be served"}]} for f in found["all"]]


def quarantine_fingerprint(content_hash: str, settings_hash: str, quality: Any) -> str:
    """What a quarantine verdict depends on: the content, the pipeline and the quality settings."""
    q = {f.name: getattr(quality, f.name) for f in dataclasses.fields(quality) if f.name != "sources"}
    return hashlib.sha256(json.dumps([content_hash, settings_hash, q], sort_keys=True, default=str)
                          .encode()).hexdigest()


def _repair(doc: Any, replacement_chars: str) -> tuple[Any, Repair]:
    """Repair a parsed document's title and text (ragops.repair); page offsets move with the text.

    A dangerous text is returned as it came, so that the quality suite refuses it."""
    title = repair_text(doc.title or "", replacement_chars)
    starts = tuple(getattr(doc, "page_starts", ()) or ())
    if starts:  # repair page by page: a repair may change a page's length
        bounds = [*starts, len(doc.text)]
        parts = [repair_text(doc.text[bounds[i]:bounds[i + 1]], replacement_chars) for i in range(len(starts))]
        head = repair_text(doc.text[:starts[0]], replacement_chars) if starts[0] else None
        pieces = ([head] if head else []) + parts
        rep = Repair("".join(p.text for p in pieces), length=len(doc.text))
        for p in pieces:
            for k, n in p.repairs.items():
                rep.repairs[k] = rep.repairs.get(k, 0) + n
            for k, n in p.warnings.items():
                rep.warnings[k] = rep.warnings.get(k, 0) + n
            rep.bad_chars += p.bad_chars
            rep.dangerous = rep.dangerous or p.dangerous
        new_starts, at = [], len(head.text) if head else 0
        for p in parts:
            new_starts.append(at)
            at += len(p.text)
    else:
        rep = repair_text(doc.text, replacement_chars)
    for k, n in title.repairs.items():
        rep.repairs[k] = rep.repairs.get(k, 0) + n
    for k, n in title.warnings.items():
        rep.warnings[k] = rep.warnings.get(k, 0) + n
    rep.dangerous = rep.dangerous or title.dangerous
    if rep.dangerous or (not rep.repairs and not rep.warnings):
        return doc, rep
    changes: dict[str, Any] = {"title": title.text, "text": rep.text}
    if starts:
        changes["page_starts"] = tuple(new_starts)
    return dataclasses.replace(doc, **changes), rep


def _embedder_for(settings: Settings, embedder: Embedder | None) -> Embedder:
    """The given embedder if it is the pipeline's model, else that model."""
    e = settings.embedding
    if embedder is not None and (embedder.settings.model, embedder.settings.normalize) == (e.model, e.normalize):
        return embedder
    return Embedder(e)


def _suffix(cid: str) -> str:
    """The content part of a chunk id: hash(settings, text). Equal suffix means equal vector."""
    return cid.rsplit("-", 1)[-1]


def _existing_vectors(settings: Settings, plan: dict[str, Any], rd: Path,
                      doc_ids: list[str]) -> tuple[set[str], dict[str, dict[str, str]]]:
    """Chunk ids already in the live collection, and per document the reusable old vectors
    (same text and settings at another position) keyed by content hash."""
    existing: set[str] = set()
    reusable: dict[str, dict[str, str]] = {}
    if not doc_ids:
        return existing, reusable
    present = set(_read_json(rd / "present_ids.json")) if (rd / "present_ids.json").exists() else None
    with state.session_scope(settings.state_db_url) as s:
        for i in range(0, len(doc_ids), 500):
            rows = s.execute(select(state.Chunk.chunk_id, state.Chunk.doc_id).where(
                state.Chunk.index_name == plan["index"], state.Chunk.source_id == plan["source_id"],
                state.Chunk.doc_id.in_(doc_ids[i:i + 500]))).all()
            for cid, did in rows:
                if present is not None and cid not in present:
                    continue  # full resync: the state says it exists but Chroma lost it
                existing.add(cid)
                reusable.setdefault(did, {})[_suffix(cid)] = cid
    return existing, reusable


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("chunk_id", pa.string()), ("doc_id", pa.string()), ("position", pa.int32()),
                        ("text", pa.string()), ("context_chars", pa.int32()), ("text_hash", pa.string()),
                        ("n_tokens", pa.int32()), ("meta", pa.string()), ("embedding", pa.list_(pa.float32())),
                        ("copy_from", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# commit


def commit_sync(settings: Settings, run_id: str, *, store: VectorStore | None = None,
                actor: str = "ragops") -> dict[str, Any]:
    """The single writer: apply staged batches to Chroma and the state store, then self-check."""
    t0 = time.perf_counter()
    rd = run_dir(settings, run_id)
    with state.session_scope(settings.state_db_url) as s:
        done = s.get(state.SyncRun, run_id)
        if done is not None and done.status == "committed" and (rd / "report.json").exists():
            log.info("run %s was already committed; returning its report", run_id)
            return _read_json(rd / "report.json")
    if not (rd / "plan.json").exists():
        raise RagopsError(f"run {run_id} has no plan at {rd}; run the plan step first")
    plan = _read_json(rd / "plan.json")
    if plan.get("dry_run"):
        return {"dry_run": True, "plan": plan}
    index, source_id = plan["index"], plan["source_id"]
    store = store or VectorStore(settings)

    ok_docs: list[dict[str, Any]] = []
    quarantine = [{"doc_id": p["doc_id"], "stage": p["stage"], "reason": p["reason"], "detail": p["detail"],
                   "origin": p["origin"]} for p in plan["problems"]]
    still = list(plan.get("still_quarantined") or [])
    quarantine += still
    incidents: list[str] = []
    batch_summaries: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for b in plan["batches"]:
        f = rd / f"batch-{b:05d}.docs.json"
        if not f.exists():
            raise RagopsError(f"batch {b} of run {run_id} has no output ({f.name}); re-run process_batch for it")
        data = _read_json(f)
        ok_docs += data["docs"]
        quarantine += data["quarantine"]
        findings += data.get("findings") or []
        incidents += data["summary"]["incidents"]
        batch_summaries.append(data["summary"])

    incidents += _run_level_checks(settings, rd, plan["batches"])
    q_docs = {q["doc_id"] for q in quarantine}
    share = len(q_docs) / max(plan["discovered_total"], 1)
    reasons = Counter(q["reason"] for q in quarantine)
    if share > settings.quality.max_failed_share or incidents:
        why = "; ".join(incidents) or (f"{len(q_docs)} of {plan['discovered_total']} documents ({share:.0%}) "
                                       f"failed quality, above quality.max_failed_share="
                                       f"{settings.quality.max_failed_share:.0%}")
        _record_run(settings, run_id, plan, "incident", {"quarantined": len(q_docs), "reasons": dict(reasons),
                                                         "incident": why}, quarantine, findings)
        raise DataIncidentError(
            f"data incident in run {run_id} (index {index}, source {source_id}): {why}. Top reasons: "
            f"{dict(reasons.most_common(5))}. Nothing was changed in the index; see `ragops quarantine "
            f"--run {run_id}`, fix the source, and re-run"
        )

    target = plan.get("target_collection")
    with store.writer() if target is None else contextlib.nullcontext():  # a rebuild holds the lock already
        if target is not None:
            collection, new_version = target, None
        else:
            collection, new_version = _ensure_collection(settings, store, index, plan["embedding_model"],
                                                         plan.get("pipeline"))
        upserted, copied = _upsert_batches(store, collection, rd, plan["batches"])
        with state.session_scope(settings.state_db_url) as s:
            if target is not None:
                pass  # a rebuild's new version: the rebuild records it and moves the alias after validating
            elif new_version is None:
                live = state.live_version(s, index)
                if live is not None and live.pipeline is None and plan.get("pipeline"):
                    live.pipeline = plan["pipeline"]  # built before pipelines were recorded: it has this one
                if live is not None and live.embedding_model != plan["embedding_model"]:
                    state.audit(s, actor, "embedding_model_changed", index, collection=collection,
                                old=live.embedding_model, new=plan["embedding_model"], run_id=run_id)
                    live.embedding_model = plan["embedding_model"]
            else:
                s.add(new_version)
                s.flush()
                s.merge(state.IndexAlias(index_name=index, version_id=new_version.id))
                state.audit(s, actor, "index_created", index, collection=collection, run_id=run_id,
                            embedding_model=new_version.embedding_model)
            touched = [d["doc_id"] for d in ok_docs] + list(plan["delete_doc_ids"])
            old_ids: set[str] = set()
            for i in range(0, len(touched), 500):
                old_ids.update(s.execute(select(state.Chunk.chunk_id).where(
                    state.Chunk.index_name == index, state.Chunk.source_id == source_id,
                    state.Chunk.doc_id.in_(touched[i:i + 500]))).scalars())
                s.execute(delete(state.Chunk).where(
                    state.Chunk.index_name == index, state.Chunk.source_id == source_id,
                    state.Chunk.doc_id.in_(touched[i:i + 500])))
            for i in range(0, len(plan["delete_doc_ids"]), 500):
                s.execute(delete(state.Document).where(
                    state.Document.index_name == index, state.Document.source_id == source_id,
                    state.Document.doc_id.in_(plan["delete_doc_ids"][i:i + 500])))
            new_ids = _insert_chunks(s, rd, plan, index, source_id)
            existing_docs = {d.doc_id: d for d in s.execute(select(state.Document).where(
                state.Document.index_name == index, state.Document.source_id == source_id)).scalars()}
            for d in ok_docs:
                row = existing_docs.get(d["doc_id"])
                if row is None:
                    s.add(state.Document(index_name=index, source_id=source_id, doc_id=d["doc_id"],
                                         content_hash=d["content_hash"], settings_hash=plan["settings_hash"],
                                         title=d["title"], uri=d["uri"], origin=d["origin"], n_chunks=d["n_chunks"],
                                         run_id=run_id, updated_at=state.utcnow()))
                else:
                    row.content_hash, row.settings_hash = d["content_hash"], plan["settings_hash"]
                    row.title, row.uri, row.origin, row.n_chunks = d["title"], d["uri"], d["origin"], d["n_chunks"]
                    row.run_id, row.updated_at = run_id, state.utcnow()
        stale = sorted(old_ids - new_ids)
        store.delete(collection, stale)
        check = _self_check_locked(settings, store, index, collection, repair_source=source_id)
        if target is None and check["ok"]:  # dense search of what was written: settled; tuned if new or grown
            store.finish(collection)
        lexical = _refresh_lexical(settings, index, collection, bool(upserted or stale or check["repaired"])) \
            if check["ok"] and target is None else None  # a rebuild builds its BM25 index after validating

    report = {
        "run_id": run_id, "index": index, "collection": collection, "source_id": source_id,
        "counts": dict(plan["counts"], indexed=len(ok_docs), quarantined=len(q_docs - {e["doc_id"] for e in still}),
                       still_quarantined=len(still), repaired=_count(findings, "repaired"),
                       warned=_count(findings, "warning")),
        "chunks": {"upserted": upserted, "embedded": sum(b["embedded"] for b in batch_summaries),
                   "reused": sum(b["reused"] for b in batch_summaries), "copied": copied,
                   "deleted": len(stale), "repaired_orphans": check["repaired"]},
        "quarantine": {"documents": len(q_docs), "reasons": dict(reasons),
                       "still": len(still),
                       "entries": [{k: q[k] for k in ("doc_id", "reason", "detail")} for q in quarantine[:SAMPLE]]},
        "repairs": _findings_summary(findings),
        "phases_s": _phases(plan, batch_summaries),
        "self_check": check, "elapsed_s": round(time.perf_counter() - t0, 3),
        "pipeline_drift": plan.get("pipeline_drift"),
        "skipped": plan.get("samples", {}).get("skipped", []),  # files not read (unsupported type), a sample
    }
    report["phases_s"]["commit"] = report["elapsed_s"]  # write to Chroma and the state store, self-check
    if not check["ok"]:
        _record_run(settings, run_id, plan, "self_check_failed", report, quarantine, findings)
        raise SyncMismatchError(
            f"self-check failed for index {index} ({collection}): {check['missing']} chunk ids in the state store "
            f"are missing from Chroma and {check['extra']} ids in Chroma are not in the state store (e.g. "
            f"{check['examples']}). Re-run the ingest with full_resync (ragops ingest SOURCE --full-resync)"
        )
    if lexical is not None:
        report["lexical"] = lexical
    _record_run(settings, run_id, plan, "committed", report, quarantine, findings)
    _write_json(rd / "report.json", report)
    for f in rd.glob("batch-*"):
        f.unlink(missing_ok=True)
    (rd / "present_ids.json").unlink(missing_ok=True)
    log.info("committed run %s: %s", run_id, {k: report[k] for k in ("counts", "chunks")})
    return report


def _refresh_lexical(settings: Settings, index: str, collection: str, changed: bool) -> dict[str, Any] | None:
    """Rebuild the collection's BM25 index (under the writer lock, so two commits cannot race)
    when the index changed, or when the BM25 index is missing, unreadable or for other chunks.
    A failure is logged and reported, not raised: dense retrieval is already committed, and the
    next sync tries again."""
    folder = folder_for(settings.data_dir, collection)
    if not changed:
        try:
            current = LexicalIndex.load(folder)
            with state.session_scope(settings.state_db_url) as s:
                ids = s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars().all()
            if current.ids_sha256 == ids_digest(ids):
                return None
            log.warning("the BM25 index of %s holds other chunks than the state store; rebuilding it", collection)
        except LexicalIndexError as exc:
            log.warning("rebuilding the BM25 index of %s: %s", collection, exc)
    try:
        return build_lexical(settings, index, collection)
    except (RagopsError, OSError) as exc:
        log.error("BM25 INDEX NOT BUILT for %s (dense retrieval is unaffected; the next sync retries): %s",
                  collection, exc)
        return {"collection": collection, "error": str(exc)}


def _run_level_checks(settings: Settings, rd: Path, batches: list[int]) -> list[str]:
    """Dataset-level expectations over all new chunks of the run (independent of batching)."""
    import pyarrow.parquet as pq

    hashes = [h for b in batches for h in pq.read_table(rd / f"batch-{b:05d}.out.parquet",
                                                          columns=["text_hash"]).column(0).to_pylist()]
    return validate("chunk_set", [{"text_hash": h} for h in hashes], settings.quality).incidents


def _ensure_collection(settings: Settings, store: VectorStore, index: str, embedding_model: str,
                       pipeline: dict[str, Any] | None) -> tuple[str, state.IndexVersion | None]:
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        if live is not None:
            return live.collection, None
        version = (s.execute(select(func.max(state.IndexVersion.version))
                             .where(state.IndexVersion.index_name == index)).scalar() or 0) + 1
    name = collection_name(index, version)
    store.collection(name, create=True)
    return name, state.IndexVersion(index_name=index, version=version, collection=name, pipeline=pipeline,
                                    embedding_model=embedding_model, status="live", created_at=state.utcnow())


def _upsert_batches(store: VectorStore, collection: str, rd: Path, batches: list[int]) -> tuple[int, int]:
    import pyarrow.parquet as pq

    upserted = copied = 0
    for b in batches:
        table = pq.read_table(rd / f"batch-{b:05d}.out.parquet")
        rows = table.to_pylist()
        fresh = [r for r in rows if r["embedding"] is not None]
        copies = [r for r in rows if r["copy_from"] is not None]
        if copies:  # a retried commit may already have copied some (and deleted their sources)
            done = set(store.get_embeddings(collection, [r["chunk_id"] for r in copies]))
            copies = [r for r in copies if r["chunk_id"] not in done]
            old = store.get_embeddings(collection, [r["copy_from"] for r in copies])
            missing = [r["copy_from"] for r in copies if r["copy_from"] not in old]
            if missing:
                raise SyncMismatchError(f"vectors to reuse are missing from {collection} (e.g. {missing[:3]}); "
                                        "re-run with full_resync")
            for r in copies:
                r["embedding"] = old[r["copy_from"]]
            fresh += copies
            copied += len(copies)
        if fresh:
            store.upsert(collection, [r["chunk_id"] for r in fresh],
                         np.asarray([r["embedding"] for r in fresh], dtype=np.float32),
                         [r["text"] for r in fresh], [json.loads(r["meta"]) for r in fresh])
            upserted += len(fresh)
        log.info("batch %d: upserted %d vectors into %s (%d copied from moved chunks)", b, len(fresh), collection,
                 len(copies))
    return upserted, copied


def _insert_chunks(s: Any, rd: Path, plan: dict[str, Any], index: str, source_id: str) -> set[str]:
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for b in plan["batches"]:  # one bulk INSERT per batch keeps memory flat for large runs
        rows = [{"index_name": index, "chunk_id": r["chunk_id"], "source_id": source_id, "doc_id": r["doc_id"],
                 "position": r["position"], "text_hash": r["text_hash"], "n_tokens": r["n_tokens"],
                 "text": r["text"], "meta": json.loads(r["meta"])}
                for r in pq.read_table(rd / f"batch-{b:05d}.out.parquet",
                                       columns=["chunk_id", "doc_id", "position", "text", "text_hash", "n_tokens",
                                                "meta"]).to_pylist()]
        if rows:
            s.execute(insert(state.Chunk), rows)
        ids.update(r["chunk_id"] for r in rows)
    return ids


def _count(findings: list[dict[str, Any]], severity: str) -> int:
    return sum(1 for f in findings if any(e["severity"] == severity for e in f["findings"]))


def _findings_summary(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Repairs and warnings of the run: documents, counts per kind, and a sample per document."""
    kinds: Counter[str] = Counter()
    for f in findings:
        for e in f["findings"]:
            kinds[f"{e['severity']}:{e['kind']}"] += int(e.get("count", 1))
    return {"repaired_documents": _count(findings, "repaired"), "warned_documents": _count(findings, "warning"),
            "kinds": dict(sorted(kinds.items())),
            "entries": [{"doc_id": f["doc_id"], "findings": f["findings"]} for f in findings[:SAMPLE]]}


def _phases(plan: dict[str, Any], batches: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per phase over the run's batches (summed: batches may run in parallel)."""
    out: dict[str, float] = {"discover_plan": float(plan.get("elapsed_s") or 0.0)}
    for b in batches:
        for k, v in (b.get("phases_s") or {}).items():
            out[k] = round(out.get(k, 0.0) + float(v), 3)
    return out


def _finding_text(e: dict[str, Any]) -> str:
    if e.get("detail"):
        return str(e["detail"])
    n = int(e.get("count", 1))
    return {
        "c1_as_cp1252": f"{n} C1 control character(s) were Windows-1252 punctuation and became those characters",
        "mojibake": "mojibake (UTF-8 read as Windows-1252 or Latin-1) was decoded back to the intended text",
        "lossy_mojibake": "mojibake that could not be decoded was replaced with U+FFFD",
        "surrogates": f"{n} lone surrogate(s) replaced",
        "control_chars_removed": f"{n} control character(s) with no meaning were removed",
        "replacement_chars": f"{n} U+FFFD character(s) kept: an earlier export lost these characters",
        "replacement_chars_removed": f"{n} U+FFFD character(s) removed (quality.replacement_chars: remove)",
    }.get(str(e["kind"]), f"{e['kind']} ({n})")


def _record_run(settings: Settings, run_id: str, plan: dict[str, Any], status: str, stats: dict[str, Any],
                quarantine: list[dict[str, Any]], findings: list[dict[str, Any]] | None = None) -> None:
    """Idempotent: a retried commit replaces this run's quarantine entries, never duplicates them."""
    with state.session_scope(settings.state_db_url) as s:
        s.execute(delete(state.Quarantine).where(state.Quarantine.run_id == run_id))
        for q in quarantine:
            s.add(state.Quarantine(run_id=run_id, index_name=plan["index"], source_id=plan["source_id"],
                                   doc_id=q["doc_id"][:1024], stage=q["stage"], reason=q["reason"],
                                   detail=q["detail"][:4000], severity="failure", fingerprint=q.get("fingerprint"),
                                   created_at=state.utcnow()))
        for f in findings or []:
            for e in f["findings"]:
                s.add(state.Quarantine(run_id=run_id, index_name=plan["index"], source_id=plan["source_id"],
                                       doc_id=f["doc_id"][:1024], stage="repair", reason=str(e["kind"])[:64],
                                       detail=_finding_text(e)[:4000], severity=e["severity"],
                                       created_at=state.utcnow()))
        run = s.get(state.SyncRun, run_id)
        if run is None:
            run = state.SyncRun(run_id=run_id, index_name=plan["index"], source_id=plan["source_id"],
                                trigger=plan.get("trigger", "cli"), status=status, stats={})
            s.add(run)
        run.status, run.finished_at = status, state.utcnow()
        run.stats = json.loads(json.dumps(stats, default=str))


# ----------------------------------------------------------------------------------------------
# self-check


def _self_check_locked(settings: Settings, store: VectorStore, index: str, collection: str,
                       repair_source: str | None = None) -> dict[str, Any]:
    with state.session_scope(settings.state_db_url) as s:
        expected = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())
    actual = store.ids(collection)
    repaired = 0
    if repair_source is not None and actual - expected:
        orphans = sorted((actual - expected) & store.ids(collection, where={"source_id": repair_source}))
        if orphans:
            log.warning("removing %d orphaned vectors of source %s from %s (left by an interrupted run)",
                        len(orphans), repair_source, collection)
            store.delete(collection, orphans)
            repaired = len(orphans)
            actual -= set(orphans)
    missing, extra = expected - actual, actual - expected
    return {"ok": not missing and not extra, "state_chunks": len(expected), "chroma_ids": len(actual),
            "missing": len(missing), "extra": len(extra), "repaired": repaired,
            "examples": sorted(missing)[:3] + sorted(extra)[:3]}


def self_check(settings: Settings, index: str, store: VectorStore | None = None) -> dict[str, Any]:
    """Compare the state store's chunk ids with the live collection's ids (read-only)."""
    store = store or VectorStore(settings)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
    if live is None:
        raise UnknownIndexError(f"index {index!r} has no live collection yet; ingest into it first")
    with store.writer():
        return _self_check_locked(settings, store, index, live.collection)


# ----------------------------------------------------------------------------------------------
# one call for the CLI and tests


def sync(settings: Settings, source: str, index: str, *, run_id: str | None = None, full_resync: bool = False,
         dry_run: bool = False, allow_mass_delete: bool = False, allow_create: bool = True, trigger: str = "cli",
         embedder: Embedder | None = None, store: VectorStore | None = None, fs: Any = None,
         storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """plan -> every batch -> commit in one process (the DAG runs the same steps as tasks)."""
    run_id = run_id or new_run_id(trigger)
    plan = plan_sync(settings, source, index, run_id, full_resync=full_resync, dry_run=dry_run,
                     allow_mass_delete=allow_mass_delete, allow_create=allow_create, trigger=trigger, fs=fs,
                     storage_options=storage_options, embedder=embedder, store=store)
    t0 = time.perf_counter()
    if plan["batches"]:
        embedder = _embedder_for(pipelines.apply(settings, plan["pipeline"]), embedder)  # load the model once
    todo = int(plan["counts"]["added"]) + int(plan["counts"]["changed"])
    with Progress(todo if plan["batches"] else 0, "documents", f"ingest {index}") as bar:
        for b in plan["batches"]:
            r = process_batch(settings, run_id, b, embedder=embedder, fs=fs, storage_options=storage_options)
            bar.update(r["documents"], chunks=r["chunks"], quarantined=r["quarantined"])
    report = commit_sync(settings, run_id, store=store, actor=trigger)
    if not report.get("dry_run"):  # the whole run: plan + batches + commit (elapsed_s is the commit's)
        report["run_elapsed_s"] = round(float(plan.get("elapsed_s") or 0.0) + time.perf_counter() - t0, 3)
    return report
