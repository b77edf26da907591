#!/usr/bin/env python
"""Dense search latency and recall of a tuned collection, in a fresh process, at 11,411 and 100,000 vectors.

For each size (``--sizes``), in a fresh temporary data directory (embedded Chroma):

1. build a collection through ragops' ``VectorStore`` (``collection(create=True)`` then
   ``upsert`` in a writer section) from 384-d unit vectors: real ones from ``--vectors FILE.npy``
   (rows beyond the file are noisy copies of it), else clustered synthetic vectors (500 Gaussian
   cluster centres plus noise, seeded); one short dummy document and ``{"doc_id": ...}`` each;
   timed;
2. ``VectorStore.finish(name, force=True)``: settle the graph and tune ``ef_search`` (the smallest
   of ``EF_GRID`` whose recall@10 against exact search reaches ``chroma.target_recall``), timed,
   with what it chose, the recall it measured and its own latency before/after (50 queries);
3. in a NEW process (this script's hidden ``_search-child`` sub-command) that reopens the same
   path: the ``ef_search`` in force (the collection's configuration) and the tuning metadata,
   20 warm-up queries, then 300 ``VectorStore.query(name, vector, 10)`` calls one at a time
   (p50/p95 latency), and recall@10 of those 300 queries against exact numpy search over the
   vectors that were written. Queries are the collection's own vectors moved by noise of norm 1
   (cosine about 0.7 to their vector, like the tuning's queries), with another seed than tuning's.

Targets: p95 <= 10 ms at 100,000 vectors; recall@10 >= 0.99 at every size; ef_search in force
in the new process == the ef_search tuning chose, at every size.

Usage (from the project root)::

    .venv/bin/python bench/search_latency.py            # 11,411 and 100,000: bench/results/search_latency.{json,md}
    .venv/bin/python bench/search_latency.py --smoke    # 3,000 only: search_latency.smoke.{json,md}
    .venv/bin/python bench/search_latency.py --vectors scifact_chunks.npy
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness as H

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("bench.search_latency")

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "search_latency"
CHILD_COMMAND = "_search-child"  # hidden sub-command: measure in a fresh process that reopens the store

SIZES = (11_411, 100_000)  # 11,411: SciFact's chunk count at the default chunking
SMOKE_SIZES = (3_000,)
DIM = 384
K = 10
CENTRES = 500
CLUSTER_NOISE = 0.04  # per dimension: a point's cosine to its centre is about 0.79
COPY_NOISE = 0.01  # per dimension, rows beyond --vectors: cosine to the original about 0.98
QUERY_NOISE = 1.0  # norm of the noise added to a query's base vector (as the tuning's PERTURB)
QUERIES, WARMUP = 300, 20
SEED = 20240611
QUERY_SEED = 7  # another than the tuning's (0 + vector count)

P95_MAX_MS, P95_AT = 10.0, 100_000
RECALL_MIN = 0.99


# ----------------------------------------------------------------------------------------------
# vectors


def unit(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def synthetic(n: int, seed: int = SEED) -> np.ndarray:
    """Clustered unit vectors: CENTRES Gaussian centres (unit length), each point a centre plus
    Gaussian noise of CLUSTER_NOISE per dimension, re-normalised."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(CENTRES, DIM)))
    x = centres[rng.integers(0, CENTRES, n)] + rng.normal(0.0, CLUSTER_NOISE, (n, DIM)).astype(np.float32)
    return unit(x)


def from_file(base: np.ndarray, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The first n rows of the real vectors; when the file has fewer, noisy copies fill the rest."""
    import numpy as np

    if len(base) >= n:
        return base[:n], {"real_rows": n, "noisy_copies": 0}
    parts, cosines = [], []
    for _, vecs, cos in H.noisy_copies(base, n, COPY_NOISE, SEED):
        parts.append(vecs)
        if cos is not None:
            cosines.append(cos)
    return unit(np.concatenate(parts)), {"real_rows": len(base), "noisy_copies": n - len(base),
                                         "copy_noise_sigma": COPY_NOISE, "copy_cosine": H.cosine_stats(cosines)}


def ids_for(n: int) -> list[str]:
    return [f"v{i:06d}#0" for i in range(n)]  # zero-padded: sorted order == row order


def queries_for(x: np.ndarray, n: int, seed: int = QUERY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """n of the collection's own vectors (distinct rows, seeded), each moved by noise of norm QUERY_NOISE."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), size=min(n, len(x)), replace=False)
    noise = rng.normal(size=(len(rows), x.shape[1])).astype(np.float32)
    noise *= QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    return unit(x[rows] + noise), rows


def exact_top(x: np.ndarray, q: np.ndarray, k: int = K, block: int = 64) -> list[list[int]]:
    """Row numbers of the exact k nearest by cosine (x and q unit length), ties by row number."""
    import numpy as np

    out: list[list[int]] = []
    for i in range(0, len(q), block):
        sims = q[i:i + block] @ x.T
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k + 1]
        for row, cand in zip(sims, part, strict=True):
            order = sorted(cand.tolist(), key=lambda j: (-round(float(row[j]), 6), j))
            out.append(order[:k])
    return out


# ----------------------------------------------------------------------------------------------
# the measuring child: a new process that reopens the store


def child_main(argv: list[str]) -> int:
    """Hidden sub-command: reopen the store, read ef_search in force, time queries, measure recall."""
    import numpy as np

    p = argparse.ArgumentParser(prog=f"{SCRIPT.name} {CHILD_COMMAND}")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--vectors", type=Path, required=True, help="the .npy of the vectors written (row i = id i)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    H.setup_logging(args.verbose, log)
    from ragops.vectorstore import VectorStore

    settings = H.open_settings(args.data_dir)
    x = np.load(args.vectors)
    ids = ids_for(len(x))
    store = VectorStore(settings)
    t0 = time.perf_counter()
    config = store.search_config(args.collection)
    open_s = time.perf_counter() - t0
    q, rows = queries_for(x, WARMUP + QUERIES)
    warm, timed = q[:WARMUP], q[WARMUP:]
    t0 = time.perf_counter()
    store.query(args.collection, warm[0], K)  # the first query loads the HNSW graph from disk
    first_ms = (time.perf_counter() - t0) * 1000
    for v in warm[1:]:
        store.query(args.collection, v, K)
    ms, got = [], []
    for v in timed:
        t0 = time.perf_counter()
        res = store.query(args.collection, v, K)
        ms.append((time.perf_counter() - t0) * 1000)
        got.append(res["ids"][0])
    exact = exact_top(x, timed)
    hits = sum(len(set(g) & {ids[j] for j in e}) for g, e in zip(got, exact, strict=True))
    own = sum(ids[r] in g for r, g in zip(rows[WARMUP:].tolist(), got, strict=True))
    H.write_json(args.out, {
        "config": config, "open_s": round(open_s, 3), "first_query_ms": round(first_ms, 3),
        "latency": H.latency_summary(ms), "warmup": len(warm),
        "recall_at_10": round(hits / (K * len(timed)), 4),
        "short_results": sum(len(g) < K for g in got),
        "own_vector_in_top10": round(own / len(timed), 4),
        "vm_hwm_kib": H.vm_hwm_kib()})
    return 0


# ----------------------------------------------------------------------------------------------
# one size


def measure_size(n: int, base: np.ndarray | None, tmp: Path, verbose: bool) -> dict[str, Any]:
    import numpy as np

    from ragops.vectorstore import VectorStore

    data_dir = tmp / f"data-{n}"
    name = f"search_latency_{n}"
    if base is None:
        t0 = time.perf_counter()
        x, source = synthetic(n), {"kind": "synthetic", "centres": CENTRES, "cluster_noise_sigma": CLUSTER_NOISE,
                                   "seed": SEED}
        source["generate_s"] = round(time.perf_counter() - t0, 3)
    else:
        x, facts = from_file(base, n)
        source = {"kind": "file", **facts}
    vec_path = tmp / f"vectors-{n}.npy"
    np.save(vec_path, x)
    ids = ids_for(n)
    settings = H.open_settings(data_dir)
    store = VectorStore(settings)
    log.info("%d vectors: building %s", n, name)
    with H.Timer() as build:
        store.collection(name, create=True)
        with store.writer():
            store.upsert(name, ids, x, [f"chunk {i}" for i in range(n)], [{"doc_id": f"v{i:06d}"} for i in range(n)])
    log.info("%d vectors: built in %.1f s; finish(force=True)", n, build.wall)
    with H.Timer() as fin:
        tuning = store.finish(name, force=True)
    log.info("%d vectors: ef_search %s, recall@10 %s (%.1f s)", n, tuning.get("ef_search"), tuning.get("recall"),
             fin.wall)
    in_writer = store.search_config(name)
    tried = list((tuning.get("tried") or {}).values())
    # every ef_search tried measured the same recall: since tune_search measures each value on a fresh
    # load of the index, only data so easy that the smallest value tried is already as good as the
    # largest; below 1.0 (or with tuning not measured on fresh loads) it means the values were not applied
    flat = len(tried) > 1 and len(set(tried)) == 1
    if flat:
        (log.info if tried[0] >= 1.0 and tuning.get("measured_on", "").startswith("fresh") else log.warning)(
            "%d vectors: tuning measured recall@10 %s for every ef_search it tried (%s; measured on %s)", n,
            tried[0], list(tuning["tried"]), tuning.get("measured_on", "the writer's loaded index"))
    del store
    try:  # let go of this process's copy of the graph before the next size
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    except Exception:  # noqa: BLE001 - only memory is at stake
        pass
    out_path = tmp / f"child-{n}.json"
    cmd = [sys.executable, str(SCRIPT), CHILD_COMMAND, "--data-dir", str(data_dir), "--collection", name,
           "--vectors", str(vec_path), "--out", str(out_path)] + (["--verbose"] if verbose else [])
    child = H.run_child(cmd, out_path, env=H.isolated_env(data_dir), logger=log)
    if "error" not in child:
        log.info("%d vectors, new process: ef_search in force %s, p50 %.2f / p95 %.2f ms, recall@10 %.4f", n,
                 child["config"]["ef_search"], child["latency"]["p50_ms"], child["latency"]["p95_ms"],
                 child["recall_at_10"])
    return {"vectors": n, "collection": name, "source": source,
            "build": {"wall_s": round(build.wall, 2), "cpu_s": round(build.cpu, 2),
                      "vectors_per_s": round(n / build.wall, 1)},
            "finish": {"wall_s": round(fin.wall, 2), "cpu_s": round(fin.cpu, 2), "report": tuning,
                       "same_recall_for_every_ef_tried": flat},
            "config_in_writer": in_writer, "new_process": child}


def measure(sizes: list[int], vectors: Path | None, tmp: Path, verbose: bool) -> dict[str, Any]:
    import numpy as np

    base = None
    if vectors is not None:
        base = unit(np.load(vectors).astype(np.float32))
        if base.ndim != 2 or base.shape[1] != DIM:
            raise SystemExit(f"--vectors {vectors}: expected an (n, {DIM}) array, got {base.shape}")
    out: dict[str, Any] = {"vectors": {"kind": "file", "path": str(vectors), "rows": len(base)} if base is not None
                           else {"kind": "synthetic", "centres": CENTRES, "cluster_noise_sigma": CLUSTER_NOISE,
                                 "dim": DIM, "seed": SEED},
                           "k": K, "queries": QUERIES, "warmup": WARMUP, "query_noise_norm": QUERY_NOISE,
                           "sizes": {}}
    for n in sizes:
        out["sizes"][str(n)] = measure_size(n, base, tmp, verbose)
    return out


# ----------------------------------------------------------------------------------------------
# targets and report


def evaluate(fig: dict[str, Any]) -> list[H.Target]:
    targets: list[H.Target] = []
    sizes = fig["sizes"]
    big = sizes.get(str(P95_AT), {}).get("new_process", {})
    p95 = big.get("latency", {}).get("p95_ms")
    targets.append(H.Target(f"query p95 at {P95_AT:,} vectors, new process (ms)", p95, f"<= {P95_MAX_MS}",
                            None if p95 is None else p95 <= P95_MAX_MS))
    for key, s in sizes.items():
        child = s["new_process"]
        rec = child.get("recall_at_10")
        targets.append(H.Target(f"recall@10 at {int(key):,} vectors, new process", rec, f">= {RECALL_MIN}",
                                None if rec is None else rec >= RECALL_MIN))
        chosen = s["finish"]["report"].get("ef_search")
        in_force = child.get("config", {}).get("ef_search")
        targets.append(H.Target(f"ef_search in force after reopening, {int(key):,} vectors", in_force,
                                f"== {chosen} (chosen)", None if "error" in child else in_force == chosen))
    return targets


def render(results: dict[str, Any], markdown: bool) -> str:
    m, f = results["machine"], results["figures"]
    v = f["vectors"]
    what = (f"real vectors from {v['path']} ({v['rows']:,} rows; beyond them noisy copies)" if v["kind"] == "file"
            else f"synthetic clustered unit vectors ({v['dim']}-d, {v['centres']} Gaussian centres, noise sigma "
                 f"{v['cluster_noise_sigma']} per dimension, seed {v['seed']})")
    facts = (f"date {results['date']}; {m['nproc']} CPUs ({m['cpu_model']}); Python {m['python']}; chromadb "
             f"{m['chromadb']}; {what}; {H.load_averages(m)}")
    rows, tune_rows = [], []
    for key, s in f["sizes"].items():
        t, c = s["finish"]["report"], s["new_process"]
        lat = c.get("latency", {})
        cfg = c.get("config", {})
        rows.append([f"{int(key):,}", H.fmt(s["build"]["wall_s"]), H.fmt(s["build"]["vectors_per_s"]),
                     H.fmt(s["finish"]["wall_s"]), str(t.get("ef_search")), str(t.get("recall")),
                     f"{cfg.get('ef_search')} / {cfg.get('tuned_ef_search')}",
                     f"{lat.get('p50_ms', 'n/a')} / {lat.get('p95_ms', 'n/a')}", str(c.get("recall_at_10", "n/a")),
                     str(c.get("first_query_ms", c.get("error", "n/a")))])
        tried = ", ".join(f"{ef}: {r}" for ef, r in (t.get("tried") or {}).items())
        before, after = t.get("latency_before") or {}, t.get("latency_after") or {}
        tune_rows.append([f"{int(key):,}", tried, str(t.get("sample")), str(t.get("candidates")),
                          f"{before.get('p50_ms')} / {before.get('p95_ms')}",
                          f"{after.get('p50_ms')} / {after.get('p95_ms')}"])
    tables = [(["check", "value", "target", "result"], H.target_rows(results["targets"])),
              (["vectors", "build (s)", "vectors/s", "finish (s)", "ef chosen", "tuning recall@10",
                "new process: ef in force / in metadata", "query p50 / p95 (ms)", "recall@10", "first query (ms)"],
               rows),
              (["vectors", "tuning: recall@10 per ef_search tried", "tuning queries", "candidates asked",
                "writer untuned p50 / p95 (ms)", "tuned, fresh load p50 / p95 (ms)"], tune_rows)]
    notes = [f"Build: `VectorStore.upsert` of every vector in one writer section (batches of "
             f"`chroma.upsert_batch_size`). Finish: `VectorStore.finish(name, force=True)` = settle + tune_search. "
             f"Query latency and recall@10: a new process reopening the store, {f['warmup']} warm-up then "
             f"{f['queries']} `VectorStore.query(name, vector, {f['k']})` calls one at a time (documents and metadatas "
             f"included); queries are the collection's own vectors plus noise of norm {f['query_noise_norm']}, exact "
             "neighbours by numpy over the vectors written. The untuned/tuned latencies are tune_search's own 50 "
             "queries: untuned in the writing process (count + over-fetch, or exhaustive up to 5,000 vectors), "
             "tuned on a fresh load of the index with the chosen ef_search (what a new process gets)."]
    flat = [f"{int(k):,}" for k, s in f["sizes"].items() if s["finish"].get("same_recall_for_every_ef_tried")]
    if flat:
        notes.append(f"Warning ({', '.join(flat)} vectors): tune_search measured the same recall@10 for every "
                     "ef_search it tried. chromadb 1.5.9 keeps searching a loaded HNSW index with the ef_search "
                     "it was loaded with (after `collection.modify(ef_search)` the process that modified it "
                     "searches as before, a new process uses the new value), so tune_search measures each value "
                     "on a fresh load of the index (`measured_on` in its report): then the same recall everywhere "
                     "means data where the smallest value tried is already as good as the largest (plausible at "
                     "1.0 only). Any other case, or a report without `measured_on`, means the values were not "
                     "applied and the choice is not the smallest that reaches the target; the new-process figures "
                     "above are what serving gets.")
    return H.render_report(results, "ragops dense search latency and recall (tuned ef_search)", facts, tables,
                           markdown, notes)


def main(argv: list[str]) -> int:
    if argv[:1] == [CHILD_COMMAND]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description="dense search latency and recall of a tuned collection "
                                            "(see bench/README.md)")
    p.add_argument("--sizes", type=lambda s: [int(x.replace("_", "").replace(",", "")) for x in s.split()],
                   default=None, metavar="'N N ...'", help=f"collection sizes (default: {' '.join(map(str, SIZES))})")
    p.add_argument("--smoke", action="store_true",
                   help=f"smoke run: {SMOKE_SIZES[0]:,} vectors only; results go to *.smoke.json / *.smoke.md")
    p.add_argument("--vectors", type=Path, default=None, metavar="FILE.npy",
                   help=f"real (n, {DIM}) vectors (e.g. SciFact's chunk embeddings) instead of synthetic ones")
    H.add_common_args(p, dataset=False, limit=False, render=True)
    args = H.check_common_args(p, p.parse_args(argv))
    if args.render:
        results = json.loads(args.render.read_text())
        H.write_results(args.render.parent, args.render.stem, results, render(results, True))
        return 0
    if args.smoke and args.sizes:
        p.error("--smoke and --sizes exclude each other")
    sizes = list(SMOKE_SIZES) if args.smoke else (args.sizes or list(SIZES))
    if any(n < WARMUP + QUERIES for n in sizes):
        p.error(f"every size must be at least {WARMUP + QUERIES} (the queries are distinct own vectors)")
    if args.vectors is not None and not args.vectors.is_file():
        p.error(f"--vectors {args.vectors}: no such file")
    H.setup_logging(args.verbose, log)
    started = H.utc_now()
    load_start = H.load_at_start(log)
    with H.workspace("ragops-bench-search-", args.keep_tmp, log) as tmp:
        figures = measure(sizes, args.vectors, tmp, args.verbose)
    results = H.run_record(RESULT_STEM, SCRIPT, started, SMOKE_SIZES[0] if args.smoke else None, figures["vectors"],
                           load_start, evaluate(figures), figures)
    H.publish(args.results_dir, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
