#!/usr/bin/env python
"""Ingest benchmark on BEIR SciFact: throughput, incremental syncs, peak memory, retrieval quality.

One run measures, on a fresh temporary data directory (never the project's own ``.ragops``):

1. full ingest throughput of ``ragops.indexing.sync`` against raw ``SentenceTransformer.encode``
   of exactly the chunk texts the sync stored (ratio raw / ingest, target >= 0.85);
2. a re-sync with no change (fraction of the full ingest, target <= 3%);
3. a sync after 1% of the documents changed (fraction of the full ingest, target <= 5%);
4. peak RSS of a full ingest of the corpus and of the corpus repeated 4 times, each in a child
   process (target <= 1.5 GB, and 4x about equal to 1x);
5. nDCG@10 and Recall@10 on the 300 test queries with document-level search (target >= 0.64).

Usage (from the project root)::

    .venv/bin/python bench/ingest_scifact.py                 # full run, writes bench/results/
    .venv/bin/python bench/ingest_scifact.py --limit 300     # smoke run, *.smoke.json / *.smoke.md

The dataset is read-only input at ``../shared/datasets/scifact`` (relative to the project root);
when it is absent the script says so and exits 0. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness as H

if TYPE_CHECKING:  # ragops (and through it torch) is imported lazily: see measure_memory()
    from ragops.config import Settings
    from ragops.embedding import Embedder

log = logging.getLogger("bench.ingest_scifact")

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "ingest_scifact"

INDEX = "scifact"
K = 10
CHANGE_EVERY = 100  # records 0, 100, 200, ... change: 52 of SciFact's 5,183
CHANGE_SUFFIX = " This sentence was appended by the ragops ingest benchmark."
MEMORY_COPIES = 4
CHILD_COMMAND = "_memory-child"  # hidden sub-command: one ingest in a fresh process

# Targets. "Flat" memory is read as: the 4x ingest peaks at most 25% above the 1x ingest.
ENCODE_RATIO_MIN = 0.85
BASELINE_SPEEDUP_MIN = 3.0  # issue 21: an ingest with the default backend 3x faster than torch's raw encode
RESYNC_FRACTION_MAX = 0.03
CHANGE_FRACTION_MAX = 0.05
PEAK_RSS_MAX_BYTES = 1.5e9
FLAT_RATIO_MAX = 1.25
NDCG_MIN = 0.64
REFERENCE_NDCG = 0.645  # all-MiniLM-L6-v2, exact cosine over whole documents (datasets README)
REFERENCE_RECALL = 0.783

# ----------------------------------------------------------------------------------------------
# helpers: corpus files and metrics


def write_changed(path: Path, every: int = CHANGE_EVERY) -> list[str]:
    """Rewrite ``path`` in place with the text of every ``every``-th record extended."""
    original = list(H.iter_lines(path))
    changed: list[str] = []

    def lines() -> Iterator[str]:
        for i, line in enumerate(original):
            if i % every:
                yield line
                continue
            record = json.loads(line)
            record["text"] = record["text"] + CHANGE_SUFFIX
            changed.append(str(record["_id"]))
            yield json.dumps(record, ensure_ascii=False)

    H.replace_file(path, lines())
    return changed

def write_repeated(corpus: Path, dst: Path, limit: int | None, copies: int) -> int:
    """The corpus ``copies`` times, ids suffixed ``-r1..-rN``, one whole pass after another.

    Every text appears ``copies`` times, so the run-level duplicate-text check would (rightly)
    call it a data incident: the child ingesting it lifts quality.max_duplicate_text_share."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for r in range(1, copies + 1):
            for line in H.iter_lines(corpus, limit):
                record = json.loads(line)
                record["_id"] = f"{record['_id']}-r{r}"
                count += 1
                yield json.dumps(record, ensure_ascii=False)

    H.replace_file(dst, lines())
    return count


def ndcg_at_k(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    """Standard nDCG@k: gain = qrels score, discount log2(rank + 1), ideal ranking from qrels."""
    dcg = sum(rels.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1))
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    relevant = {d for d, g in rels.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


# ----------------------------------------------------------------------------------------------
# helpers: ragops


@contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wall-clock seconds spent in the library's steps while the block runs, found by wrapping
    them: plan, process and commit, and inside process the chunking, quality checks, embedding."""
    from ragops import chunking, embedding, indexing

    wrapped = [(indexing, "plan_sync", "plan"), (indexing, "process_batch", "process"),
               (indexing, "commit_sync", "commit"), (indexing, "validate", "process.quality"),
               (chunking.Chunker, "split", "process.chunking"), (embedding.Embedder, "encode", "process.embedding")]
    with H.timed_calls(wrapped) as spent:
        yield spent


def timed_sync(settings: Settings, source: Path, embedder: Embedder) -> tuple[float, dict[str, Any]]:
    """One ``ragops.indexing.sync``, wall-clock; returns (seconds, summary with a time breakdown)."""
    from ragops.indexing import new_run_id, sync

    with phase_timer() as spent:
        t0 = time.perf_counter()
        report = sync(settings, str(source), INDEX, run_id=new_run_id("bench"), trigger="bench", embedder=embedder)
        seconds = time.perf_counter() - t0
    inner = sum(v for k, v in spent.items() if k.startswith("process."))
    breakdown = {k: round(v, 3) for k, v in sorted(spent.items())}
    breakdown["process.other"] = round(spent.get("process", 0.0) - inner, 3)
    summary = {"counts": report["counts"], "chunks": report["chunks"], "self_check_ok": report["self_check"]["ok"],
               "breakdown_s": breakdown}
    return seconds, summary


def state_counts(settings: Settings) -> tuple[int, int]:
    """(documents, chunks) of the benchmark index in the state store."""
    counts = H.index_counts(settings, INDEX)
    return counts["documents"], counts["chunks"]


def chunk_texts(settings: Settings) -> list[str]:
    """The exact texts the sync embedded (context line + body), as stored in ``chunks.text``."""
    from sqlalchemy import select

    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.Chunk.text).where(state.Chunk.index_name == INDEX)
                              .order_by(state.Chunk.chunk_id)).scalars())


# ----------------------------------------------------------------------------------------------
# 4. peak memory, each ingest in a fresh child process


def child_main(argv: list[str]) -> int:
    """Hidden sub-command: one full ingest in this (fresh) process, figures written as JSON."""
    parser = argparse.ArgumentParser(prog=f"{SCRIPT.name} {CHILD_COMMAND}")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--allow-duplicates", action="store_true",
                        help="set quality.max_duplicate_text_share=1 (the repeated corpus is duplicates by design)")
    parser.add_argument("--export-only", action="store_true",
                        help="only load the embedder, so that the backend's export is written under --data-dir")
    args = parser.parse_args(argv)
    H.setup_logging(args.verbose, log)
    inherited = H.maxrss_kib()
    settings = H.open_settings(args.data_dir)
    if args.allow_duplicates:
        settings = settings.replace(quality=dataclasses.replace(settings.quality, max_duplicate_text_share=1.0))
    embedder, load_s = H.warm_embedder(settings)
    if args.export_only:
        H.write_json(args.out, {"export_s": round(load_s, 3), "ru_maxrss_kib": H.maxrss_kib()})
        return 0
    rss_ready = H.proc_status_kib("VmRSS")
    seconds, summary = timed_sync(settings, args.corpus, embedder)
    docs, chunks = state_counts(settings)
    out = {"ru_maxrss_kib": H.maxrss_kib(), "vm_hwm_kib": H.vm_hwm_kib(),
           "ru_maxrss_at_start_kib": inherited, "rss_after_model_load_kib": rss_ready,
           "model_load_s": round(load_s, 3), "ingest_s": round(seconds, 3), "documents": docs, "chunks": chunks,
           "chunks_per_s": round(chunks / seconds, 2), "sync": summary}
    H.write_json(args.out, out)
    return 0


def run_child(corpus: Path, data_dir: Path, out: Path, verbose: bool, allow_duplicates: bool = False,
              export_only: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(SCRIPT), CHILD_COMMAND, "--corpus", str(corpus), "--data-dir", str(data_dir),
           "--out", str(out)] + (["--verbose"] if verbose else []) + (["--allow-duplicates"] if allow_duplicates else []) \
        + (["--export-only"] if export_only else [])
    return H.run_child(cmd, out, logger=log)


def with_export(export_data: Path, data_dir: Path) -> Path:
    """A data dir holding the backend's export already, as every ingest but a machine's first finds it
    (the export is written once under the data dir and reused; writing it loads torch and the
    sentence-transformers model, which a normal ingest never does)."""
    import shutil

    if (export_data / "models").is_dir():
        shutil.copytree(export_data / "models", data_dir / "models", dirs_exist_ok=True)
    return data_dir


def measure_memory(corpus: Path, tmp: Path, limit: int | None, verbose: bool,
                   copies: int = MEMORY_COPIES) -> dict[str, Any]:
    """Peak RSS of a 1x and a 4x ingest, each in a fresh process.

    Runs before this process imports ragops or torch: on Linux, ru_maxrss survives fork+exec,
    so a child of a 1 GB parent would report at least 1 GB whatever it does itself. VmHWM (the
    peak of the child's own address space) is recorded as a cross-check."""
    parent_kib = H.maxrss_kib()
    one = tmp / "memory" / "corpus-1x.jsonl"
    four = tmp / "memory" / f"corpus-{MEMORY_COPIES}x.jsonl"
    n1 = len(H.write_copy(corpus, one, limit))
    export_data = tmp / "data-memory-export"
    log.info("memory: writing the embedding backend's export in a child process first")
    rx = run_child(one, export_data, tmp / "memory" / "result-export.json", verbose, export_only=True)
    log.info("memory 1x: ingesting %d documents in a child process", n1)
    r1 = run_child(one, with_export(export_data, tmp / "data-memory-1x"), tmp / "memory" / "result-1x.json", verbose)
    out: dict[str, Any] = {"parent_ru_maxrss_at_spawn_kib": parent_kib, "copies": copies, "documents_1x": n1,
                           "export_child": rx, "run_1x": r1}
    if "error" not in r1:
        out["peak_rss_1x_mb"] = round(r1["ru_maxrss_kib"] * 1024 / H.MB, 1)
    if copies == 1:
        return out
    n4 = write_repeated(corpus, four, limit, MEMORY_COPIES)
    log.info("memory %dx: ingesting %d documents in a child process", MEMORY_COPIES, n4)
    r4 = run_child(four, with_export(export_data, tmp / "data-memory-4x"),
                   tmp / "memory" / f"result-{MEMORY_COPIES}x.json", verbose, allow_duplicates=True)
    out.update(documents_4x=n4, run_4x=r4)
    if "error" not in r1 and "error" not in r4:
        out["peak_rss_4x_mb"] = round(r4["ru_maxrss_kib"] * 1024 / H.MB, 1)
        out["ratio_4x_1x"] = round(r4["ru_maxrss_kib"] / r1["ru_maxrss_kib"], 3)
    return out


# ----------------------------------------------------------------------------------------------
# 5. retrieval quality


def measure_retrieval(settings: Settings, embedder: Embedder, queries: dict[str, str],
                      qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    from ragops.retrieval import search
    from ragops.vectorstore import VectorStore

    store = VectorStore(settings)
    ndcgs: list[float] = []
    recalls: list[float] = []
    latencies: list[float] = []
    short = 0
    for qid, text in queries.items():
        t0 = time.perf_counter()
        hits = search(settings, text, k=K, index=INDEX, embedder=embedder, store=store, unique_docs=True)
        latencies.append(time.perf_counter() - t0)
        ranked = [h.doc_id for h in hits]
        short += len(ranked) < K
        ndcgs.append(ndcg_at_k(ranked, qrels[qid]))
        recalls.append(recall_at_k(ranked, qrels[qid]))
    n = len(queries)
    ms = [x * 1000 for x in latencies]
    return {"queries": n, "k": K, "ndcg_at_10": round(sum(ndcgs) / n, 5), "recall_at_10": round(sum(recalls) / n, 5),
            "queries_with_fewer_than_k_docs": short,
            "latency_ms": {"mean": round(statistics.fmean(ms), 2), "p50": round(H.percentile(ms, 50), 2),
                           "p95": round(H.percentile(ms, 95), 2)},
            "reference_raw_model": {"ndcg_at_10": REFERENCE_NDCG, "recall_at_10": REFERENCE_RECALL}}


# ----------------------------------------------------------------------------------------------
# 1-3 and 5 in this process


def run_main(source: Path, data_dir: Path, doc_ids: list[str], queries: dict[str, str],
             qrels: dict[str, dict[str, int]], baseline: str = "torch") -> dict[str, Any]:
    settings = H.open_settings(data_dir)
    embedder, load_s = H.warm_embedder(settings)
    log.info("model loaded and warmed in %.1fs", load_s)
    figures: dict[str, Any] = {"settings": H.settings_facts(settings), "model_load_s": round(load_s, 3)}

    # 1. full ingest vs raw encode of the same texts, same model object
    log.info("1. full ingest of %d documents", len(doc_ids))
    ingest_s, summary = timed_sync(settings, source, embedder)
    docs, chunks = state_counts(settings)
    figures["ingest"] = {"seconds": round(ingest_s, 3), "documents": docs, "chunks": chunks,
                         "chunks_per_s": round(chunks / ingest_s, 2), "docs_per_s": round(docs / ingest_s, 2),
                         "sync": summary}
    log.info("   %.1fs, %d chunks, %.1f chunks/s", ingest_s, chunks, chunks / ingest_s)
    texts = chunk_texts(settings)
    log.info("   raw SentenceTransformer.encode of the same %d chunk texts", len(texts))
    t0 = time.perf_counter()
    embedder.model.encode(texts, batch_size=settings.embedding.batch_size, normalize_embeddings=True,
                          show_progress_bar=False)
    raw_s = time.perf_counter() - t0
    figures["raw_encode"] = {"seconds": round(raw_s, 3), "texts": len(texts),
                             "chunks_per_s": round(len(texts) / raw_s, 2),
                             "ratio_raw_over_ingest": round(raw_s / ingest_s, 4)}
    log.info("   %.1fs, ratio raw/ingest %.3f", raw_s, raw_s / ingest_s)
    if baseline != "none" and baseline != settings.embedding.backend:
        # the same texts through another backend of the same model (torch: what every ingest ran before)
        from ragops.embedding import Embedder

        other = Embedder(dataclasses.replace(settings.embedding, backend=baseline, quantize="none"))
        other.model.encode(["warm-up"], batch_size=1, normalize_embeddings=True)
        log.info("   raw encode of the same texts with the %s backend", baseline)
        t0 = time.perf_counter()
        other.model.encode(texts, batch_size=settings.embedding.batch_size, normalize_embeddings=True,
                           show_progress_bar=False)
        base_s = time.perf_counter() - t0
        figures["baseline_raw_encode"] = {"backend": baseline, "seconds": round(base_s, 3),
                                          "chunks_per_s": round(len(texts) / base_s, 2),
                                          "speedup_ingest_vs_baseline_raw": round(base_s / ingest_s, 3),
                                          "speedup_raw_vs_baseline_raw": round(base_s / raw_s, 3)}
        log.info("   %.1fs: this ingest is %.2fx the %s raw encode", base_s, base_s / ingest_s, baseline)
        del other

    # 2. nothing changed
    log.info("2. re-sync with no change")
    resync_s, summary = timed_sync(settings, source, embedder)
    figures["resync_no_change"] = {"seconds": round(resync_s, 3), "fraction_of_ingest": round(resync_s / ingest_s, 5),
                                   "sync": summary}
    log.info("   %.2fs (%.2f%% of the full ingest)", resync_s, 100 * resync_s / ingest_s)

    # 5. retrieval quality, on the unmodified corpus
    if queries:
        log.info("5. retrieval: %d queries, k=%d, unique_docs=True", len(queries), K)
        figures["retrieval"] = measure_retrieval(settings, embedder, queries, qrels)
        log.info("   nDCG@10 %.4f, Recall@10 %.4f", figures["retrieval"]["ndcg_at_10"],
                 figures["retrieval"]["recall_at_10"])
    else:
        figures["retrieval"] = {"queries": 0, "note": "no test query has all its relevant documents in the subset"}

    # 3. 1% of the documents changed (same file, so the same source id)
    changed = write_changed(source)
    log.info("3. sync after %d of %d documents changed", len(changed), len(doc_ids))
    change_s, summary = timed_sync(settings, source, embedder)
    counts = summary["counts"]
    # documents quarantined by the full ingest were never indexed: an unchanged one is reported as
    # still quarantined and not read again (since the repair step, SciFact as shipped has none)
    never = len(doc_ids) - state_counts(settings)[0]
    counts_ok = (counts["changed"] == len(changed) and counts["added"] == 0 and counts["deleted"] == 0
                 and counts.get("still_quarantined", 0) == never
                 and counts["unchanged"] == len(doc_ids) - len(changed) - never)
    figures["change_1pct"] = {"seconds": round(change_s, 3), "fraction_of_ingest": round(change_s / ingest_s, 5),
                              "expected_changed": len(changed), "expected_added": 0, "expected_still_quarantined": never, "counts_ok": counts_ok,
                              "changed_ids_sample": changed[:5], "sync": summary}
    log.info("   %.2fs (%.2f%% of the full ingest), counts %s", change_s, 100 * change_s / ingest_s, counts)
    figures["main_process_ru_maxrss_kib"] = H.maxrss_kib()
    return figures


# ----------------------------------------------------------------------------------------------
# report


def evaluate(figures: dict[str, Any]) -> list[H.Target]:
    out: list[H.Target] = []
    base = figures.get("baseline_raw_encode")
    if base:
        out.append(H.Target(f"ingest speed: {base['backend']} raw encode / this ingest",
                            base["speedup_ingest_vs_baseline_raw"], f">= {BASELINE_SPEEDUP_MIN}",
                            base["speedup_ingest_vs_baseline_raw"] >= BASELINE_SPEEDUP_MIN))
    ratio = figures["raw_encode"]["ratio_raw_over_ingest"]
    out.append(H.Target("ingest speed: raw encode / ingest time", ratio, f">= {ENCODE_RATIO_MIN}",
                      ratio >= ENCODE_RATIO_MIN))
    frac = figures["resync_no_change"]["fraction_of_ingest"]
    out.append(H.Target("re-sync, no change: share of full ingest", frac, f"<= {RESYNC_FRACTION_MAX}",
                      frac <= RESYNC_FRACTION_MAX))
    ch = figures["change_1pct"]
    out.append(H.Target("1% changed: share of full ingest", ch["fraction_of_ingest"], f"<= {CHANGE_FRACTION_MAX}",
                      ch["fraction_of_ingest"] <= CHANGE_FRACTION_MAX))
    out.append(H.Target("1% changed: counts (changed/added/deleted)",
                      f"{ch['sync']['counts']['changed']}/{ch['sync']['counts']['added']}/"
                      f"{ch['sync']['counts']['deleted']}", f"== {ch['expected_changed']}/{ch.get('expected_added', 0)}/0", ch["counts_ok"]))
    mem = figures.get("memory")
    limit_mb = PEAK_RSS_MAX_BYTES / H.MB
    if mem and "peak_rss_1x_mb" in mem and "peak_rss_4x_mb" not in mem:
        out.append(H.Target("peak RSS, 1x corpus (MB)", mem["peak_rss_1x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_1x_mb"] <= limit_mb))
        for name in (f"peak RSS, {MEMORY_COPIES}x corpus (MB)", f"peak RSS {MEMORY_COPIES}x / 1x (flat)"):
            out.append(H.Target(name, "skipped (--skip-4x)", "-", None))
    elif mem and "peak_rss_1x_mb" in mem:
        out.append(H.Target("peak RSS, 1x corpus (MB)", mem["peak_rss_1x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_1x_mb"] <= limit_mb))
        out.append(H.Target(f"peak RSS, {MEMORY_COPIES}x corpus (MB)", mem["peak_rss_4x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_4x_mb"] <= limit_mb))
        out.append(H.Target(f"peak RSS {MEMORY_COPIES}x / 1x (flat)", mem["ratio_4x_1x"], f"<= {FLAT_RATIO_MAX}",
                          mem["ratio_4x_1x"] <= FLAT_RATIO_MAX))
    else:
        why = "skipped" if not mem else "failed"
        for name in ("peak RSS, 1x corpus (MB)", f"peak RSS, {MEMORY_COPIES}x corpus (MB)",
                     f"peak RSS {MEMORY_COPIES}x / 1x (flat)"):
            out.append(H.Target(name, why, "-", None))
    ret = figures["retrieval"]
    if ret.get("queries"):
        out.append(H.Target("nDCG@10 (document level)", ret["ndcg_at_10"], f">= {NDCG_MIN}", ret["ndcg_at_10"] >= NDCG_MIN))
    else:
        out.append(H.Target("nDCG@10 (document level)", "no queries", f">= {NDCG_MIN}", None))
    return out


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    ing, raw = figures["ingest"], figures["raw_encode"]
    rows = [("documents / chunks in state", f"{ing['documents']} / {ing['chunks']}"),
            ("full ingest (s)", H.fmt(ing["seconds"])),
            ("full ingest (chunks/s)", H.fmt(ing["chunks_per_s"])),
            *breakdown_rows(ing["sync"]["breakdown_s"]),
            ("raw encode, same texts (s)", H.fmt(raw["seconds"])),
            ("raw encode (chunks/s)", H.fmt(raw["chunks_per_s"])),
            *([(f"raw encode with the {b['backend']} backend, same texts (s)", H.fmt(b["seconds"])),
               (f"{b['backend']} raw encode / raw encode / ingest: speedups",
                f"{b['speedup_raw_vs_baseline_raw']}x raw, {b['speedup_ingest_vs_baseline_raw']}x ingest")]
              if (b := figures.get("baseline_raw_encode")) else []),
            ("re-sync, no change (s)", H.fmt(figures["resync_no_change"]["seconds"])),
            ("1% changed (s)", H.fmt(figures["change_1pct"]["seconds"])),
            ("1% changed: chunks embedded / reused / deleted",
             "{embedded} / {reused} / {deleted}".format(**figures["change_1pct"]["sync"]["chunks"]))]
    mem = figures.get("memory")
    if mem and "peak_rss_1x_mb" in mem:
        for tag in ("1x", f"{MEMORY_COPIES}x"):
            if f"run_{tag}" not in mem:  # --skip-4x
                continue
            run = mem[f"run_{tag}"]
            rows.append((f"{tag} ingest in child: docs / chunks / s",
                         f"{run['documents']} / {run['chunks']} / {H.fmt(run['ingest_s'])}"))
            rows.append((f"{tag} peak RSS ru_maxrss / VmHWM (MB)",
                         f"{run['ru_maxrss_kib'] * 1024 / H.MB:.0f} / {(run['vm_hwm_kib'] or 0) * 1024 / H.MB:.0f}"))
        rows.append(("parent peak RSS when children spawned (MB)", f"{mem['parent_ru_maxrss_at_spawn_kib'] * 1024 / H.MB:.0f}"))
    ret = figures["retrieval"]
    if ret.get("queries"):
        rows += [("queries evaluated", str(ret["queries"])), ("Recall@10", H.fmt(ret["recall_at_10"])),
                 ("query latency p50 / p95 (ms)", f"{ret['latency_ms']['p50']} / {ret['latency_ms']['p95']}")]
    return rows


def breakdown_rows(breakdown: dict[str, float]) -> list[tuple[str, str]]:
    order = ["plan", "process", "process.chunking", "process.quality", "process.embedding", "process.other", "commit"]
    return [(f"full ingest: {k.replace('.', ': ')} (s)", H.fmt(breakdown[k])) for k in order if k in breakdown]


def render(results: dict[str, Any], markdown: bool) -> str:
    m, s = results["machine"], results["figures"]["settings"]
    facts = (f"date {results['date']}; {H.cpus_python_torch(m)}; chunk_tokens {s['chunk_tokens']}, "
             f"overlap_tokens {s['overlap_tokens']}, batch_documents {s['batch_documents']}, "
             f"embedding backend {s.get('embedding_backend', 'torch')}, batch_size {s['embedding_batch_size']}; "
             f"{H.load_averages(m)}")
    tables = [(["check", "value", "target", "result"], H.target_rows(results["targets"])),
              (["figure", "value"], [[a, b] for a, b in figure_rows(results["figures"])])]
    return H.render_report(results, "ragops ingest benchmark, BEIR SciFact", facts, tables, markdown)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ragops ingest benchmark on BEIR SciFact (see bench/README.md)")
    p.add_argument("--skip-memory", action="store_true", help="skip the child-process peak-memory runs")
    p.add_argument("--skip-4x", action="store_true", help="measure peak memory of the 1x ingest only")
    p.add_argument("--memory-only", action="store_true",
                   help="only the peak-memory runs (1x and 4x, each in a fresh process): ingest_scifact.memory.{json,md}")
    p.add_argument("--baseline", default="torch", choices=["torch", "onnx", "openvino", "none"],
                   help="also encode the same texts with this backend, for the speedup (default torch)")
    H.add_common_args(p)
    return H.check_common_args(p, p.parse_args(argv))


def main(argv: list[str]) -> int:
    if argv[:1] == [CHILD_COMMAND]:
        return child_main(argv[1:])
    args = parse_args(argv)
    H.setup_logging(args.verbose, log)
    dataset = H.dataset_or_skip(args.dataset)
    if dataset is None:
        return 0

    started = H.utc_now()
    load_start = H.load_at_start(log, "the timings will be noisy (the ratio target especially)")
    with H.workspace("ragops-bench-", args.keep_tmp, log) as tmp:
        log.info("working in %s", tmp)
        source = tmp / "source" / "corpus.jsonl"  # a copy: step 3 rewrites it in place
        doc_ids = H.write_copy(dataset / "corpus.jsonl", source, args.limit)
        queries, qrels = H.test_queries(dataset, set(doc_ids) if args.limit is not None else None)
        log.info("%d documents, %d test queries", len(doc_ids), len(queries))

        memory = None if args.skip_memory else measure_memory(dataset / "corpus.jsonl", tmp, args.limit,
                                                              args.verbose,
                                                              copies=1 if args.skip_4x else MEMORY_COPIES)
        if args.memory_only:
            return publish_memory(args, started, load_start, memory or {})
        figures = run_main(source, tmp / "data-main", doc_ids, queries, qrels, args.baseline)
        figures["memory"] = memory

    targets = evaluate(figures)
    dataset_facts = {"path": str(dataset), "documents": len(doc_ids), "test_queries": len(queries)}
    results = H.run_record(RESULT_STEM, SCRIPT, started, args.limit, dataset_facts, load_start, targets, figures)
    H.publish(args.results_dir, results, render)
    return 0


def publish_memory(args: argparse.Namespace, started: Any, load_start: Any, memory: dict[str, Any]) -> int:
    """--memory-only: the peak-memory figures alone, with the command and the machine."""
    one, four = memory.get("peak_rss_1x_mb"), memory.get("peak_rss_4x_mb")
    results = {"benchmark": "ingest_scifact.memory", "command": H.command_line(SCRIPT), "date": H.iso(started),
               "machine": H.machine_facts(load_start), "limit": args.limit, "memory": memory}
    rows = [["peak RSS, 1x corpus (MB)", H.fmt(one), f"<= {PEAK_RSS_MAX_BYTES / H.MB:.0f}"],
            [f"peak RSS, {MEMORY_COPIES}x corpus (MB)", H.fmt(four), f"<= {PEAK_RSS_MAX_BYTES / H.MB:.0f}"],
            [f"peak RSS {MEMORY_COPIES}x / 1x", H.fmt(memory.get("ratio_4x_1x")), "about 1 (flat)"],
            ["RSS after loading the model, 1x child (MB)",
             H.fmt(round((memory.get("run_1x") or {}).get("rss_after_model_load_kib", 0) / 1024)), ""]]
    md = ("# ragops ingest peak memory, BEIR SciFact\n\n"
          f"command: `{results['command']}`\n\ndate {results['date']}; {H.load_averages(results['machine'])}. "
          "Each ingest runs in a fresh process whose data dir already holds the embedding backend's export "
          "(written once by another child first, as on any machine after its first ingest).\n\n"
          + H.md_table(["figure", "value", "target"], rows) + "\n")
    H.write_results(args.results_dir, "ingest_scifact.memory" + (".smoke" if args.limit else ""), results, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
