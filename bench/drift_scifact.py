#!/usr/bin/env python
"""Drift checks on BEIR SciFact: wall time and peak memory of a full check, at SciFact size and at
about 100,000 vectors, and what the tests say on real data.

One run, on a fresh temporary data directory (or ``--data-dir DIR``; never the project's own
``.ragops``), embedded Chroma and a SQLite state store:

1. ingest ``corpus.jsonl`` into the index ``scifact`` with ``ragops.indexing.sync`` in two
   syncs of the same file: first only the abstracts that do not mention cancer (no "cancer",
   "tumor", "tumour", "carcinoma", "oncogen", "metasta" in title or text), then the whole corpus,
   which adds the rest. After the first sync a named reference snapshot is taken (the "shifted"
   scenario); a ``--data-dir`` that already holds the index is reused as it is;
2. write the 1,109 SciFact queries (``queries.jsonl``) to a query log, split at random into the
   reference window (7 days) and the current window (1 day, ending at the check's ``end``);
3. SciFact size: a named reference snapshot of 5,000 of the index's chunk vectors, then a full
   ``ragops.drift.checks.run_check`` (corpus, documents, queries, gaps, quality) with
   ``sample_size=5000``, ``--repeat`` times (default 3), each in a fresh child process: wall
   time, the time inside each part, and the child's peak RSS. Nothing drifted, so every check should say ``ok``;
4. shifted: the same child, corpus and documents checks against the snapshot taken before the
   cancer abstracts were added: the corpus check should breach;
5. about 100,000 vectors: a *synthetic* index ``scifact-synthetic`` (the SciFact chunk vectors
   once as they are, then copies with Gaussian noise, re-normalised, with their own chunk and
   document rows in the state store and a live version), a reference snapshot with the default
   ``drift.sample_size`` (2,000), then a full check with the defaults, ``--repeat`` times, each
   in a child process. H.Target: under 60 s (median of the runs). Building the index is timed separately (not part of the target).

Usage (from the project root)::

    .venv/bin/python bench/drift_scifact.py                 # writes bench/results/drift_scifact.{json,md}
    .venv/bin/python bench/drift_scifact.py --data-dir DIR  # reuse (or create and keep) the ingest in DIR
    .venv/bin/python bench/drift_scifact.py --limit 500     # smoke run: *.smoke.json / *.smoke.md

The dataset is read-only input at ``../shared/datasets/scifact`` (relative to the project root);
when it is absent the script says so and exits 0. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness as H

if TYPE_CHECKING:
    from ragops.config import Settings
    from ragops.embedding import Embedder
    from ragops.vectorstore import VectorStore

log = logging.getLogger("bench.drift_scifact")

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "drift_scifact"
CHILD_COMMAND = "_check-child"  # hidden sub-command: one drift check in a fresh process

INDEX = "scifact"
SYNTH_INDEX = "scifact-synthetic"
REFERENCE_SNAPSHOT = "bench-drift-reference"  # the whole index, taken by every run
SHIFT_SNAPSHOT = "bench-drift-before-cancer"  # taken after the first sync (abstracts without the topic)
TOPIC_TERMS = ("cancer", "tumor", "tumour", "carcinoma", "oncogen", "metasta")
SCIFACT_SAMPLE = 5000
SYNTHETIC_CHUNKS = 100_000
SYNTHETIC_CHUNKS_SMOKE = 5_000
NOISE_SIGMA = 0.01  # per dimension; a 384-d unit vector moves by about 0.2 (cosine to the original ~0.98)
SEED = 13
QUERY_SPLIT = 0.5  # share of the queries that go to the reference window
ALL_CHECKS = ("corpus", "documents", "queries", "gaps", "quality")
SHIFT_CHECKS = ("corpus", "documents")

# H.Target (the issue): a full drift check at about 100,000 vectors with sampling
SYNTH_CHECK_MAX_S = 60.0

PARTS = ("index_profile", "reference snapshot", "corpus", "documents", "query log read", "queries", "gaps",
         "quality", "targeted", "report")


# ----------------------------------------------------------------------------------------------
# helpers


def check_timers() -> list[tuple[Any, str, str]]:
    """The drift check's own steps (module attributes the library looks up at call time)."""
    from ragops import embedding
    from ragops.drift import checks, querylog, report, snapshots
    from ragops.drift import stats as S

    return [(snapshots, "index_profile", "index_profile"), (snapshots, "resolve", "reference snapshot"),
            (checks, "_corpus", "corpus"), (checks, "_documents", "documents"), (querylog, "read", "query log read"),
            (checks, "_queries", "queries"), (checks, "_gaps", "gaps"), (checks, "_quality", "quality"),
            (checks, "_targeted", "targeted"), (report, "write_report", "report"),
            (snapshots, "sample_vectors", "sample_vectors"), (S, "two_sample", "two_sample"),
            (S.TESTS, "mmd", "mmd"), (S.TESTS, "classifier", "classifier"), (S.TESTS, "centroid", "centroid"),
            (checks, "_projection", "projection"), (checks, "_novel", "novel region"),
            (checks, "best_scores", "best_scores"), (S, "cluster_texts", "cluster_texts"),
            (embedding.Embedder, "encode", "encode"), (embedding.Embedder, "model", "model load")]


def mentions_topic(line: str) -> bool:
    record = json.loads(line)
    text = f"{record.get('title') or ''} {record.get('text') or ''}".lower()
    return any(t in text for t in TOPIC_TERMS)


def snapshot_names(settings: Settings, index: str) -> set[str]:
    from ragops.drift import snapshots

    return {s["name"] for s in snapshots.listing(settings, index)}


def timed_snapshot(settings: Settings, index: str, name: str, sample_size: int | None,
                   store: VectorStore) -> dict[str, Any]:
    """A named reference snapshot (an earlier one of that name is replaced)."""
    from ragops.drift import snapshots

    if name in snapshot_names(settings, index):
        snapshots.remove(settings, index, name, actor="bench")
    t0 = time.perf_counter()
    snap = snapshots.take(settings, index, name=name, sample_size=sample_size, actor="bench", store=store)
    seconds = time.perf_counter() - t0
    out = {k: snap[k] for k in ("name", "collection", "vectors", "documents", "chunks", "mean_chunk_tokens")}
    out.update(sample_size=sample_size, seconds=round(seconds, 3))
    log.info("   snapshot %s of %s: %d of %d chunk vectors, %d documents (%.1fs)", name, index, snap["vectors"],
             snap["chunks"], snap["documents"], seconds)
    return out


# ----------------------------------------------------------------------------------------------
# 1. ingest (two syncs) and the snapshot before the topic


def timed_sync(settings: Settings, source: Path, embedder: Embedder, store: VectorStore) -> dict[str, Any]:
    from ragops.indexing import new_run_id, sync

    t0 = time.perf_counter()
    report = sync(settings, str(source), INDEX, run_id=new_run_id("bench"), trigger="bench", embedder=embedder,
                  store=store)
    seconds = time.perf_counter() - t0
    log.info("   %.1fs, counts %s, chunks %s", seconds, report["counts"], report["chunks"])
    return {"seconds": round(seconds, 3), "counts": report["counts"], "chunks": report["chunks"],
            "loadavg_after": H.loadavg()}


def ingest(args: argparse.Namespace, settings: Settings, dataset: Path, tmp: Path,
           store: VectorStore) -> dict[str, Any]:
    existing = H.live_collection(settings, INDEX)
    if existing:
        log.info("1. the data directory already holds index %s (live %s): ingest skipped", INDEX, existing)
        return {"skipped": True, "live": existing, "shift_snapshot": SHIFT_SNAPSHOT in snapshot_names(settings, INDEX),
                **H.index_counts(settings, INDEX)}
    embedder, load_s = H.warm_embedder(settings)
    log.info("model loaded and warmed in %.1fs", load_s)
    records = list(H.iter_lines(dataset / "corpus.jsonl", args.limit))
    source = tmp / "source" / "corpus.jsonl"  # one path, so both syncs have the same source id
    out: dict[str, Any] = {"skipped": False, "model_load_s": round(load_s, 3), "records": len(records)}
    if args.no_shift:
        log.info("1. ingesting %d records into index %s", len(records), INDEX)
        H.replace_file(source, iter(records))
        out["syncs"] = [timed_sync(settings, source, embedder, store)]
    else:
        off_topic = [ln for ln in records if not mentions_topic(ln)]
        out["topic"] = {"terms": list(TOPIC_TERMS), "records_without": len(off_topic),
                        "records_with": len(records) - len(off_topic)}
        log.info("1. ingesting the %d of %d records that do not mention the topic %s", len(off_topic), len(records),
                 "/".join(TOPIC_TERMS))
        H.replace_file(source, iter(off_topic))
        first = timed_sync(settings, source, embedder, store)
        first["index_after"] = H.index_counts(settings, INDEX)
        log.info("   reference snapshot before the topic (sample %d)", args.sample_size)
        out["shift_snapshot"] = timed_snapshot(settings, INDEX, SHIFT_SNAPSHOT, args.sample_size, store)
        log.info("   ingesting the whole corpus (%d records) into the same source", len(records))
        H.replace_file(source, iter(records))
        second = timed_sync(settings, source, embedder, store)
        out["syncs"] = [first, second]
    out["seconds"] = round(sum(s["seconds"] for s in out["syncs"]), 3)
    out.update(live=H.live_collection(settings, INDEX), **H.index_counts(settings, INDEX))
    del embedder
    return out


# ----------------------------------------------------------------------------------------------
# 2. the query log


def write_query_log(settings: Settings, dataset: Path, uri: Path, end: dt.datetime) -> dict[str, Any]:
    """Every SciFact query once, split at random: the reference share gets a uniform time in the
    reference window, the rest one in the current window (both as the check computes them)."""
    import numpy as np

    from ragops.config import parse_window
    from ragops.drift import querylog

    texts = list(H.load_queries(dataset / "queries.jsonl").values())
    d = settings.drift
    cur_w, ref_w = parse_window(d.current_window), parse_window(d.reference_window)
    mid, start = end - cur_w, end - cur_w - ref_w
    rng = np.random.default_rng(SEED)
    is_ref = rng.random(len(texts)) < QUERY_SPLIT
    rows = []
    for text, ref in zip(texts, is_ref, strict=True):
        base, width = (start, ref_w) if ref else (mid, cur_w)
        at = base + width * float(rng.random())
        rows.append({"timestamp": min(at, end - dt.timedelta(seconds=1)).isoformat(), "query": text})
    rows.sort(key=lambda r: r["timestamp"])
    if uri.exists():
        shutil.rmtree(uri)
    path = querylog.append(settings, rows, uri=str(uri))
    return {"uri": str(uri), "file": path, "queries": len(texts), "reference_window": int(is_ref.sum()),
            "current_window": int(len(texts) - is_ref.sum()), "split_seed": SEED, "end": end.isoformat(),
            "windows": {"reference": [start.isoformat(), mid.isoformat()], "current": [mid.isoformat(), end.isoformat()]}}


# ----------------------------------------------------------------------------------------------
# 3-5. one check in a fresh child process


def child_main(argv: list[str]) -> int:
    """Hidden sub-command: one ``run_check`` in this (fresh) process; figures written as JSON."""
    p = argparse.ArgumentParser(prog=f"{SCRIPT.name} {CHILD_COMMAND}")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--checks", required=True)
    p.add_argument("--sample-size", type=int, default=None)
    p.add_argument("--end", required=True)
    p.add_argument("--query-log", required=True)
    p.add_argument("--check-id", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    H.setup_logging(args.verbose)
    inherited = H.maxrss_kib()
    settings = H.open_settings(args.data_dir)
    settings = settings.replace(drift=dataclasses.replace(settings.drift, query_log=args.query_log))
    from ragops.drift import checks

    rss_ready, hwm_ready = H.proc_status_kib("VmRSS"), H.vm_hwm_kib()
    with H.timed_calls(check_timers(), nested=True) as spent, H.Timer() as timer:
        summary = checks.run_check(settings, args.index, checks=args.checks.split(","), reference=args.reference,
                                   end=dt.datetime.fromisoformat(args.end), sample_size=args.sample_size,
                                   check_id=args.check_id, trigger="bench", actor="bench")
    stored = json.loads((settings.drift_dir / args.check_id / "results.json").read_text(encoding="utf-8"))
    shared = shared_vectors(settings, args.index, args.reference, stored) if "corpus" in args.checks else None
    out = {"wall_s": round(timer.wall, 3), "elapsed_s": summary.get("elapsed_s"), "cpu_s": round(timer.cpu, 3),
           "parts_s": {k: round(v, 3) for k, v in sorted(spent.items())},
           "ru_maxrss_kib": H.maxrss_kib(), "vm_hwm_kib": H.vm_hwm_kib(),
           "ru_maxrss_at_start_kib": inherited, "rss_before_check_kib": rss_ready, "vm_hwm_before_check_kib": hwm_ready,
           "status": summary["status"], "breaches": summary["breaches"], "summary": summary,
           "params": stored.get("params"), "reference": stored.get("reference"),
           "query_log": stored.get("query_log"), "targeted": stored.get("targeted"),
           "checks": {k: compact_check(k, v) for k, v in stored.get("checks", {}).items()}}
    if shared is not None and "corpus" in out["checks"]:
        out["checks"]["corpus"]["shared_vectors"] = shared
    H.write_json(args.out, out)
    return 0


def shared_vectors(settings: Settings, index: str, reference: str, stored: dict[str, Any]) -> int | None:
    """How many of the corpus check's current vectors are byte-identical to a reference vector,
    found again after the timed check: the snapshot's vectors, and the current sample drawn as
    ``_corpus`` draws it (the chunks outside the reference sample, same size and seed)."""
    from ragops.drift import snapshots

    params = stored.get("params") or {}
    if not params:
        return None
    _, arrays, _ = snapshots.resolve(settings, index, reference)
    prof = snapshots.index_profile(settings, index)
    taken = set(arrays["ids"].tolist()) if "ids" in arrays else set()
    pool = [c for c in prof["ids"] if c not in taken]  # as _corpus draws it: chunks the reference did not sample
    _, current = snapshots.sample_vectors(settings, prof["collection"], pool, int(params["sample_size"]),
                                          int(params["seed"]) + 1)
    ref_rows = {row.tobytes() for row in arrays["vectors"].astype("float32")}
    return int(sum(row.astype("float32").tobytes() in ref_rows for row in current))


def compact_check(name: str, c: dict[str, Any]) -> dict[str, Any]:
    """The figures of one check from its stored results (already without resamples)."""
    keep = ("status", "reason", "fired", "rule", "compared", "n_reference", "n_current", "seconds", "share",
            "reference_share", "uncovered", "queries", "threshold", "novel_examples")
    out = {k: c[k] for k in keep if k in c}
    if c.get("tests"):
        out["tests"] = {t: {k: v[k] for k in ("statistic", "p_value", "threshold", "permutations", "gamma",
                                                "null_q95", "null_quantiles", "significant") if k in v}
                        for t, v in c["tests"].items()}
    if c.get("parts"):
        out["parts"] = {part: {k: v[k] for k in ("psi", "reference_mean", "current_mean", "reference", "current",
                                                  "change", "p_value", "breach", "ks")
                               if k in v and not (isinstance(v[k], list) and len(v[k]) > 12)}
                        for part, v in c["parts"].items()}
    if c.get("clusters"):
        out["clusters"] = [{k: cl.get(k) for k in ("size", "share", "terms", "examples")} for cl in c["clusters"]]
    return out


def run_child(args: argparse.Namespace, data_dir: Path, tmp: Path, label: str, index: str, reference: str,
              checks: tuple[str, ...], sample_size: int | None, end: dt.datetime, qlog: Path) -> dict[str, Any]:
    check_id = f"bench_{label}_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    out = tmp / "checks" / f"{check_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), CHILD_COMMAND, "--data-dir", str(data_dir), "--index", index,
           "--reference", reference, "--checks", ",".join(checks), "--end", end.isoformat(), "--query-log", str(qlog),
           "--check-id", check_id, "--out", str(out)] + (["--sample-size", str(sample_size)] if sample_size else []) \
        + (["--verbose"] if args.verbose else [])
    log.info("   child process: %s (load average %.2f)", check_id, H.loadavg()[0])
    load_before = H.loadavg()
    data = H.run_child(cmd, out, logger=log)
    if "error" in data:
        return {**data, "check_id": check_id}
    data.update(check_id=check_id, loadavg_before=load_before, loadavg_after=H.loadavg())
    model = sum(v for k, v in data["parts_s"].items() if k.endswith("model load"))
    data["model_load_s"] = round(model, 3)
    data["wall_without_model_load_s"] = round(data["wall_s"] - model, 3)
    data["peak_rss_mb"] = round((data["vm_hwm_kib"] or data["ru_maxrss_kib"]) * 1024 / H.MB, 1)
    statuses = {k: v["status"] for k, v in data["checks"].items()}
    log.info("   %.1fs wall (%.1fs without loading the model), peak RSS %.0f MB, %s: %s", data["wall_s"],
             data["wall_without_model_load_s"], data["peak_rss_mb"], data["status"], statuses)
    for name, c in data["checks"].items():
        if c.get("tests"):
            log.info("     %s: %s", name, ", ".join(f"{t} p={v['p_value']:.4f}" for t, v in c["tests"].items()))
    return data


def scenario(args: argparse.Namespace, data_dir: Path, tmp: Path, label: str, index: str, reference: str,
             checks: tuple[str, ...], sample_size: int | None, end: dt.datetime, qlog: Path,
             repeat: int) -> dict[str, Any]:
    runs = [run_child(args, data_dir, tmp, f"{label}{i + 1}", index, reference, checks, sample_size, end, qlog)
            for i in range(repeat)]
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"index": index, "reference": reference, "checks": list(checks), "sample_size": sample_size,
                           "repeat": repeat, "runs": runs}
    if ok:
        walls = [r["wall_s"] for r in ok]
        out.update(wall_s=walls, wall_min_s=min(walls), wall_max_s=max(walls),
                   wall_median_s=round(statistics.median(walls), 3), cpu_s=[r["cpu_s"] for r in ok],
                   wall_without_model_load_s=[r["wall_without_model_load_s"] for r in ok],
                   peak_rss_mb=[r["peak_rss_mb"] for r in ok], peak_rss_max_mb=max(r["peak_rss_mb"] for r in ok))
    return out


# ----------------------------------------------------------------------------------------------
# 5. the synthetic index of about 100,000 vectors


def purge_index(settings: Settings, store: VectorStore, index: str) -> list[str]:
    """Remove an index completely: its collections, chunk and document rows, versions, alias and
    snapshots (the synthetic index of an earlier run in a kept data directory)."""
    from sqlalchemy import delete, select

    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        collections = list(s.execute(select(state.IndexVersion.collection)
                                     .where(state.IndexVersion.index_name == index)).scalars())
        for model in (state.Chunk, state.Document, state.DriftSnapshot, state.IndexAlias):
            s.execute(delete(model).where(model.index_name == index))
        s.execute(delete(state.IndexVersion).where(state.IndexVersion.index_name == index))
    with store.writer():
        for name in collections:
            if store.has_collection(name):
                store.drop(name)
    return collections


def build_synthetic(settings: Settings, store: VectorStore, target: int, sigma: float) -> dict[str, Any]:
    """Index ``SYNTH_INDEX``: ``target`` vectors in a new collection (the SciFact chunk vectors
    once as they are, then copies with Gaussian noise of ``sigma`` per dimension, re-normalised,
    under their own chunk and document ids), their chunk and document rows in the state store
    (copies of the SciFact rows), and a live version with the SciFact version's pipeline, as
    ``ragops.indexing`` writes them."""
    from sqlalchemy import insert, select

    from ragops import state
    from ragops.indexing import collection_name

    t_start = time.perf_counter()
    purged = purge_index(settings, store, SYNTH_INDEX)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, INDEX)
        assert live is not None
        src_collection, model, pipeline = live.collection, live.embedding_model, live.pipeline
        chunk_rows = {r.chunk_id: r for r in s.execute(select(state.Chunk).where(state.Chunk.index_name == INDEX))
                      .scalars()}
        doc_rows = {(r.source_id, r.doc_id): r for r in s.execute(select(state.Document)
                                                                    .where(state.Document.index_name == INDEX)).scalars()}
        s.expunge_all()
    t0 = time.perf_counter()
    base_ids, base, texts, metas = H.all_vectors(store, src_collection)
    read_s = time.perf_counter() - t0
    missing = [c for c in base_ids if c not in chunk_rows]
    if missing or len(base_ids) != len(chunk_rows):
        raise RuntimeError(f"{src_collection} and the state store disagree ({len(base_ids)} vectors, "
                           f"{len(chunk_rows)} chunk rows, e.g. {missing[:3]})")
    collection = collection_name(SYNTH_INDEX, 1)
    n = len(base_ids)
    total, copies, cosines = 0, 0, []
    chroma_s = state_s = 0.0
    with store.writer():
        store.collection(collection, create=True)
        for copy, vecs, cos in H.noisy_copies(base, target, sigma, SEED):
            take = len(vecs)
            texts_c = texts[:take]
            new_ids, new_metas, rows, docs = [], [], [], {}
            for i in range(take):
                r = chunk_rows[base_ids[i]]
                doc_id = r.doc_id if copy == 0 else f"{r.doc_id}#syn{copy}"
                doc_key = hashlib.sha256(f"{r.source_id}\0{doc_id}".encode()).hexdigest()[:16]
                cid = r.chunk_id if copy == 0 else f"{doc_key}-{r.position:05d}-{r.chunk_id.rsplit('-', 1)[-1]}"
                new_ids.append(cid)
                new_metas.append({**metas[i], "doc_id": doc_id})
                rows.append({"index_name": SYNTH_INDEX, "chunk_id": cid, "source_id": r.source_id, "doc_id": doc_id,
                             "position": r.position, "text_hash": r.text_hash, "n_tokens": r.n_tokens, "text": r.text,
                             "meta": {**(r.meta or {}), "doc_id": doc_id}})
                key = (r.source_id, r.doc_id)
                if key not in docs:
                    d = doc_rows[key]
                    docs[key] = {"index_name": SYNTH_INDEX, "source_id": d.source_id, "doc_id": doc_id,
                                 "content_hash": d.content_hash, "settings_hash": d.settings_hash, "title": d.title,
                                 "uri": d.uri, "origin": d.origin, "n_chunks": 0, "run_id": "bench-synthetic",
                                 "updated_at": state.utcnow()}
                docs[key]["n_chunks"] += 1
            if cos is not None:
                cosines.append(cos)
            t1 = time.perf_counter()
            for i in range(0, take, 10_000):
                store.upsert(collection, new_ids[i:i + 10_000], vecs[i:i + 10_000], texts_c[i:i + 10_000],
                             new_metas[i:i + 10_000])
            t2 = time.perf_counter()
            with state.session_scope(settings.state_db_url) as s:
                s.execute(insert(state.Chunk), rows)
                s.execute(insert(state.Document), list(docs.values()))
            state_s += time.perf_counter() - t2
            chroma_s += t2 - t1
            total += take
            copies = copy + 1
            log.info("   synthetic index: %d/%d vectors written (%.0fs)", total, target, time.perf_counter() - t_start)
        with state.session_scope(settings.state_db_url) as s:
            version = state.IndexVersion(index_name=SYNTH_INDEX, version=1, collection=collection,
                                         embedding_model=model, pipeline=pipeline, built_by="bench",
                                         stats={"chunks": total, "synthetic": True}, status="live",
                                         created_at=state.utcnow())
            s.add(version)
            s.flush()
            s.merge(state.IndexAlias(index_name=SYNTH_INDEX, version_id=version.id))
            state.audit(s, "bench", "index_created", SYNTH_INDEX, collection=collection, synthetic=True)
        count = store.count(collection)
    seconds = time.perf_counter() - t_start
    return {"index": SYNTH_INDEX, "collection": collection, "vectors": count, "target": target, "base_chunks": n,
            "copies": copies, "noise_sigma_per_dimension": sigma, "seed": SEED,
            "cosine_noisy_to_original": H.cosine_stats(cosines),
            "build_s": round(seconds, 3), "read_base_s": round(read_s, 3), "chroma_upsert_s": round(chroma_s, 3),
            "state_rows_s": round(state_s, 3), "purged_collections": purged, **H.index_counts(settings, SYNTH_INDEX),
            "loadavg_after": H.loadavg(),
            "note": ("SYNTHETIC: the SciFact chunk vectors replicated (first copy exact, the others with Gaussian "
                     "noise, re-normalised) with copies of their chunk and document rows; measures the drift "
                     "check's cost at this size, not drift on real data")}


# ----------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace, dataset: Path, tmp: Path, data_dir: Path) -> dict[str, Any]:
    from ragops.vectorstore import VectorStore

    settings = H.open_settings(data_dir)
    qlog = tmp / "querylog"
    settings = settings.replace(drift=dataclasses.replace(settings.drift, query_log=str(qlog)))
    d = settings.drift
    figures: dict[str, Any] = {"data_dir": str(data_dir), "data_dir_given": args.data_dir is not None,
                               "settings": H.settings_facts(settings),
                               "drift_settings": {k: getattr(d, k) for k in (
                                   "checks", "methods", "alpha", "sample_size", "permutations", "seed",
                                   "reference_window", "current_window", "min_queries", "gap_threshold",
                                   "max_gap_share", "psi_threshold", "count_change", "targeted_eval")}}
    store = VectorStore(settings)

    # 1. ingest (and the snapshot before the topic)
    figures["ingest"] = ingest(args, settings, dataset, tmp, store)

    # 2. the query log
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    figures["query_log"] = write_query_log(settings, dataset, qlog, end)
    log.info("2. query log: %d queries, %d in the reference window, %d in the current one (end %s)",
             figures["query_log"]["queries"], figures["query_log"]["reference_window"],
             figures["query_log"]["current_window"], end.isoformat())

    # 3. SciFact size
    log.info("3. SciFact size: reference snapshot of %d vectors, then a full check with sample_size %d",
             args.sample_size, args.sample_size)
    snap = timed_snapshot(settings, INDEX, REFERENCE_SNAPSHOT, args.sample_size, store)
    figures["scifact"] = {"snapshot": snap, **scenario(args, data_dir, tmp, "scifact", INDEX, REFERENCE_SNAPSHOT,
                                                       ALL_CHECKS, args.sample_size, end, qlog, args.repeat)}

    # 4. shifted: the reference taken before the cancer abstracts were added
    if SHIFT_SNAPSHOT in snapshot_names(settings, INDEX):
        log.info("4. shifted: corpus and documents checks against %s", SHIFT_SNAPSHOT)
        figures["shifted"] = scenario(args, data_dir, tmp, "shifted", INDEX, SHIFT_SNAPSHOT, SHIFT_CHECKS,
                                      args.sample_size, end, qlog, 1)
    else:
        why = ("--no-shift" if args.no_shift else
               f"the reused data directory has no snapshot {SHIFT_SNAPSHOT} (only this script's own ingest takes it)")
        log.info("4. shifted scenario skipped: %s", why)
        figures["shifted"] = {"skipped": why}

    # 5. about 100,000 vectors
    target = args.synthetic_chunks or (SYNTHETIC_CHUNKS_SMOKE if args.limit is not None else SYNTHETIC_CHUNKS)
    log.info("5. building the synthetic index %s of %d vectors (noise sigma %g)", SYNTH_INDEX, target, args.noise)
    figures["synthetic"] = build_synthetic(settings, store, target, args.noise)
    log.info("   built in %.1fs: %d vectors, %d chunk rows, %d document rows", figures["synthetic"]["build_s"],
             figures["synthetic"]["vectors"], figures["synthetic"]["chunks"], figures["synthetic"]["documents"])
    try:
        snap = timed_snapshot(settings, SYNTH_INDEX, REFERENCE_SNAPSHOT, None, store)
        log.info("   full check with the default sample_size (%d)", d.sample_size)
        figures["synthetic_check"] = {"snapshot": snap, **scenario(
            args, data_dir, tmp, "synthetic", SYNTH_INDEX, REFERENCE_SNAPSHOT, ALL_CHECKS, None, end, qlog,
            args.repeat)}
    finally:
        if args.data_dir is not None and not args.keep_synthetic:
            purge_index(settings, store, SYNTH_INDEX)
            figures["synthetic"]["dropped_after_run"] = True
    return figures


# ----------------------------------------------------------------------------------------------
# report


def evaluate(f: dict[str, Any]) -> list[H.Target]:
    sc = f.get("synthetic_check", {})
    n = f.get("synthetic", {}).get("vectors", 0)
    name = (f"full drift check, {n:,} vectors, sample {f['drift_settings']['sample_size']}: wall (s), median of "
            f"{sc.get('repeat', 0)} runs (best / worst)")
    if "wall_median_s" in sc:
        v = sc["wall_median_s"]
        return [H.Target(name, f"{H.fmt(v)} ({H.fmt(sc['wall_min_s'])} / {H.fmt(sc['wall_max_s'])})",
                       f"< {SYNTH_CHECK_MAX_S:g}", v < SYNTH_CHECK_MAX_S)]
    return [H.Target(name, "failed" if sc.get("runs") else "not measured", f"< {SYNTH_CHECK_MAX_S:g}", None)]


def expectations(f: dict[str, Any]) -> list[H.Target]:
    """What the tests should say: nothing drifted (random splits), and the shifted corpus drifted."""
    out: list[H.Target] = []
    for key, label in (("scifact", "SciFact size"), ("synthetic_check", "synthetic")):
        for i, r in enumerate(f.get(key, {}).get("runs", []), start=1):
            if "error" in r:
                out.append(H.Target(f"{label} run {i}: no drift (random split)", r["error"], "every check ok", False))
                continue
            st = {k: v["status"] for k, v in r["checks"].items()}
            bad = {k: v for k, v in st.items() if v not in ("ok", "skipped")}
            value = ", ".join(f"{k} {v}" for k, v in st.items())
            out.append(H.Target(f"{label} run {i}: no drift (random split)", value,
                              "ok (quality: skipped, no eval history)", not bad))
    sh = f.get("shifted", {})
    for r in sh.get("runs", []):
        if "error" in r:
            out.append(H.Target("shifted: corpus breach", r["error"], "breach", False))
            continue
        c = r["checks"].get("corpus", {})
        out.append(H.Target("shifted (reference before the cancer abstracts): corpus",
                          f"{c.get('status')} (fired: {', '.join(c.get('fired') or []) or 'none'})", "breach",
                          c.get("status") == "breach"))
    return out


def p_values(c: dict[str, Any]) -> str:
    tests = c.get("tests") or {}
    return ", ".join(f"{t} {v['statistic']:.4g} (p={v['p_value']:.4f})" for t, v in tests.items())


def part_rows(label: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    parts = r["parts_s"]
    top = {k: v for k, v in parts.items() if "/" not in k}
    rest = r["wall_s"] - sum(top.values())
    bits = [f"{k} {v:.2f}" for k, v in top.items()] + [f"other {rest:.2f}"]
    rows = [(f"{label}: seconds per part", "; ".join(bits))]
    inner = {k: v for k, v in parts.items() if "/" in k}
    if inner:
        rows.append((f"{label}: inside the parts (s)", "; ".join(f"{k} {v:.2f}" for k, v in inner.items())))
    return rows


def check_rows(label: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name, c in r["checks"].items():
        if name in ("corpus", "queries") and c.get("tests"):
            rows.append((f"{label}: {name} ({c.get('n_reference')} vs {c.get('n_current')}) -> {c['status']}",
                         p_values(c) + (f"; two_sample {c['seconds']} s" if "seconds" in c else "")
                         + (f"; {c['shared_vectors']:,} current vectors equal to a reference vector"
                            if c.get("shared_vectors") is not None else "")))
        elif name == "documents" and c.get("parts"):
            parts = c["parts"]
            bits = []
            for k in ("n_tokens", "chunks_per_doc"):
                if k in parts:
                    bits.append(f"{k} PSI {parts[k]['psi']:.4f} (KS p={parts[k]['ks']['p_value']:.3g})")
            for k in ("documents_count", "chunks_count"):
                if k in parts:
                    ch = parts[k].get("change")
                    bits.append(f"{k} {parts[k]['reference']} -> {parts[k]['current']}"
                                + (f" ({ch:+.1%})" if ch is not None else ""))
            rows.append((f"{label}: documents -> {c['status']}", "; ".join(bits)))
        elif name == "gaps" and "share" in c:
            ref = c.get("reference_share")
            rows.append((f"{label}: gaps -> {c['status']}",
                         f"{c['uncovered']} of {c['queries']} current queries below cosine {c['threshold']} "
                         f"({c['share']:.1%}; reference window {'-' if ref is None else f'{ref:.1%}'})"))
        else:
            rows.append((f"{label}: {name} -> {c['status']}", str(c.get("reason") or "")))
    return rows


def scenario_rows(label: str, sc: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if sc.get("skipped"):
        return [(label, f"skipped: {sc['skipped']}")]
    if "snapshot" in sc:
        s = sc["snapshot"]
        rows.append((f"{label}: reference snapshot {s['name']}: vectors of chunks, documents, take (s)",
                     f"{s['vectors']:,} of {s['chunks']:,}, {s['documents']:,}, {H.fmt(s['seconds'])}"))
    for i, r in enumerate(sc.get("runs", []), start=1):
        tag = f"{label} run {i}"
        if "error" in r:
            rows.append((tag, r["error"]))
            continue
        rows.append((f"{tag}: check wall / without model load / model load / CPU time of the process (s)",
                     f"{H.fmt(r['wall_s'])} / {H.fmt(r['wall_without_model_load_s'])} / {H.fmt(r['model_load_s'])} / "
                     f"{H.fmt(r['cpu_s'])}"))
        rows.append((f"{tag}: peak RSS of the check process, VmHWM (MB); RSS before the check",
                     f"{r['peak_rss_mb']:,.0f}; {(r['rss_before_check_kib'] or 0) * 1024 / H.MB:,.0f}"))
        rows.append((f"{tag}: load average before / after", f"{r['loadavg_before']} / {r['loadavg_after']}"))
        if i == 1:
            rows += part_rows(tag, r)
            rows += check_rows(tag, r)
        else:
            rows.append((f"{tag}: verdicts", ", ".join(f"{k} {v['status']}" for k, v in r["checks"].items())))
    return rows


def figure_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    ing = f["ingest"]
    if ing.get("skipped"):
        rows.append(("ingest", f"skipped: --data-dir already held index {INDEX} ({ing['live']}: "
                               f"{ing['documents']:,} documents, {ing['chunks']:,} chunks)"))
    else:
        for i, s in enumerate(ing["syncs"], start=1):
            rows.append((f"ingest sync {i}: seconds; added / quarantined; chunks embedded",
                         f"{H.fmt(s['seconds'])}; {s['counts'].get('added')} / {s['counts'].get('quarantined')}; "
                         f"{s['chunks'].get('embedded')}"))
        rows.append(("index scifact: documents / chunks", f"{ing['documents']:,} / {ing['chunks']:,}"))
        if "shift_snapshot" in ing:
            s = ing["shift_snapshot"]
            rows.append(("snapshot before the topic: vectors of chunks, documents",
                         f"{s['vectors']:,} of {s['chunks']:,}, {s['documents']:,}"))
    q = f["query_log"]
    rows.append(("query log: queries, reference / current window",
                 f"{q['queries']}, {q['reference_window']} / {q['current_window']} (random split, seed {q['split_seed']})"))
    rows += scenario_rows("SciFact", f["scifact"])
    rows += scenario_rows("shifted", f["shifted"])
    s = f["synthetic"]
    rows.append(("synthetic index: build (s) = read base + Chroma upserts + state rows, vectors, copies, noise",
                 f"{H.fmt(s['build_s'])} ({H.fmt(s['read_base_s'])} + {H.fmt(s['chroma_upsert_s'])} + "
                 f"{H.fmt(s['state_rows_s'])}), {s['vectors']:,}, {s['copies']}, sigma {s['noise_sigma_per_dimension']} "
                 f"(cosine to original mean {s['cosine_noisy_to_original']['mean']})"))
    rows.append(("synthetic index: chunk / document rows", f"{s['chunks']:,} / {s['documents']:,}"))
    rows += scenario_rows("synthetic", f.get("synthetic_check", {}))
    return rows


def shared_note(f: dict[str, Any]) -> str:
    runs = [r for r in f.get("scifact", {}).get("runs", []) if "error" not in r]
    c = runs[0]["checks"].get("corpus", {}) if runs else {}
    if c.get("shared_vectors") is None or not c.get("n_current"):
        return ""
    ps = ", ".join(f"{v['p_value']:.4g}" for v in (c.get("tests") or {}).values())
    return (f" At SciFact size {c['shared_vectors']:,} of the {c['n_current']:,} current vectors "
            f"({c['shared_vectors'] / c['n_current']:.0%}) equal a reference vector; p-values {ps}.")


def render(results: dict[str, Any], markdown: bool) -> str:
    m, s, d = results["machine"], results["figures"]["settings"], results["figures"]["drift_settings"]
    v = results["versions"]
    facts = (f"date {results['date']}; duration {results['duration_s']:.0f} s; {m['nproc']} CPUs ({m['cpu_model']}); "
             f"{m['mem_total_mb']:,} MB memory; Python {m['python']}; torch {m['torch']}; chromadb {m['chromadb']}; "
             f"numpy {v['numpy']}; scipy {v['scipy']}; scikit-learn {v['scikit-learn']}; model "
             f"{s['embedding_model']}, embedding batch_size {s['embedding_batch_size']}; drift methods "
             f"{', '.join(d['methods'])}, alpha {d['alpha']}, permutations {d['permutations']}, default sample_size "
             f"{d['sample_size']}, windows {d['reference_window']} + {d['current_window']}; {H.load_averages(m)}")
    notes = ["Each check runs in a fresh child process, as the check_drift task would: the wall time is the "
             "`run_check` call, which loads the embedding model itself (the query checks need it); 'without model "
             "load' subtracts that. Peak RSS is the child's VmHWM (peak of its own address space; `ru_maxrss` is "
             "inherited from the parent through exec and is in the JSON for reference).",
             "`two_sample` raises the permutations to ceil(2 / (alpha / number of tests)): with alpha 0.01 over "
             "3 tests, 600 per test, not the configured 200 (see the JSON, `tests.*.permutations`).",
             "Corpus check: the current sample is drawn from the chunks the reference snapshot did not sample (a "
             "snapshot holds at most half of the chunks), so no chunk is on both sides; an unchanged index is two "
             "disjoint random halves. Counted after each check: current vectors byte-identical to a reference "
             "vector (only chunks with identical text can be)."
             + shared_note(results["figures"])]
    if results["figures"].get("synthetic"):
        notes.append(f"The {results['figures']['synthetic']['vectors']:,}-vector index is "
                     f"{results['figures']['synthetic']['note']}.")
    tables = [(["target", "result", "target", "met"], H.target_rows(results["targets"])),
              (["expectation", "result", "expected", "met"], H.target_rows(results["expectations"])),
              (["figure", "value"], [[a, b] for a, b in figure_rows(results["figures"])])]
    return H.render_report(results, "ragops drift check benchmark, BEIR SciFact", facts, tables, markdown, notes)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ragops drift check benchmark on BEIR SciFact (see bench/README.md)")
    H.add_common_args(p, data_dir=True)
    p.add_argument("--sample-size", type=int, default=SCIFACT_SAMPLE,
                   help=f"vectors per side at SciFact size (default {SCIFACT_SAMPLE})")
    p.add_argument("--synthetic-chunks", type=int, default=None, metavar="N",
                   help=f"size of the synthetic index (default {SYNTHETIC_CHUNKS:,}; {SYNTHETIC_CHUNKS_SMOKE:,} "
                        "with --limit)")
    p.add_argument("--noise", type=float, default=NOISE_SIGMA,
                   help=f"Gaussian noise per dimension of the synthetic copies (default {NOISE_SIGMA})")
    p.add_argument("--repeat", type=int, default=3,
                   help="checks per scenario (the shifted one: 1), each in a fresh process (default 3)")
    p.add_argument("--no-shift", action="store_true", help="ingest in one sync: no shifted scenario")
    p.add_argument("--keep-synthetic", action="store_true", help="keep the synthetic index in a --data-dir")
    args = H.check_common_args(p, p.parse_args(argv))
    if args.sample_size < 50:
        p.error("--sample-size must be at least 50")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == [CHILD_COMMAND]:
        return child_main(argv[1:])
    args = parse_args(argv)
    H.setup_logging(args.verbose, log)
    dataset = H.dataset_or_skip(args.dataset, ("corpus.jsonl", "queries.jsonl"))
    if dataset is None:
        return 0

    started = H.utc_now()
    load_start = H.load_at_start(log)
    with H.workspace("ragops-drift-bench-", args.keep_tmp, log) as tmp:
        data_dir = args.data_dir.resolve() if args.data_dir else tmp / "data"
        log.info("working in %s (data dir %s)", tmp, data_dir)
        figures = run(args, dataset, tmp, data_dir)

    targets = evaluate(figures)
    expected = expectations(figures)
    results = H.run_record(RESULT_STEM, SCRIPT, started, args.limit, {"path": str(dataset)}, load_start, targets,
                           figures, versions=H.package_versions(("numpy", "scipy", "scikit-learn", "SQLAlchemy")),
                           expectations=[dataclasses.asdict(t) for t in expected])
    H.publish(args.results_dir, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
