#!/usr/bin/env python
"""Blue/green index rebuilds on BEIR SciFact: rebuild cost, retrieval after the swap, search latency.

One run, on a fresh temporary data directory (or ``--data-dir DIR`` holding an earlier ingest;
never the project's own ``.ragops``), in one process (one writer of the embedded Chroma):

1. ingest ``corpus.jsonl`` into the index ``scifact`` with ``ragops.indexing.sync`` (skipped when
   ``--data-dir`` already holds it), and set the BEIR test split, converted with
   ``ragops.evaluation.datasets.import_beir`` (what ``ragops eval import-beir`` runs), as the
   index's golden set, so the rebuild's retrieval gate runs;
2. time a same-model rebuild (``ragops.lifecycle.rebuild``: stored vectors reused) and a forced
   rebuild (``force=True``: every chunk embedded again); target: same-model / forced <= 0.15;
3. nDCG@10 on the 300 test queries on the live version after both rebuilds, dense and hybrid,
   document-level ranking (``search(..., unique_docs=True)``); targets 0.64 and 0.70;
4. top-10 search latency p50/p95 with and without the query embedding, on the live collection
   and on a *synthetic* scratch collection of about 100,000 vectors (the SciFact chunk vectors
   replicated with small Gaussian noise, re-normalised); target: p95 <= 10 ms without the
   embedding.

Usage (from the project root)::

    .venv/bin/python bench/rebuild_scifact.py                 # writes bench/results/rebuild_scifact.{json,md}
    .venv/bin/python bench/rebuild_scifact.py --limit 500     # smoke run: *.smoke.json / *.smoke.md

The dataset is read-only input at ``../shared/datasets/scifact`` (relative to the project root);
when it is absent the script says so and exits 0. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness as H

if TYPE_CHECKING:
    import numpy as np

    from ragops.config import Settings
    from ragops.embedding import Embedder
    from ragops.vectorstore import VectorStore

log = logging.getLogger("bench.rebuild_scifact")

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "rebuild_scifact"

INDEX = "scifact"
K = 10
SYNTHETIC_COLLECTION = "bench-synthetic-scale"  # not "<index>__v<N>": no rebuild cleanup touches it
SYNTHETIC_CHUNKS = 100_000
SYNTHETIC_CHUNKS_SMOKE = 5_000
NOISE_SIGMA = 0.01  # per dimension; a 384-d unit vector moves by about 0.2 (cosine to the original ~0.98)
SEED = 13
WARMUP_QUERIES = 20

# Targets
RATIO_MAX = 0.15
DENSE_NDCG_MIN = 0.64
HYBRID_NDCG_MIN = 0.70
P95_MS_MAX = 10.0


# ----------------------------------------------------------------------------------------------
# helpers


@contextmanager
def rebuild_phases() -> Iterator[dict[str, float]]:
    """Wall-clock seconds spent in the rebuild's own steps, found by wrapping the library's
    functions while the block runs (the library itself is not changed)."""
    from ragops import embedding, lifecycle, retrieval

    wrapped = [(lifecycle, "_cleanup_partial", "cleanup"), (lifecycle, "_copy_or_embed", "write"),
               (embedding.Embedder, "encode", "embedder.encode"), (lifecycle, "_validate", "validate"),
               (lifecycle, "_retrieval_check", "validate.retrieval_gate"), (retrieval, "build_lexical", "bm25"),
               (lifecycle, "_retain", "retain")]
    with H.timed_calls(wrapped) as spent:
        yield spent


class PrecomputedEmbedder:
    """Stands in for ``Embedder`` in ``search()``: returns the query's vector computed beforehand,
    so a timing of ``search()`` leaves the query embedding out."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str], log_every: float = 10.0) -> np.ndarray:
        import numpy as np

        return np.stack([self.vectors[t] for t in texts])


def summarize_rebuild(report: dict[str, Any], wall_s: float, phases: dict[str, float]) -> dict[str, Any]:
    keys = ("swapped", "reasons", "from", "to", "previous", "live", "reused", "embedded", "chunks", "documents",
            "force", "pipeline_change", "sample_min_cosine", "retrieval", "lexical", "deleted", "removed_partial",
            "elapsed_s")
    out = {k: report[k] for k in keys if k in report}
    out["wall_s"] = round(wall_s, 3)
    out["loadavg_after"] = H.loadavg()
    out["phases_s"] = {k: round(v, 3) for k, v in sorted(phases.items())}
    return out


def timed_rebuild(settings: Settings, embedder: Embedder, store: VectorStore, force: bool) -> dict[str, Any]:
    from ragops.lifecycle import rebuild

    label = "forced (every chunk embedded again)" if force else "same model (stored vectors reused)"
    log.info("rebuild, %s (load average %.2f)", label, H.loadavg()[0])
    with rebuild_phases() as spent:
        t0 = time.perf_counter()
        try:
            report = rebuild(settings, INDEX, actor="bench", embedder=embedder, store=store, force=force)
        except Exception as exc:  # recorded, so the other figures are still written
            log.error("rebuild (force=%s) raised:\n%s", force, traceback.format_exc())
            return {"error": f"{type(exc).__name__}: {exc}", "wall_s": round(time.perf_counter() - t0, 3),
                    "phases_s": {k: round(v, 3) for k, v in sorted(spent.items())}}
        wall = time.perf_counter() - t0
    out = summarize_rebuild(report, wall, spent)
    log.info("   %.1fs wall: swapped=%s, %s reused, %s embedded, %s -> %s; phases %s", wall, out.get("swapped"),
             out.get("reused"), out.get("embedded"), out.get("from"), out.get("to"), out["phases_s"])
    return out


# ----------------------------------------------------------------------------------------------
# 1. ingest and golden set


def ingest(settings: Settings, corpus: Path, embedder: Embedder, store: VectorStore) -> dict[str, Any]:
    from ragops.indexing import new_run_id, sync

    existing = H.live_collection(settings, INDEX)
    if existing:
        log.info("1. the data directory already holds index %s (live %s): ingest skipped", INDEX, existing)
        return {"skipped": True, "live": existing}
    log.info("1. ingesting %s into index %s", corpus, INDEX)
    t0 = time.perf_counter()
    report = sync(settings, str(corpus), INDEX, run_id=new_run_id("bench"), trigger="bench", embedder=embedder,
                  store=store)
    seconds = time.perf_counter() - t0
    log.info("   %.1fs, counts %s, chunks %s", seconds, report["counts"], report["chunks"])
    return {"skipped": False, "seconds": round(seconds, 3), "counts": report["counts"], "chunks": report["chunks"],
            "live": H.live_collection(settings, INDEX), "loadavg_after": H.loadavg()}


# ----------------------------------------------------------------------------------------------
# 3. retrieval quality on the live version


def measure_quality(settings: Settings, embedder: Embedder, store: VectorStore, queries: dict[str, str],
                    qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    import numpy as np

    from ragops.evaluation.metrics import retrieval_metrics
    from ragops.retrieval import search

    out: dict[str, Any] = {"queries": len(queries), "k": K, "collection": H.live_collection(settings, INDEX)}
    for mode in ("dense", "hybrid"):
        rows, ms, short = [], [], 0
        for qid, text in queries.items():
            t0 = time.perf_counter()
            hits = search(settings, text, k=K, index=INDEX, embedder=embedder, store=store, unique_docs=True,
                          mode=mode)
            ms.append((time.perf_counter() - t0) * 1000)
            ranked = [h.doc_id for h in hits]
            short += len(ranked) < K
            rows.append(retrieval_metrics(ranked, qrels[qid], [K]))
        out[mode] = {"ndcg@10": round(float(np.mean([r[f"ndcg@{K}"] for r in rows])), 5),
                     "recall@10": round(float(np.mean([r[f"recall@{K}"] for r in rows])), 5),
                     "queries_with_fewer_than_k_docs": short, "search_with_embedding": H.latency_summary(ms)}
        log.info("   %s: nDCG@10 %.4f, Recall@10 %.4f", mode, out[mode]["ndcg@10"], out[mode]["recall@10"])
    return out


# ----------------------------------------------------------------------------------------------
# 4. latency: live collection and synthetic ~100k collection


def build_synthetic(store: VectorStore, base_ids: list[str], base: np.ndarray, texts: list[str],
                    metas: list[dict[str, Any]], target: int,
                    sigma: float) -> tuple[dict[str, Any], list[str], np.ndarray]:
    """A scratch collection of ``target`` vectors: the SciFact chunks once as they are, then copies
    with Gaussian noise (``sigma`` per dimension) re-normalised to unit length, ids and doc ids
    suffixed ``#synN``, the same chunk texts and metadata."""
    import numpy as np

    n = len(base_ids)
    cosines: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    all_ids: list[str] = []
    copies = 0
    t0 = time.perf_counter()
    with store.writer():
        if store.has_collection(SYNTHETIC_COLLECTION):
            store.drop(SYNTHETIC_COLLECTION)
        store.collection(SYNTHETIC_COLLECTION, create=True)
        for copy, vecs, cos in H.noisy_copies(base, target, sigma, SEED):
            take = len(vecs)
            ids, texts_c, metas_c = base_ids[:take], texts[:take], metas[:take]
            if copy:
                cosines.append(cos)
                ids = [f"{c}#syn{copy}" for c in ids]
                metas_c = [{**m, "doc_id": f"{m.get('doc_id', '')}#syn{copy}"} for m in metas_c]
            for i in range(0, take, 10_000):
                store.upsert(SYNTHETIC_COLLECTION, ids[i:i + 10_000], vecs[i:i + 10_000], texts_c[i:i + 10_000],
                             metas_c[i:i + 10_000])
            parts.append(vecs)
            all_ids += ids
            copies = copy + 1
            log.info("   synthetic collection: %d/%d vectors written (%.0fs)", len(all_ids), target,
                     time.perf_counter() - t0)
        count = store.count(SYNTHETIC_COLLECTION)
    seconds = time.perf_counter() - t0
    info = {"collection": SYNTHETIC_COLLECTION, "vectors": count, "target": target, "base_chunks": n,
            "copies": copies, "noise_sigma_per_dimension": sigma, "seed": SEED,
            "cosine_noisy_to_original": H.cosine_stats(cosines),
            "build_s": round(seconds, 3),
            "note": ("SYNTHETIC: the SciFact chunk vectors replicated (first copy exact, the others with Gaussian "
                     "noise, re-normalised) with the same chunk texts; measures search latency at this size, "
                     "not retrieval quality")}
    return info, all_ids, np.concatenate(parts)


def measure_latency(store: VectorStore, collection: str, embedder: Embedder, texts: list[str],
                    vectors: np.ndarray, repeat: int,
                    exact: tuple[list[str], np.ndarray] | None = None) -> dict[str, Any]:
    """VectorStore.query top-10 with a precomputed query vector, and query embedding + query, one
    query at a time; plus the first (cold) query and, with ``exact`` (every id and vector of the
    collection), the HNSW top-10's recall against an exact search over the same vectors."""
    import numpy as np

    t0 = time.perf_counter()
    first = store.query(collection, vectors[0], K)
    cold_ms = (time.perf_counter() - t0) * 1000
    for v in vectors[:WARMUP_QUERIES]:
        store.query(collection, v, K)
    query_ms, with_ms, embed_ms = [], [], []
    for _ in range(repeat):
        for text in texts:
            t0 = time.perf_counter()
            vec = embedder.encode([text], log_every=1e9)[0]
            t1 = time.perf_counter()
            store.query(collection, vec, K)
            t2 = time.perf_counter()
            embed_ms.append((t1 - t0) * 1000)
            query_ms.append((t2 - t1) * 1000)
            with_ms.append((t2 - t0) * 1000)
    out: dict[str, Any] = {"collection": collection, "vectors": store.count(collection), "k": K,
                           "queries": len(texts), "repeat": repeat, "first_query_ms": round(cold_ms, 3),
                           "query_only": H.latency_summary(query_ms),
                           "with_query_embedding": H.latency_summary(with_ms),
                           "query_embedding_only": H.latency_summary(embed_ms), "loadavg_after": H.loadavg()}
    if exact is not None and len(first["ids"][0]):
        all_ids, matrix = exact
        top = np.argsort(-(vectors @ matrix.T), axis=1)[:, :K]
        rec = [len(set(store.query(collection, v, K)["ids"][0]) & {all_ids[i] for i in top[j]}) / K
               for j, v in enumerate(vectors)]
        out["ann_recall@10_vs_exact"] = round(float(np.mean(rec)), 4)
    return out


def measure_search_fn(settings: Settings, embedder: Embedder, store: VectorStore, texts: list[str],
                      vectors: np.ndarray, repeat: int) -> dict[str, Any]:
    """``ragops.retrieval.search`` end to end (alias lookup included), top 10 chunks: dense and
    hybrid, with the query embedding and with a precomputed vector."""
    from ragops.retrieval import search

    pre = PrecomputedEmbedder({t.strip(): v for t, v in zip(texts, vectors, strict=True)})
    out: dict[str, Any] = {}
    for mode in ("dense", "hybrid"):
        for label, emb in (("without_query_embedding", pre), ("with_query_embedding", embedder)):
            for t in texts[:WARMUP_QUERIES]:
                search(settings, t, k=K, index=INDEX, embedder=emb, store=store, mode=mode)  # type: ignore[arg-type]
            ms = []
            for _ in range(repeat):
                for t in texts:
                    t0 = time.perf_counter()
                    search(settings, t, k=K, index=INDEX, embedder=emb, store=store, mode=mode)  # type: ignore[arg-type]
                    ms.append((time.perf_counter() - t0) * 1000)
            out.setdefault(mode, {})[label] = H.latency_summary(ms)
        log.info("   search() %s: without embedding p50/p95 %.1f/%.1f ms, with %.1f/%.1f ms", mode,
                 out[mode]["without_query_embedding"]["p50_ms"], out[mode]["without_query_embedding"]["p95_ms"],
                 out[mode]["with_query_embedding"]["p50_ms"], out[mode]["with_query_embedding"]["p95_ms"])
    return out


# ----------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace, dataset: Path, tmp: Path, data_dir: Path) -> dict[str, Any]:
    from ragops.vectorstore import VectorStore

    corpus = dataset / "corpus.jsonl"
    keep_docs: set[str] | None = None
    if args.limit is not None:
        corpus = tmp / "source" / "corpus.jsonl"
        keep_docs = set(H.write_copy(dataset / "corpus.jsonl", corpus, args.limit))
    settings = H.open_settings(data_dir)
    figures: dict[str, Any] = {"data_dir": str(data_dir), "data_dir_given": args.data_dir is not None}

    # the golden set of the rebuild's retrieval gate
    if args.no_golden:
        figures["golden"] = {"skipped": "--no-golden: the rebuild's retrieval gate does not run"}
    else:
        golden = H.golden_set(dataset, tmp / "scifact-test-golden.jsonl", keep_docs)
        if golden["questions"]:
            entry = {**(settings.indexes.get(INDEX) or {}), "golden": golden["path"]}
            settings = settings.replace(indexes={**settings.indexes, INDEX: entry})
        else:
            golden["skipped"] = "no test question has all its relevant documents in the slice: gate not run"
        figures["golden"] = golden
    figures["settings"] = H.settings_facts(settings)
    embedder, load_s = H.warm_embedder(settings)
    figures["model_load_s"] = round(load_s, 3)
    log.info("model loaded and warmed in %.1fs", load_s)
    store = VectorStore(settings)

    queries, qrels = H.test_queries(dataset, keep_docs)

    # 1. ingest
    figures["ingest"] = ingest(settings, corpus, embedder, store)

    # 2. the two rebuilds
    log.info("2. rebuilds")
    same = timed_rebuild(settings, embedder, store, force=False)
    full = timed_rebuild(settings, embedder, store, force=True)
    figures["rebuild_same_model"], figures["rebuild_forced"] = same, full
    ratio: dict[str, Any] = {"same_model_s": same["wall_s"], "forced_s": full["wall_s"],
                             "ratio": round(same["wall_s"] / full["wall_s"], 4)}
    g_same = same.get("phases_s", {}).get("validate.retrieval_gate")
    g_full = full.get("phases_s", {}).get("validate.retrieval_gate")
    if g_same is not None and g_full is not None:
        ratio["retrieval_gate_s"] = {"same_model": g_same, "forced": g_full}
        ratio["ratio_without_gate"] = round((same["wall_s"] - g_same) / (full["wall_s"] - g_full), 4)
    figures["rebuild_ratio"] = ratio
    log.info("   same-model / forced = %.1fs / %.1fs = %.3f", same["wall_s"], full["wall_s"], ratio["ratio"])

    # 3. retrieval quality on the live version (the forced rebuild's, when it swapped)
    if queries:
        log.info("3. nDCG@10 on %d test queries, dense and hybrid, document level", len(queries))
        figures["retrieval"] = measure_quality(settings, embedder, store, queries, qrels)
    else:
        figures["retrieval"] = {"queries": 0, "note": "no test query has all its relevant documents in the slice"}

    # 4. latency: live collection, then the synthetic collection
    texts = list(queries.values()) or [json.loads(ln)["text"] for ln in H.iter_lines(dataset / "queries.jsonl", 300)]
    vectors = embedder.encode(texts, log_every=1e9)
    live = H.live_collection(settings, INDEX)
    assert live is not None
    log.info("4. latency on the live collection %s", live)
    base_ids, base, base_texts, base_metas = H.all_vectors(store, live)
    lat: dict[str, Any] = {"scifact": measure_latency(store, live, embedder, texts, vectors, args.repeat,
                                                      exact=(base_ids, base))}
    lat["scifact"]["search_fn"] = measure_search_fn(settings, embedder, store, texts, vectors, args.repeat)
    log.info("   live: query-only p50/p95 %.2f/%.2f ms, with embedding %.2f/%.2f ms",
             lat["scifact"]["query_only"]["p50_ms"], lat["scifact"]["query_only"]["p95_ms"],
             lat["scifact"]["with_query_embedding"]["p50_ms"], lat["scifact"]["with_query_embedding"]["p95_ms"])
    target = args.synthetic_chunks or (SYNTHETIC_CHUNKS_SMOKE if args.limit is not None else SYNTHETIC_CHUNKS)
    log.info("   building the synthetic collection of %d vectors (noise sigma %g)", target, args.noise)
    synth, synth_ids, matrix = build_synthetic(store, base_ids, base, base_texts, base_metas, target, args.noise)
    figures["synthetic"] = synth
    try:
        lat["synthetic"] = measure_latency(store, SYNTHETIC_COLLECTION, embedder, texts, vectors, args.repeat,
                                           exact=(synth_ids, matrix))
        log.info("   synthetic %d: query-only p50/p95 %.2f/%.2f ms, with embedding %.2f/%.2f ms",
                 synth["vectors"], lat["synthetic"]["query_only"]["p50_ms"], lat["synthetic"]["query_only"]["p95_ms"],
                 lat["synthetic"]["with_query_embedding"]["p50_ms"],
                 lat["synthetic"]["with_query_embedding"]["p95_ms"])
    finally:
        if not args.keep_synthetic:
            with store.writer():
                store.drop(SYNTHETIC_COLLECTION)
            synth["dropped_after_run"] = True
    figures["latency"] = lat
    return figures


# ----------------------------------------------------------------------------------------------
# report


def evaluate(f: dict[str, Any]) -> list[H.Target]:
    out: list[H.Target] = []
    same, full = f["rebuild_same_model"], f["rebuild_forced"]
    for name, r in (("same-model rebuild", same), ("forced rebuild", full)):
        ok = r.get("swapped") is True
        out.append(H.Target(f"{name}: validated and swapped", "yes" if ok else (r.get("error") or
                          "; ".join(r.get("reasons") or []) or "no"), "swapped", ok))
    if "reused" in same:
        out.append(H.Target("same-model rebuild: reused / embedded", f"{same['reused']} / {same['embedded']}",
                          f"{same['chunks']} / 0", same["reused"] == same["chunks"] and same["embedded"] == 0))
    if "embedded" in full:
        out.append(H.Target("forced rebuild: reused / embedded", f"{full['reused']} / {full['embedded']}",
                          f"0 / {full['chunks']}", full["embedded"] == full["chunks"] and full["reused"] == 0))
    ratio = f["rebuild_ratio"]["ratio"]
    out.append(H.Target("rebuild time, same model / forced", ratio, f"<= {RATIO_MAX}", ratio <= RATIO_MAX))
    ret = f["retrieval"]
    for mode, lo in (("dense", DENSE_NDCG_MIN), ("hybrid", HYBRID_NDCG_MIN)):
        if ret.get("queries"):
            v = ret[mode]["ndcg@10"]
            out.append(H.Target(f"nDCG@10 {mode}, live version after the rebuilds", v, f">= {lo}", v >= lo))
        else:
            out.append(H.Target(f"nDCG@10 {mode}, live version after the rebuilds", "no queries", f">= {lo}", None))
    lat = f["latency"]
    for key, label in (("scifact", f"SciFact ({lat['scifact']['vectors']:,} vectors)"),
                       ("synthetic", f"synthetic ({lat.get('synthetic', {}).get('vectors', 0):,} vectors)")):
        if key in lat:
            v = lat[key]["query_only"]["p95_ms"]
            out.append(H.Target(f"top-10 query p95 (ms) without the query embedding, {label}", v,
                              f"<= {P95_MS_MAX:g}", v <= P95_MS_MAX))
        else:
            out.append(H.Target(f"top-10 query p95 (ms) without the query embedding, {label}", "not measured",
                              f"<= {P95_MS_MAX:g}", None))
    return out


def figure_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    ing = f["ingest"]
    if ing.get("skipped"):
        rows.append(("ingest", f"skipped: --data-dir already held index {INDEX} ({ing['live']})"))
    else:
        c = ing["chunks"]
        rows.append(("ingest (sync) of the corpus (s)", H.fmt(ing["seconds"])))
        rows.append(("ingest: documents added / quarantined; chunks embedded",
                     f"{ing['counts'].get('added')} / {ing['counts'].get('quarantined')}; {c.get('embedded')}"))
    g = f["golden"]
    if g.get("skipped"):
        rows.append(("golden set of the retrieval gate", g["skipped"]))
    else:
        rows.append(("golden set of the retrieval gate (import_beir, test split)", f"{g['questions']} questions"))
    for key, name in (("rebuild_same_model", "same-model rebuild"), ("rebuild_forced", "forced rebuild")):
        r = f[key]
        rows.append((f"{name}: wall (s)", H.fmt(r["wall_s"])))
        if "error" in r:
            rows.append((f"{name}: error", r["error"]))
            continue
        rows.append((f"{name}: {r['from']} -> {r['to']}, chunks / documents", f"{r['chunks']} / {r['documents']}"))
        ph = r["phases_s"]
        rows.append((f"{name}: write / Embedder.encode (all calls) / validate / of which gate / BM25 (s)",
                     " / ".join(H.fmt(ph.get(k, 0.0)) for k in ("write", "embedder.encode", "validate",
                                                              "validate.retrieval_gate", "bm25"))))
        chk = r.get("retrieval")
        if chk and "skipped" not in chk:
            rows.append((f"{name}: gate on {chk['questions']} questions, nDCG@10 live -> new",
                         f"{chk['live']['ndcg@10']:.4f} -> {chk['new']['ndcg@10']:.4f}"))
        elif chk:
            rows.append((f"{name}: gate", chk["skipped"]))
        else:
            rows.append((f"{name}: gate", "not run (no golden set)"))
    rr = f["rebuild_ratio"]
    if "ratio_without_gate" in rr:
        rows.append(("ratio same-model / forced without the gate's time", H.fmt(rr["ratio_without_gate"])))
    ret = f["retrieval"]
    if ret.get("queries"):
        rows.append(("test queries evaluated", str(ret["queries"])))
        for mode in ("dense", "hybrid"):
            m = ret[mode]
            rows.append((f"{mode}: Recall@10", H.fmt(m["recall@10"])))
    lat = f["latency"]
    for key, name in (("scifact", "SciFact"), ("synthetic", "synthetic")):
        if key not in lat:
            continue
        r = lat[key]
        rows.append((f"{name} ({r['vectors']:,} vectors): top-10 query p50 / p95 (ms)",
                     f"{r['query_only']['p50_ms']:.2f} / {r['query_only']['p95_ms']:.2f}"))
        rows.append((f"{name}: query embedding + query p50 / p95 (ms)",
                     f"{r['with_query_embedding']['p50_ms']:.2f} / {r['with_query_embedding']['p95_ms']:.2f}"))
        rows.append((f"{name}: first (cold) query (ms)", H.fmt(r["first_query_ms"])))
        if "ann_recall@10_vs_exact" in r:
            rows.append((f"{name}: HNSW top-10 recall vs exact search", H.fmt(r["ann_recall@10_vs_exact"])))
    sf = lat["scifact"].get("search_fn", {})
    for mode in ("dense", "hybrid"):
        if mode in sf:
            a, b = sf[mode]["without_query_embedding"], sf[mode]["with_query_embedding"]
            rows.append((f"SciFact search() {mode}, top 10: without / with query embedding p50 / p95 (ms)",
                         f"{a['p50_ms']:.2f} / {a['p95_ms']:.2f}; {b['p50_ms']:.2f} / {b['p95_ms']:.2f}"))
    s = f.get("synthetic")
    if s:
        rows.append(("synthetic collection: build (s), copies, noise sigma, cosine to original mean / min",
                     f"{H.fmt(s['build_s'])}, {s['copies']}, {s['noise_sigma_per_dimension']}, "
                     f"{s['cosine_noisy_to_original']['mean']} / {s['cosine_noisy_to_original']['min']}"))
    return rows


def render(results: dict[str, Any], markdown: bool) -> str:
    m, s = results["machine"], results["figures"]["settings"]
    facts = (f"date {results['date']}; duration {results['duration_s']:.0f} s; {H.cpus_python_torch(m)}; "
             f"chromadb {m['chromadb']}; model {s['embedding_model']}, embedding batch_size "
             f"{s['embedding_batch_size']}; chunk_tokens {s['chunk_tokens']}, overlap_tokens {s['overlap_tokens']}; "
             f"{H.load_averages(m)}")
    synth = results["figures"].get("synthetic") or {}
    notes = [f"Latency: one query at a time, {results['figures']['latency']['scifact']['repeat']} x "
             f"{results['figures']['latency']['scifact']['queries']} test queries per figure after "
             f"{WARMUP_QUERIES} warm-up queries; 'without the query embedding' = `VectorStore.query` (top 10) "
             "with a precomputed vector, 'with' = `Embedder.encode` of the query + `VectorStore.query`."]
    if synth:
        notes.append(f"The {synth['vectors']:,}-vector collection is {synth['note']}.")
    tables = [(["check", "result", "target", "met"], H.target_rows(results["targets"])),
              (["figure", "value"], [[a, b] for a, b in figure_rows(results["figures"])])]
    return H.render_report(results, "ragops blue/green rebuild benchmark, BEIR SciFact", facts, tables, markdown,
                           notes)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ragops blue/green rebuild benchmark on BEIR SciFact (see bench/README.md)")
    H.add_common_args(p, data_dir=True)
    p.add_argument("--synthetic-chunks", type=int, default=None, metavar="N",
                   help=f"size of the synthetic collection (default {SYNTHETIC_CHUNKS:,}; {SYNTHETIC_CHUNKS_SMOKE:,} "
                        "with --limit)")
    p.add_argument("--noise", type=float, default=NOISE_SIGMA,
                   help=f"Gaussian noise per dimension of the synthetic copies (default {NOISE_SIGMA})")
    p.add_argument("--repeat", type=int, default=2, help="latency repetitions over the test queries (default 2)")
    p.add_argument("--no-golden", action="store_true", help="no golden set: the rebuild's retrieval gate is skipped")
    p.add_argument("--keep-synthetic", action="store_true", help="keep the synthetic collection in the data dir")
    return H.check_common_args(p, p.parse_args(argv))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    H.setup_logging(args.verbose, log)
    dataset = H.dataset_or_skip(args.dataset)
    if dataset is None:
        return 0

    started = H.utc_now()
    load_start = H.load_at_start(log)
    with H.workspace("ragops-rebuild-bench-", args.keep_tmp, log) as tmp:
        data_dir = args.data_dir.resolve() if args.data_dir else tmp / "data"
        log.info("working in %s (data dir %s)", tmp, data_dir)
        figures = run(args, dataset, tmp, data_dir)

    targets = evaluate(figures)
    dataset_facts = {"path": str(dataset), "test_queries": figures["retrieval"].get("queries", 0)}
    results = H.run_record(RESULT_STEM, SCRIPT, started, args.limit, dataset_facts, load_start, targets, figures)
    H.publish(args.results_dir, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
