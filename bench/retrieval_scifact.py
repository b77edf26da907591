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
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
PROJECT_ROOT = SCRIPT.parent.parent
DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"
RESULTS_DIR = SCRIPT.parent / "results"
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
    queries = {json.loads(line)["_id"]: json.loads(line)["text"]
               for line in (dataset / "queries.jsonl").read_text().splitlines() if line.strip()}
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate((dataset / "qrels" / "test.tsv").read_text().splitlines()):
        parts = line.split("\t")
        if n == 0 and parts[0] == "query-id":
            continue
        if int(parts[2]) > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
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
            "search_ms_p50": float(np.percentile(search_ms, 50)), "search_ms_p95": float(np.percentile(search_ms, 95)),
            "with_embedding_ms_p50": float(np.percentile(total_ms, 50)),
            "with_embedding_ms_p95": float(np.percentile(total_ms, 95)),
        }
        log.info("%s: %s", mode, out[mode])
    return {"queries": len(qids), "chunks": n_chunks, "collection": collection, "lexical_built": built,
            "candidates_per_retriever": cand, "rrf_k": settings.retrieval.rrf_k, "modes": out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--data-dir", type=Path, help="data directory holding a SciFact index named 'scifact'")
    p.add_argument("--repeat", type=int, default=2, help="latency repetitions over the 300 queries")
    p.add_argument("--phase", choices=["measure"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("chromadb", "httpx", "sentence_transformers", "great_expectations", "alembic", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.phase == "measure":
        args.out.write_text(json.dumps(measure(args.dataset, args.repeat), indent=2))
        return 0
    if not (args.dataset / "corpus.jsonl").exists():
        print(f"SciFact not found at {args.dataset}; nothing to measure")
        return 0
    work = Path(tempfile.mkdtemp(prefix="ragops-retrieval-bench-"))
    data_dir = args.data_dir or work / "data"
    env = dict(os.environ, RAGOPS_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    for var in ("RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_URL", "RAGOPS_CHROMA_MODE"):
        env.pop(var, None)
    if not args.data_dir:
        subprocess.run([sys.executable, str(SCRIPT.parent / "eval_scifact.py"), "--phase", "ingest", "--corpus",
                        str(args.dataset / "corpus.jsonl"), "--out", str(work / "ingest.json")], check=True, env=env)
    subprocess.run([sys.executable, str(SCRIPT), "--phase", "measure", "--dataset", str(args.dataset), "--repeat",
                    str(args.repeat), "--out", str(work / "measure.json")], check=True, env=env)
    m = json.loads((work / "measure.json").read_text())
    result = {"benchmark": "retrieval_scifact", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": " ".join([".venv/bin/python", "bench/retrieval_scifact.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}, **m}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "retrieval_scifact.json").write_text(json.dumps(result, indent=2))
    md = [f"# Retrieval modes on SciFact ({result['when']})", "",
          f"Command: `{result['command']}` on {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{m['queries']} test queries, {m['chunks']:,} chunks, one query at a time, "
          f"{m['candidates_per_retriever']} candidates per retriever, RRF k={m['rrf_k']}. Building the BM25 "
          f"index took {m['lexical_built']['seconds']:.2f} s.", "",
          "| mode | nDCG@10 | Recall@10 | search p50 / p95 (ms) | with query embedding p50 / p95 (ms) |",
          "|---|---|---|---|---|"]
    for mode, r in m["modes"].items():
        md.append(f"| {mode} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['search_ms_p50']:.1f} / "
                  f"{r['search_ms_p95']:.1f} | {r['with_embedding_ms_p50']:.1f} / {r['with_embedding_ms_p95']:.1f} |")
    (RESULTS_DIR / "retrieval_scifact.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
