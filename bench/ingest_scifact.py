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
import datetime as dt
import functools
import json
import logging
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ragops (and through it torch) is imported lazily: see measure_memory()
    from ragops.config import Settings
    from ragops.embedding import Embedder

log = logging.getLogger("bench.ingest_scifact")

SCRIPT = Path(__file__).resolve()
PROJECT_ROOT = SCRIPT.parent.parent
DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"
RESULTS_DIR = SCRIPT.parent / "results"
RESULT_STEM = "ingest_scifact"

INDEX = "scifact"
K = 10
CHANGE_EVERY = 100  # records 0, 100, 200, ... change: 52 of SciFact's 5,183
CHANGE_SUFFIX = " This sentence was appended by the ragops ingest benchmark."
MEMORY_COPIES = 4
CHILD_COMMAND = "_memory-child"  # hidden sub-command: one ingest in a fresh process
MB = 1_000_000

# Targets. "Flat" memory is read as: the 4x ingest peaks at most 25% above the 1x ingest.
ENCODE_RATIO_MIN = 0.85
RESYNC_FRACTION_MAX = 0.03
CHANGE_FRACTION_MAX = 0.05
PEAK_RSS_MAX_BYTES = 1.5e9
FLAT_RATIO_MAX = 1.25
NDCG_MIN = 0.64
REFERENCE_NDCG = 0.645  # all-MiniLM-L6-v2, exact cosine over whole documents (datasets README)
REFERENCE_RECALL = 0.783

# Variables that could point the benchmark at a real state store or Chroma server.
ISOLATED_ENV = ("RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_MODE", "RAGOPS_CHROMA_URL", "RAGOPS_CHROMA_TOKEN")


# ----------------------------------------------------------------------------------------------
# helpers: logging, process memory, corpus files


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)


def maxrss_kib() -> int:
    """Peak RSS of this process in KiB (Linux). Note: a child inherits its parent's peak."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def proc_kib(path: str, field: str) -> int | None:
    """A figure in KiB from a /proc file (``/proc/self/status`` VmHWM: peak RSS of the current
    address space; ``/proc/meminfo``: machine memory)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_status_kib(field: str) -> int | None:
    return proc_kib("/proc/self/status", field)


def iter_lines(path: Path, limit: int | None = None) -> Iterator[str]:
    """Non-empty lines of a JSONL file (without line ends), at most ``limit`` of them."""
    n = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            n += 1
            yield line


def replace_file(path: Path, lines: Iterator[str]) -> None:
    """Write lines to ``path`` atomically (same path, so the same ragops source id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
    os.replace(tmp, path)


def write_copy(corpus: Path, dst: Path, limit: int | None) -> list[str]:
    """Copy the (first ``limit``) records of the corpus; return their ids in file order."""
    ids: list[str] = []

    def lines() -> Iterator[str]:
        for line in iter_lines(corpus, limit):
            ids.append(str(json.loads(line)["_id"]))
            yield line

    replace_file(dst, lines())
    return ids


def write_changed(path: Path, every: int = CHANGE_EVERY) -> list[str]:
    """Rewrite ``path`` in place with the text of every ``every``-th record extended."""
    original = list(iter_lines(path))
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

    replace_file(path, lines())
    return changed


def write_repeated(corpus: Path, dst: Path, limit: int | None, copies: int) -> int:
    """The corpus ``copies`` times, ids suffixed ``-r1..-rN``, one whole pass after another.

    Every text appears ``copies`` times, so the run-level duplicate-text check would (rightly)
    call it a data incident: the child ingesting it lifts quality.max_duplicate_text_share."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for r in range(1, copies + 1):
            for line in iter_lines(corpus, limit):
                record = json.loads(line)
                record["_id"] = f"{record['_id']}-r{r}"
                count += 1
                yield json.dumps(record, ensure_ascii=False)

    replace_file(dst, lines())
    return count


# ----------------------------------------------------------------------------------------------
# helpers: BEIR files and metrics


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {corpus id: score}; tolerates the header row and CRLF line ends."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            continue  # header row ("query-id corpus-id score") or a blank line
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def load_queries(path: Path, wanted: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in iter_lines(path):
        record = json.loads(line)
        if str(record["_id"]) in wanted:
            out[str(record["_id"])] = str(record["text"])
    return out


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


def open_settings(data_dir: Path) -> Settings:
    """Settings for a fresh data dir: project YAML (or RAGOPS_CONFIG), migrated state store."""
    for name in ISOLATED_ENV:
        if os.environ.pop(name, None) is not None:
            log.warning("ignoring %s: the benchmark always uses its own temporary embedded store", name)
    os.environ["RAGOPS_DATA_DIR"] = str(data_dir)  # before load_settings, which reads it
    from ragops import state
    from ragops.config import load_settings

    settings = load_settings()
    if settings.chroma.mode != "embedded":
        settings = settings.replace(chroma=dataclasses.replace(settings.chroma, mode="embedded"))
    state.upgrade(settings.state_db_url)
    return settings


def warm_embedder(settings: Settings) -> tuple[Embedder, float]:
    """Load the tokenizer and the model and encode one string, so no timing includes loading."""
    from ragops.embedding import Embedder

    t0 = time.perf_counter()
    embedder = Embedder(settings.embedding)
    _ = embedder.tokenizer  # the chunker's tokenizer: loaded lazily by the first batch otherwise
    embedder.model.encode(["warm-up"], batch_size=1, normalize_embeddings=True, show_progress_bar=False)
    return embedder, time.perf_counter() - t0


@contextmanager
def timed_calls(wrapped: list[tuple[Any, str, str]]) -> Iterator[dict[str, float]]:
    """Wall-clock seconds spent in each (owner, attribute, label) callable while the block runs,
    found by wrapping them (the library itself is not changed)."""
    spent: dict[str, float] = {}
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in wrapped]

    def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    for (owner, attr, fn), (_, _, label) in zip(originals, wrapped, strict=True):
        setattr(owner, attr, timed(fn, label))
    try:
        yield spent
    finally:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)


@contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wall-clock seconds spent in the library's steps while the block runs, found by wrapping
    them: plan, process and commit, and inside process the chunking, quality checks, embedding."""
    from ragops import chunking, embedding, indexing

    wrapped = [(indexing, "plan_sync", "plan"), (indexing, "process_batch", "process"),
               (indexing, "commit_sync", "commit"), (indexing, "validate", "process.quality"),
               (chunking.Chunker, "split", "process.chunking"), (embedding.Embedder, "encode", "process.embedding")]
    with timed_calls(wrapped) as spent:
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
    from sqlalchemy import func, select

    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        docs = s.execute(select(func.count()).select_from(state.Document)
                         .where(state.Document.index_name == INDEX)).scalar_one()
        chunks = s.execute(select(func.count()).select_from(state.Chunk)
                           .where(state.Chunk.index_name == INDEX)).scalar_one()
    return int(docs), int(chunks)


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
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    inherited = maxrss_kib()
    settings = open_settings(args.data_dir)
    if args.allow_duplicates:
        settings = settings.replace(quality=dataclasses.replace(settings.quality, max_duplicate_text_share=1.0))
    embedder, load_s = warm_embedder(settings)
    rss_ready = proc_status_kib("VmRSS")
    seconds, summary = timed_sync(settings, args.corpus, embedder)
    docs, chunks = state_counts(settings)
    out = {"ru_maxrss_kib": maxrss_kib(), "vm_hwm_kib": proc_status_kib("VmHWM"),
           "ru_maxrss_at_start_kib": inherited, "rss_after_model_load_kib": rss_ready,
           "model_load_s": round(load_s, 3), "ingest_s": round(seconds, 3), "documents": docs, "chunks": chunks,
           "chunks_per_s": round(chunks / seconds, 2), "sync": summary}
    args.out.write_text(json.dumps(out, indent=2))
    return 0


def run_child(corpus: Path, data_dir: Path, out: Path, verbose: bool, allow_duplicates: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(SCRIPT), CHILD_COMMAND, "--corpus", str(corpus), "--data-dir", str(data_dir),
           "--out", str(out)] + (["--verbose"] if verbose else []) + (["--allow-duplicates"] if allow_duplicates else [])
    log.info("child process: %s", shlex.join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"child exited with code {proc.returncode}", "command": shlex.join(cmd)}
    data: dict[str, Any] = json.loads(out.read_text())
    data["process_wall_s"] = round(time.perf_counter() - t0, 3)
    return data


def measure_memory(corpus: Path, tmp: Path, limit: int | None, verbose: bool,
                   copies: int = MEMORY_COPIES) -> dict[str, Any]:
    """Peak RSS of a 1x and a 4x ingest, each in a fresh process.

    Runs before this process imports ragops or torch: on Linux, ru_maxrss survives fork+exec,
    so a child of a 1 GB parent would report at least 1 GB whatever it does itself. VmHWM (the
    peak of the child's own address space) is recorded as a cross-check."""
    parent_kib = maxrss_kib()
    one = tmp / "memory" / "corpus-1x.jsonl"
    four = tmp / "memory" / f"corpus-{MEMORY_COPIES}x.jsonl"
    n1 = len(write_copy(corpus, one, limit))
    log.info("memory 1x: ingesting %d documents in a child process", n1)
    r1 = run_child(one, tmp / "data-memory-1x", tmp / "memory" / "result-1x.json", verbose)
    out: dict[str, Any] = {"parent_ru_maxrss_at_spawn_kib": parent_kib, "copies": copies, "documents_1x": n1,
                           "run_1x": r1}
    if "error" not in r1:
        out["peak_rss_1x_mb"] = round(r1["ru_maxrss_kib"] * 1024 / MB, 1)
    if copies == 1:
        return out
    n4 = write_repeated(corpus, four, limit, MEMORY_COPIES)
    log.info("memory %dx: ingesting %d documents in a child process", MEMORY_COPIES, n4)
    r4 = run_child(four, tmp / "data-memory-4x", tmp / "memory" / f"result-{MEMORY_COPIES}x.json", verbose,
                   allow_duplicates=True)
    out.update(documents_4x=n4, run_4x=r4)
    if "error" not in r1 and "error" not in r4:
        out["peak_rss_4x_mb"] = round(r4["ru_maxrss_kib"] * 1024 / MB, 1)
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
    ms = sorted(x * 1000 for x in latencies)
    return {"queries": n, "k": K, "ndcg_at_10": round(sum(ndcgs) / n, 5), "recall_at_10": round(sum(recalls) / n, 5),
            "queries_with_fewer_than_k_docs": short,
            "latency_ms": {"mean": round(statistics.fmean(ms), 2), "p50": round(ms[n // 2], 2),
                           "p95": round(ms[min(n - 1, math.ceil(0.95 * n) - 1)], 2)},
            "reference_raw_model": {"ndcg_at_10": REFERENCE_NDCG, "recall_at_10": REFERENCE_RECALL}}


# ----------------------------------------------------------------------------------------------
# 1-3 and 5 in this process


def run_main(source: Path, data_dir: Path, doc_ids: list[str], queries: dict[str, str],
             qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    settings = open_settings(data_dir)
    embedder, load_s = warm_embedder(settings)
    log.info("model loaded and warmed in %.1fs", load_s)
    figures: dict[str, Any] = {"settings": settings_facts(settings), "model_load_s": round(load_s, 3)}

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
    # documents quarantined by the full ingest were never indexed: every sync plans them as added
    # again (and quarantines them again), so they are expected here too
    never = len(doc_ids) - state_counts(settings)[0]
    counts_ok = (counts["changed"] == len(changed) and counts["added"] == never and counts["deleted"] == 0
                 and counts["quarantined"] == never and counts["unchanged"] == len(doc_ids) - len(changed) - never)
    figures["change_1pct"] = {"seconds": round(change_s, 3), "fraction_of_ingest": round(change_s / ingest_s, 5),
                              "expected_changed": len(changed), "expected_added": never, "counts_ok": counts_ok,
                              "changed_ids_sample": changed[:5], "sync": summary}
    log.info("   %.2fs (%.2f%% of the full ingest), counts %s", change_s, 100 * change_s / ingest_s, counts)
    figures["main_process_ru_maxrss_kib"] = maxrss_kib()
    return figures


# ----------------------------------------------------------------------------------------------
# report


@dataclasses.dataclass
class Target:
    name: str
    value: float | int | str | None
    target: str
    passed: bool | None  # None: not measured


def evaluate(figures: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    ratio = figures["raw_encode"]["ratio_raw_over_ingest"]
    out.append(Target("ingest speed: raw encode / ingest time", ratio, f">= {ENCODE_RATIO_MIN}",
                      ratio >= ENCODE_RATIO_MIN))
    frac = figures["resync_no_change"]["fraction_of_ingest"]
    out.append(Target("re-sync, no change: share of full ingest", frac, f"<= {RESYNC_FRACTION_MAX}",
                      frac <= RESYNC_FRACTION_MAX))
    ch = figures["change_1pct"]
    out.append(Target("1% changed: share of full ingest", ch["fraction_of_ingest"], f"<= {CHANGE_FRACTION_MAX}",
                      ch["fraction_of_ingest"] <= CHANGE_FRACTION_MAX))
    out.append(Target("1% changed: counts (changed/added/deleted)",
                      f"{ch['sync']['counts']['changed']}/{ch['sync']['counts']['added']}/"
                      f"{ch['sync']['counts']['deleted']}", f"== {ch['expected_changed']}/{ch.get('expected_added', 0)}/0", ch["counts_ok"]))
    mem = figures.get("memory")
    limit_mb = PEAK_RSS_MAX_BYTES / MB
    if mem and "peak_rss_1x_mb" in mem and "peak_rss_4x_mb" not in mem:
        out.append(Target("peak RSS, 1x corpus (MB)", mem["peak_rss_1x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_1x_mb"] <= limit_mb))
        for name in (f"peak RSS, {MEMORY_COPIES}x corpus (MB)", f"peak RSS {MEMORY_COPIES}x / 1x (flat)"):
            out.append(Target(name, "skipped (--skip-4x)", "-", None))
    elif mem and "peak_rss_1x_mb" in mem:
        out.append(Target("peak RSS, 1x corpus (MB)", mem["peak_rss_1x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_1x_mb"] <= limit_mb))
        out.append(Target(f"peak RSS, {MEMORY_COPIES}x corpus (MB)", mem["peak_rss_4x_mb"], f"<= {limit_mb:.0f}",
                          mem["peak_rss_4x_mb"] <= limit_mb))
        out.append(Target(f"peak RSS {MEMORY_COPIES}x / 1x (flat)", mem["ratio_4x_1x"], f"<= {FLAT_RATIO_MAX}",
                          mem["ratio_4x_1x"] <= FLAT_RATIO_MAX))
    else:
        why = "skipped" if not mem else "failed"
        for name in ("peak RSS, 1x corpus (MB)", f"peak RSS, {MEMORY_COPIES}x corpus (MB)",
                     f"peak RSS {MEMORY_COPIES}x / 1x (flat)"):
            out.append(Target(name, why, "-", None))
    ret = figures["retrieval"]
    if ret.get("queries"):
        out.append(Target("nDCG@10 (document level)", ret["ndcg_at_10"], f">= {NDCG_MIN}", ret["ndcg_at_10"] >= NDCG_MIN))
    else:
        out.append(Target("nDCG@10 (document level)", "no queries", f">= {NDCG_MIN}", None))
    return out


def settings_facts(settings: Settings) -> dict[str, Any]:
    return {"config_file": str(settings.source_file) if settings.source_file else None,
            "chunk_tokens": settings.chunking.chunk_tokens, "overlap_tokens": settings.chunking.overlap_tokens,
            "batch_documents": settings.ingest.batch_documents, "embedding_batch_size": settings.embedding.batch_size,
            "embedding_model": settings.embedding.model, "device": settings.embedding.device,
            "normalize": settings.embedding.normalize, "chroma_mode": settings.chroma.mode,
            "chroma_upsert_batch_size": settings.chroma.upsert_batch_size}


def machine_facts(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = None
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)
    except OSError:
        pass
    torch_threads = None
    if "torch" in sys.modules:
        torch_threads = int(sys.modules["torch"].get_num_threads())
    mem_total = proc_meminfo_kib("MemTotal")
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu,
            "mem_total_mb": round(mem_total * 1024 / MB) if mem_total else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": version("torch"), "torch_threads": torch_threads,
            "sentence_transformers": version("sentence-transformers"), "transformers": version("transformers"),
            "chromadb": version("chromadb"), "ragops": version("ragops"),
            "loadavg_at_start": [round(x, 2) for x in load_at_start], "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def proc_meminfo_kib(field: str) -> int | None:
    return proc_kib("/proc/meminfo", field)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    ing, raw = figures["ingest"], figures["raw_encode"]
    rows = [("documents / chunks in state", f"{ing['documents']} / {ing['chunks']}"),
            ("full ingest (s)", fmt(ing["seconds"])),
            ("full ingest (chunks/s)", fmt(ing["chunks_per_s"])),
            *breakdown_rows(ing["sync"]["breakdown_s"]),
            ("raw encode, same texts (s)", fmt(raw["seconds"])),
            ("raw encode (chunks/s)", fmt(raw["chunks_per_s"])),
            ("re-sync, no change (s)", fmt(figures["resync_no_change"]["seconds"])),
            ("1% changed (s)", fmt(figures["change_1pct"]["seconds"])),
            ("1% changed: chunks embedded / reused / deleted",
             "{embedded} / {reused} / {deleted}".format(**figures["change_1pct"]["sync"]["chunks"]))]
    mem = figures.get("memory")
    if mem and "peak_rss_1x_mb" in mem:
        for tag in ("1x", f"{MEMORY_COPIES}x"):
            if f"run_{tag}" not in mem:  # --skip-4x
                continue
            run = mem[f"run_{tag}"]
            rows.append((f"{tag} ingest in child: docs / chunks / s",
                         f"{run['documents']} / {run['chunks']} / {fmt(run['ingest_s'])}"))
            rows.append((f"{tag} peak RSS ru_maxrss / VmHWM (MB)",
                         f"{run['ru_maxrss_kib'] * 1024 / MB:.0f} / {(run['vm_hwm_kib'] or 0) * 1024 / MB:.0f}"))
        rows.append(("parent peak RSS when children spawned (MB)", f"{mem['parent_ru_maxrss_at_spawn_kib'] * 1024 / MB:.0f}"))
    ret = figures["retrieval"]
    if ret.get("queries"):
        rows += [("queries evaluated", str(ret["queries"])), ("Recall@10", fmt(ret["recall_at_10"])),
                 ("query latency p50 / p95 (ms)", f"{ret['latency_ms']['p50']} / {ret['latency_ms']['p95']}")]
    return rows


def breakdown_rows(breakdown: dict[str, float]) -> list[tuple[str, str]]:
    order = ["plan", "process", "process.chunking", "process.quality", "process.embedding", "process.other", "commit"]
    return [(f"full ingest: {k.replace('.', ': ')} (s)", fmt(breakdown[k])) for k in order if k in breakdown]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line, *body])


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def render(results: dict[str, Any], markdown: bool) -> str:
    table = md_table if markdown else text_table
    targets = [[t["name"], fmt(t["value"]), t["target"], verdict(t["passed"])] for t in results["targets"]]
    figs = [[a, b] for a, b in figure_rows(results["figures"])]
    m, s = results["machine"], results["figures"]["settings"]
    head = (f"{'# ' if markdown else ''}ragops ingest benchmark, BEIR SciFact"
            f"{' (SMOKE RUN: --limit, figures not meaningful)' if results['smoke'] else ''}")
    facts = (f"date {results['date']}; {m['nproc']} CPUs ({m['cpu_model']}); Python {m['python']}; "
             f"torch {m['torch']} ({m['torch_threads']} threads); chunk_tokens {s['chunk_tokens']}, "
             f"overlap_tokens {s['overlap_tokens']}, batch_documents {s['batch_documents']}, "
             f"embedding batch_size {s['embedding_batch_size']}; load average at start "
             f"{m['loadavg_at_start']}, at end {m['loadavg_at_end']}")
    cmd = f"`{results['command']}`" if markdown else results["command"]
    parts = [head, "", f"command: {cmd}", "", facts, "", table(["check", "value", "target", "result"], targets),
             "", table(["figure", "value"], figs), "",
             f"all targets met: {results['all_passed']}"]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ragops ingest benchmark on BEIR SciFact (see bench/README.md)")
    p.add_argument("--dataset", type=Path, default=None,
                   help=f"BEIR SciFact folder (default: {DEFAULT_DATASET})")
    p.add_argument("--skip-memory", action="store_true", help="skip the child-process peak-memory runs")
    p.add_argument("--skip-4x", action="store_true", help="measure peak memory of the 1x ingest only")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="smoke run: first N documents only, results go to *.smoke.json / *.smoke.md")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary data directories")
    p.add_argument("-v", "--verbose", action="store_true", help="show ragops' own INFO logs")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == [CHILD_COMMAND]:
        return child_main(argv[1:])
    args = parse_args(argv)
    setup_logging(args.verbose)
    dataset = args.dataset.resolve() if args.dataset else DEFAULT_DATASET
    corpus, queries_file, qrels_file = (dataset / "corpus.jsonl", dataset / "queries.jsonl",
                                        dataset / "qrels" / "test.tsv")
    missing = [str(p) for p in (corpus, queries_file, qrels_file) if not p.is_file()]
    if missing:
        print(f"SKIP: BEIR SciFact not found ({', '.join(missing)} missing). Put the dataset at "
              f"{DEFAULT_DATASET} or pass --dataset DIR.")
        return 0

    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5 * (os.cpu_count() or 1):
        log.warning("load average is %.2f on %d CPUs: other processes compete for the CPU and the timings "
                    "will be noisy (the ratio target especially)", load_at_start[0], os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="ragops-bench-"))
    log.info("working in %s", tmp)
    try:
        source = tmp / "source" / "corpus.jsonl"  # a copy: step 3 rewrites it in place
        doc_ids = write_copy(corpus, source, args.limit)
        in_subset = set(doc_ids)
        qrels = {q: r for q, r in load_qrels(qrels_file).items()
                 if args.limit is None or all(d in in_subset for d in r)}
        queries = load_queries(queries_file, set(qrels))
        qrels = {q: qrels[q] for q in queries}
        log.info("%d documents, %d test queries", len(doc_ids), len(queries))

        memory = None if args.skip_memory else measure_memory(corpus, tmp, args.limit, args.verbose,
                                                              copies=1 if args.skip_4x else MEMORY_COPIES)
        figures = run_main(source, tmp / "data-main", doc_ids, queries, qrels)
        figures["memory"] = memory
    finally:
        if args.keep_tmp:
            log.info("kept %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    targets = evaluate(figures)
    results: dict[str, Any] = {
        "benchmark": RESULT_STEM, "smoke": args.limit is not None, "limit": args.limit,
        "command": shlex.join(sys.orig_argv), "cwd": os.getcwd(), "date": started.isoformat(timespec="seconds"),
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "dataset": {"path": str(dataset), "documents": len(doc_ids), "test_queries": len(queries)},
        "machine": machine_facts(load_at_start),
        "targets": [dataclasses.asdict(t) for t in targets],
        "all_passed": all(t.passed for t in targets if t.passed is not None),
        "figures": figures,
    }
    stem = RESULT_STEM + (".smoke" if args.limit is not None else "")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS_DIR / f"{stem}.md").write_text(render(results, markdown=True))
    print(render(results, markdown=False))
    print(f"results: {RESULTS_DIR / (stem + '.json')} and {RESULTS_DIR / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
