#!/usr/bin/env python
"""Evaluation benchmark on BEIR SciFact: what an eval run costs over plain retrieval.

1. ingest ``corpus.jsonl`` into a fresh data directory (a child process; skipped with
   ``--data-dir`` pointing at an earlier run's directory);
2. in a second child process, on the same warm model and collection:
   a. *raw*: embed the 300 test queries and search the top 10 chunks (batched as the eval does);
   b. *eval*: ``ragops eval run`` with the bundled offline prompt (``rag_answer@1``) on the same
      queries, imported with ``ragops eval import-beir``: once with an empty vector cache (the first
      run on an index) and once more with the cache that run left (the next night's run); in-process
      caches are cleared before each, as a new process has none;
   and report the wall times, the ratios (target: eval <= 2x raw), and the child's peak RSS;
3. nDCG@10 and Recall@10 from the eval run, to compare with the ingest benchmark's figures.

Usage (from the project root)::

    .venv/bin/python bench/eval_scifact.py               # writes bench/results/eval_scifact.{json,md}
    .venv/bin/python bench/eval_scifact.py --limit 500   # smoke run on a corpus slice (*.smoke.*)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
INDEX = "scifact"
RESULT_STEM = "eval_scifact"
log = logging.getLogger("bench.eval_scifact")


def ingest(args: argparse.Namespace) -> int:
    from ragops import state
    from ragops.config import load_settings
    from ragops.indexing import sync

    settings = load_settings()
    state.upgrade(settings.state_db_url)
    t0 = time.perf_counter()
    report = sync(settings, str(args.corpus), INDEX, trigger="bench")
    H.write_json(Path(args.out), {"ingest_s": round(time.perf_counter() - t0, 2), "chunks": report["chunks"],
                                  "documents": report["counts"]})
    return 0


def measure(args: argparse.Namespace) -> int:
    import numpy as np

    from ragops import state
    from ragops.config import load_settings
    from ragops.embedding import Embedder
    from ragops.evaluation.runner import BLOCK, run_eval
    from ragops.vectorstore import VectorStore

    settings = load_settings()
    with state.session_scope(settings.state_db_url) as s:
        collection = state.live_version(s, INDEX).collection
    embedder = Embedder(settings.embedding)
    store = VectorStore(settings)
    queries = [json.loads(line)["question"] for line in Path(args.golden).read_text().splitlines() if line.strip()]
    embedder.model.encode(["warm-up"], normalize_embeddings=True)
    store.query_many(collection, np.asarray(embedder.model.encode(["warm-up"], normalize_embeddings=True)), 10)
    rss_ready = H.vm_hwm_kib()

    def raw() -> float:
        t0 = time.perf_counter()
        for b in range(0, len(queries), BLOCK):
            vecs = embedder.model.encode(queries[b:b + BLOCK], batch_size=settings.embedding.batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            store.query_many(collection, vecs, 10)
        return time.perf_counter() - t0

    qvecs = np.asarray(embedder.model.encode(queries, batch_size=settings.embedding.batch_size,
                                             normalize_embeddings=True, convert_to_numpy=True,
                                             show_progress_bar=False))

    def search_only() -> float:  # the same searches on vectors computed beforehand (a warm eval embeds no query)
        t0 = time.perf_counter()
        for b in range(0, len(queries), BLOCK):
            store.query_many(collection, qvecs[b:b + BLOCK], 10)
        return time.perf_counter() - t0

    def raw_one_by_one() -> float:  # what an application does: one query at a time
        t0 = time.perf_counter()
        for q in queries:
            vec = embedder.model.encode([q], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            store.query(collection, vec[0], 10)
        return time.perf_counter() - t0

    from ragops.vectorcache import path_for

    cache_file = path_for(settings.data_dir, embedder.fingerprint)

    def timed_eval(cfg: Any, tag: str, i: int, cold: bool) -> tuple[float, dict[str, Any]]:
        H.forget_eval_caches(settings.data_dir, embedder.fingerprint, disk=cold)
        t0 = time.perf_counter()
        summary = run_eval(cfg, args.golden, "rag_answer@1", INDEX, embedder=embedder, store=store,
                           allow_unknown_docs=False,  # every abstract is indexed since the repair step
                           run_id=f"bench-{tag}-{i}", output_dir=Path(args.work) / f"{tag}-{i}")
        return time.perf_counter() - t0, summary

    lexical_only = dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, semantic_metrics=False))
    raw_s, raw1_s, search_s, cold_s, warm_s, eval_lex_s = [], [], [], [], [], []
    summary: dict[str, Any] = {}
    cache: dict[str, Any] = {}
    for i in range(args.repeat):  # interleaved, so drift of the machine affects all alike
        raw_s.append(raw())
        raw1_s.append(raw_one_by_one())
        search_s.append(search_only())
        t, cold = timed_eval(settings, "eval-cold", i, cold=True)
        cold_s.append(t)
        t, summary = timed_eval(settings, "eval-warm", i, cold=False)  # the next night: the vector cache is warm
        warm_s.append(t)
        cache = {"cold": cold["vector_cache"], "warm": summary["vector_cache"],
                 "file_mb": round(cache_file.stat().st_size / 2**20, 1)}
        if cold["metrics"] != summary["metrics"]:
            raise SystemExit("a warm run scored differently from the cold run: the vector cache changed a result")
        eval_lex_s.append(timed_eval(lexical_only, "eval-no-semantic", i, cold=True)[0])
    med = {k: float(np.median(v)) for k, v in (("raw", raw_s), ("raw1", raw1_s), ("search", search_s), ("cold", cold_s), ("warm", warm_s),
                                                ("eval_lex", eval_lex_s))}
    out = {"queries": len(queries), "raw_s": raw_s, "raw_one_by_one_s": raw1_s, "eval_cold_s": cold_s,
           "eval_warm_s": warm_s, "eval_no_semantic_s": eval_lex_s, "search_only_s": search_s,
           "search_only_s_median": med["search"], "ratio_warm_to_search_only": med["warm"] / med["search"],
           "raw_s_median": med["raw"], "raw_one_by_one_s_median": med["raw1"], "eval_cold_s_median": med["cold"],
           "eval_warm_s_median": med["warm"], "eval_no_semantic_s_median": med["eval_lex"],
           "ratio_cold": med["cold"] / med["raw"], "ratio": med["warm"] / med["raw"],
           "ratio_no_semantic": med["eval_lex"] / med["raw"], "ratio_vs_one_by_one": med["warm"] / med["raw1"],
           "vector_cache": cache,
           "peak_rss_mb": round((H.vm_hwm_kib() or 0) / 1024, 1), "rss_before_runs_mb": round((rss_ready or 0) / 1024, 1),
           "metrics": summary["metrics"], "operations": summary["operations"], "counts": summary["counts"],
           "unknown_relevant_doc_ids": summary["dataset"]["unknown_relevant_doc_ids"]}
    H.write_json(Path(args.out), out)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    H.add_common_args(p, data_dir=True)
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions of raw and eval (median reported)")
    p.add_argument("--phase", choices=["ingest", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--golden", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = H.check_common_args(p, p.parse_args())
    H.setup_logging(args.verbose, log)
    if args.phase == "ingest":
        return ingest(args)
    if args.phase == "measure":
        return measure(args)
    dataset = H.dataset_or_skip(args.dataset)
    if dataset is None:
        return 0

    load_start = H.load_at_start(log)
    with H.workspace("ragops-eval-bench-", args.keep_tmp, log) as work:
        corpus, keep = dataset / "corpus.jsonl", None
        if args.limit:
            corpus = work / "corpus.jsonl"
            keep = set(H.write_copy(dataset / "corpus.jsonl", corpus, args.limit))
        data_dir = args.data_dir.resolve() if args.data_dir else work / "data"
        me = [sys.executable, str(SCRIPT)]
        ingest_info: dict[str, Any] = {"skipped": True, "data_dir": str(data_dir)}
        if not args.data_dir:
            log.info("ingesting %s into %s", corpus, data_dir)
            ingest_info = H.run_child([*me, "--phase", "ingest", "--corpus", str(corpus), "--out",
                                       str(work / "ingest.json")], work / "ingest.json", H.isolated_env(data_dir), log)
            ingest_info.pop("process_wall_s", None)
            if "error" in ingest_info:
                raise SystemExit(f"the ingest child failed: {ingest_info['error']}")
        # only the questions whose relevant documents are in the slice (``ragops eval import-beir``)
        golden = H.golden_set(dataset, work / "scifact-test.jsonl", keep)
        log.info("raw retrieval vs eval run, %d repetitions each", args.repeat)
        m = H.run_child([*me, "--phase", "measure", "--golden", golden["path"], "--work", str(work), "--repeat",
                         str(args.repeat), "--out", str(work / "measure.json")], work / "measure.json",
                        H.isolated_env(data_dir), log)
        if "error" in m:
            raise SystemExit(f"the measuring child failed: {m['error']}")
        m.pop("process_wall_s", None)
    result = {
        "benchmark": RESULT_STEM, "when": H.iso(H.utc_now()), "command": H.command_line(SCRIPT),
        "machine": H.basic_machine(load_start),
        "dataset": {"path": str(dataset), "limit": args.limit, "test_queries": golden["imported"]},
        "ingest": ingest_info, **m,
        "targets": {"ratio_eval_to_raw": {"target": "<= 2.0", "value": round(m["ratio"], 3),
                                          "met": m["ratio"] <= 2.0, "run": "warm vector cache (a nightly run)"},
                    "ratio_cold_eval_to_raw": {"target": "<= 2.0", "value": round(m["ratio_cold"], 3),
                                               "met": m["ratio_cold"] <= 2.0, "run": "empty vector cache"},
                    "ratio_eval_no_semantic_to_raw": {"target": "<= 2.0", "value": round(m["ratio_no_semantic"], 3),
                                                      "met": m["ratio_no_semantic"] <= 2.0}},
    }
    md = render(result, args.repeat)
    H.write_results(args.results_dir, H.result_stem(RESULT_STEM, bool(args.limit)), result, md)
    print(md)
    return 0


def render(result: dict[str, Any], repeat: int) -> str:
    m, mt, ops, mach = result, result["metrics"], result["operations"], result["machine"]
    md = [f"# Eval benchmark on SciFact ({result['when']})", "",
          f"Command: `{result['command']}` on {mach['cpus']} CPUs, Python {mach['python']}.", "",
          f"{m['queries']} test queries, offline extractive generator (`rag_answer@1`), median of "
          f"{repeat} runs each.", "",
          "| figure | value | target |", "|---|---|---|",
          f"| raw query embedding + top-10 search, in blocks of 32 (as the eval retrieves) | {m['raw_s_median']:.2f} s | |",
          f"| raw, one query at a time (as an application searches) | {m['raw_one_by_one_s_median']:.2f} s | |",
          f"| the same searches on query vectors computed beforehand (no embedding) | "
          f"{m['search_only_s_median']:.2f} s | |",
          f"| `run_eval`, empty vector cache (first run on an index) | {m['eval_cold_s_median']:.2f} s "
          f"(ratio {m['ratio_cold']:.2f}) | |",
          f"| `run_eval`, warm vector cache (the next run: {m['vector_cache']['warm']['hits']:,} hits, "
          f"{m['vector_cache']['warm']['misses']:,} misses; file {m['vector_cache']['file_mb']} MB) | "
          f"{m['eval_warm_s_median']:.2f} s | |",
          f"| **ratio eval (warm) / raw (blocks)** | **{m['ratio']:.2f}** | <= 2.0 ({'met' if m['ratio'] <= 2 else 'NOT met'}) |",
          f"| ratio eval (warm) / searches alone (like for like: a warm run embeds no question either) | "
          f"{m['ratio_warm_to_search_only']:.2f} | |",
          f"| ratio eval (cold) / raw (blocks) | {m['ratio_cold']:.2f} | <= 2.0 "
          f"({'met' if m['ratio_cold'] <= 2 else 'NOT met'}) |",
          f"| ratio eval / raw one at a time | {m['ratio_vs_one_by_one']:.2f} | |",
          f"| `run_eval` with `eval.semantic_metrics: false`, empty cache | {m['eval_no_semantic_s_median']:.2f} s "
          f"(ratio {m['ratio_no_semantic']:.2f}) | |",
          f"| peak RSS of the measuring process | {m['peak_rss_mb']:,.0f} MB | |",
          f"| latency per question p50 / p95 | {ops['latency_ms_p50']:.1f} / {ops['latency_ms_p95']:.1f} ms | |",
          f"| nDCG@10 / Recall@10 / MRR@10 | {mt.get('ndcg@10', 0):.4f} / {mt.get('recall@10', 0):.4f} / "
          f"{mt.get('mrr@10', 0):.4f} | |",
          f"| faithfulness / citation validity | {mt.get('faithfulness', 0):.3f} / "
          f"{mt.get('citation_validity', 0):.3f} | |",
          f"| refused (of {m['counts']['questions']}) | {m['counts']['refused']} | |", ""]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
