#!/usr/bin/env python
"""Retrieval modes on BEIR SciFact: quality and latency of dense, lexical (BM25) and hybrid search.

On an index of the SciFact corpus (ingested by ``bench/eval_scifact.py``'s ingest phase, or an
earlier run's ``--data-dir``), for each of the 300 test queries and each mode, one query at a time
as an application searches:

- nDCG@10 and Recall@10 on the document ranking (``ragops search --unique-docs`` semantics);
- latency p50/p95 of the search itself (without the query embedding) and of embedding + search.

Usage (from the project root)::

    .venv/bin/python bench/retrieval_scifact.py --data-dir DIR   # writes bench/results/retrieval_scifact.{json,md}
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
INDEX = "scifact"
K = 10
log = logging.getLogger("bench.retrieval_scifact")


def measure(dataset: Path, repeat: int) -> dict[str, Any]:
    import numpy as np

    from ragops import state
    from ragops.config import load_settings
    from ragops.embedding import Embedder
    from ragops.evaluation.metrics import retrieval_metrics
    from ragops.retrieval import build_lexical, fuse, lexical_index
    from ragops.vectorstore import VectorStore

    settings = load_settings()
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, INDEX)
        n_chunks = s.query(state.Chunk).filter(state.Chunk.index_name == INDEX).count()
    collection = live.collection
    built = build_lexical(settings, INDEX, collection)  # timed: what every changing sync adds
    queries = H.load_queries(dataset / "queries.jsonl")
    qrels = {q: {d: g for d, g in r.items() if g > 0} for q, r in H.load_qrels(dataset / "qrels" / "test.tsv").items()}
    qrels = {q: r for q, r in qrels.items() if r}
    qids = [q for q in queries if q in qrels]
    embedder = Embedder(settings.embedding)
    store = VectorStore(settings)
    lex = lexical_index(settings, collection)
    enc = embedder.model.encode
    enc(["warm-up"], normalize_embeddings=True)
    cand = settings.retrieval.candidates

    def doc_ranking(ids: list[str], docs_of: dict[str, str]) -> list[str]:
        seen: list[str] = []
        for cid in ids:
            d = docs_of.get(cid)
            if d is not None and d not in seen:
                seen.append(d)
        return seen[:K]

    out: dict[str, Any] = {}
    for mode in ("dense", "lexical", "hybrid"):
        search_ms, total_ms, rows = [], [], []
        for rep in range(repeat):
            for qid in qids:
                text = queries[qid]
                t0 = time.perf_counter()
                vec = enc([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0] \
                    if mode != "lexical" else None
                t1 = time.perf_counter()
                docs_of: dict[str, str] = {}
                if mode == "dense":
                    r = store.query(collection, vec, K * 4)
                    ids = r["ids"][0]
                    docs_of = {c: str((m or {}).get("doc_id")) for c, m in zip(ids, r["metadatas"][0], strict=True)}
                elif mode == "lexical":
                    hits = lex.query(text, cand)
                    ids = [c for c, _d, _s in hits]
                    docs_of = {c: d for c, d, _s in hits}
                else:
                    r = store.query(collection, vec, cand)
                    hits = lex.query(text, cand)
                    docs_of = {c: str((m or {}).get("doc_id")) for c, m in zip(r["ids"][0], r["metadatas"][0],
                                                                              strict=True)}
                    docs_of.update({c: d for c, d, _s in hits})
                    ids = [c for c, _ in fuse(settings, list(r["ids"][0]), [c for c, _d, _s in hits])]
                ranking = doc_ranking(ids, docs_of)
                t2 = time.perf_counter()
                search_ms.append((t2 - t1) * 1000)
                total_ms.append((t2 - t0) * 1000)
                if rep == 0:
                    rows.append(retrieval_metrics(ranking, qrels[qid], [K]))
        out[mode] = {
            "ndcg@10": float(np.mean([r[f"ndcg@{K}"] for r in rows])),
            "recall@10": float(np.mean([r[f"recall@{K}"] for r in rows])),
            "search_ms_p50": H.percentile(search_ms, 50), "search_ms_p95": H.percentile(search_ms, 95),
            "with_embedding_ms_p50": H.percentile(total_ms, 50), "with_embedding_ms_p95": H.percentile(total_ms, 95),
        }
        log.info("%s: %s", mode, out[mode])
    return {"queries": len(qids), "chunks": n_chunks, "collection": collection, "lexical_built": built,
            "candidates_per_retriever": cand, "rrf_k": settings.retrieval.rrf_k, "modes": out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    H.add_common_args(p, limit=False, data_dir=True)
    p.add_argument("--repeat", type=int, default=2, help="latency repetitions over the 300 queries")
    p.add_argument("--phase", choices=["measure"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = H.check_common_args(p, p.parse_args())
    H.setup_logging(args.verbose, log)
    if args.phase == "measure":
        H.write_json(args.out, measure(args.dataset, args.repeat))
        return 0
    dataset = H.dataset_or_skip(args.dataset)
    if dataset is None:
        return 0
    load_start = H.load_at_start(log)
    with H.workspace("ragops-retrieval-bench-", args.keep_tmp, log) as work:
        data_dir = args.data_dir.resolve() if args.data_dir else work / "data"
        env = H.isolated_env(data_dir)
        if not args.data_dir:
            ingested = H.run_child([sys.executable, str(SCRIPT.parent / "eval_scifact.py"), "--phase", "ingest",
                                    "--corpus", str(dataset / "corpus.jsonl"), "--out", str(work / "ingest.json")],
                                   work / "ingest.json", env, log)
            if "error" in ingested:
                raise SystemExit(f"the ingest child failed: {ingested['error']}")
        m = H.run_child([sys.executable, str(SCRIPT), "--phase", "measure", "--dataset", str(dataset), "--repeat",
                         str(args.repeat), "--out", str(work / "measure.json")], work / "measure.json", env, log)
        if "error" in m:
            raise SystemExit(f"the measuring child failed: {m['error']}")
        m.pop("process_wall_s", None)
    result = {"benchmark": "retrieval_scifact", "when": H.iso(H.utc_now()), "command": H.command_line(SCRIPT),
              "machine": H.basic_machine(load_start), **m}
    md = render(result)
    H.write_results(args.results_dir, "retrieval_scifact", result, md)
    print(md, end="")
    return 0


def render(result: dict[str, Any]) -> str:
    m, mach = result, result["machine"]
    md = [f"# Retrieval modes on SciFact ({result['when']})", "",
          f"Command: `{result['command']}` on {mach['cpus']} CPUs, Python {mach['python']}; "
          f"{m['queries']} test queries, {m['chunks']:,} chunks, one query at a time, "
          f"{m['candidates_per_retriever']} candidates per retriever, RRF k={m['rrf_k']}. Building the BM25 "
          f"index took {m['lexical_built']['seconds']:.2f} s.", "",
          "| mode | nDCG@10 | Recall@10 | search p50 / p95 (ms) | with query embedding p50 / p95 (ms) |",
          "|---|---|---|---|---|"]
    for mode, r in m["modes"].items():
        md.append(f"| {mode} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['search_ms_p50']:.1f} / "
                  f"{r['search_ms_p95']:.1f} | {r['with_embedding_ms_p50']:.1f} / {r['with_embedding_ms_p95']:.1f} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
