#!/usr/bin/env python
"""Evaluation benchmark on BEIR SciFact: what an eval run costs over plain retrieval.

1. ingest ``corpus.jsonl`` into a fresh data directory (a child process; skipped with
   ``--data-dir`` pointing at an earlier run's directory);
2. in a second child process, on the same warm model and collection:
   a. *raw*: embed the 300 test queries and search the top 10 chunks (batched as the eval does);
   b. *eval*: ``ragops eval run`` with the bundled offline prompt (``rag_answer@1``) on the same
      queries, imported with ``ragops eval import-beir``;
   and report both wall times, their ratio (target: eval <= 2x raw), and the child's peak RSS;
3. nDCG@10 and Recall@10 from the eval run, to compare with the ingest benchmark's figures.

Usage (from the project root)::

    .venv/bin/python bench/eval_scifact.py               # writes bench/results/eval_scifact.{json,md}
    .venv/bin/python bench/eval_scifact.py --limit 500   # smoke run on a corpus slice (*.smoke.*)
"""

from __future__ import annotations

import argparse
import dataclasses
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
log = logging.getLogger("bench.eval_scifact")


def vm_hwm_kib() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def child_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ, RAGOPS_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", ANONYMIZED_TELEMETRY="False")
    env.pop("RAGOPS_STATE_DB_URL", None)
    env.pop("RAGOPS_CHROMA_URL", None)
    env.pop("RAGOPS_CHROMA_MODE", None)
    return env


def ingest(args: argparse.Namespace) -> int:
    from ragops import state
    from ragops.config import load_settings
    from ragops.indexing import sync

    settings = load_settings()
    state.upgrade(settings.state_db_url)
    t0 = time.perf_counter()
    report = sync(settings, str(args.corpus), INDEX, trigger="bench")
    Path(args.out).write_text(json.dumps({"ingest_s": round(time.perf_counter() - t0, 2),
                                          "chunks": report["chunks"], "documents": report["counts"]}))
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
    rss_ready = vm_hwm_kib()

    def raw() -> float:
        t0 = time.perf_counter()
        for b in range(0, len(queries), BLOCK):
            vecs = embedder.model.encode(queries[b:b + BLOCK], batch_size=settings.embedding.batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            store.query_many(collection, vecs, 10)
        return time.perf_counter() - t0

    def raw_one_by_one() -> float:  # what an application does: one query at a time
        t0 = time.perf_counter()
        for q in queries:
            vec = embedder.model.encode([q], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            store.query(collection, vec[0], 10)
        return time.perf_counter() - t0

    def timed_eval(cfg: Any, tag: str, i: int) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        summary = run_eval(cfg, args.golden, "rag_answer@1", INDEX, embedder=embedder, store=store,
                           allow_unknown_docs=True,  # 3 SciFact abstracts fail the quality checks
                           run_id=f"bench-{tag}-{i}", output_dir=Path(args.work) / f"{tag}-{i}")
        return time.perf_counter() - t0, summary

    lexical_only = dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, semantic_metrics=False))
    raw_s, raw1_s, eval_s, eval_lex_s = [], [], [], []
    summary: dict[str, Any] = {}
    for i in range(args.repeat):  # interleaved, so drift of the machine affects all alike
        raw_s.append(raw())
        raw1_s.append(raw_one_by_one())
        t, summary = timed_eval(settings, "eval", i)
        eval_s.append(t)
        eval_lex_s.append(timed_eval(lexical_only, "eval-no-semantic", i)[0])
    med = {k: float(np.median(v)) for k, v in (("raw", raw_s), ("raw1", raw1_s), ("eval", eval_s),
                                                ("eval_lex", eval_lex_s))}
    out = {"queries": len(queries), "raw_s": raw_s, "raw_one_by_one_s": raw1_s, "eval_s": eval_s,
           "eval_no_semantic_s": eval_lex_s,
           "raw_s_median": med["raw"], "raw_one_by_one_s_median": med["raw1"], "eval_s_median": med["eval"],
           "eval_no_semantic_s_median": med["eval_lex"],
           "ratio": med["eval"] / med["raw"], "ratio_no_semantic": med["eval_lex"] / med["raw"],
           "ratio_vs_one_by_one": med["eval"] / med["raw1"],
           "peak_rss_mb": round((vm_hwm_kib() or 0) / 1024, 1), "rss_before_runs_mb": round((rss_ready or 0) / 1024, 1),
           "metrics": summary["metrics"], "operations": summary["operations"], "counts": summary["counts"],
           "unknown_relevant_doc_ids": summary["dataset"]["unknown_relevant_doc_ids"]}
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--data-dir", type=Path, help="reuse this data directory's scifact index (skip the ingest)")
    p.add_argument("--limit", type=int, help="smoke run: only the first N corpus records")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions of raw and eval (median reported)")
    p.add_argument("--phase", choices=["ingest", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--golden", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("chromadb", "httpx", "sentence_transformers", "great_expectations", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.phase == "ingest":
        return ingest(args)
    if args.phase == "measure":
        return measure(args)

    if not (args.dataset / "corpus.jsonl").exists():
        print(f"SciFact not found at {args.dataset}; nothing to measure")
        return 0
    sys.path.insert(0, str(PROJECT_ROOT / "include"))
    from ragops.evaluation.datasets import import_beir

    work = Path(tempfile.mkdtemp(prefix="ragops-eval-bench-"))
    corpus = args.dataset / "corpus.jsonl"
    if args.limit:
        sliced = work / "corpus.jsonl"
        with corpus.open(encoding="utf-8") as src, sliced.open("w", encoding="utf-8") as dst:
            for n, line in enumerate(src):
                if n >= args.limit:
                    break
                dst.write(line)
        corpus = sliced
    data_dir = args.data_dir or work / "data"
    me = [sys.executable, str(SCRIPT)]
    ingest_info: dict[str, Any] = {"skipped": True, "data_dir": str(data_dir)}
    if not args.data_dir:
        log.info("ingesting %s into %s", corpus, data_dir)
        subprocess.run([*me, "--phase", "ingest", "--corpus", str(corpus), "--out", str(work / "ingest.json")],
                       check=True, env=child_env(data_dir))
        ingest_info = json.loads((work / "ingest.json").read_text())
    golden = work / "scifact-test.jsonl"
    imported = import_beir(args.dataset, "test", golden)
    if args.limit:  # keep only questions whose relevant documents are in the slice
        keep = {json.loads(line)["_id"] for line in corpus.read_text().splitlines() if line.strip()}
        lines = [line for line in golden.read_text().splitlines()
                 if set(json.loads(line)["relevant_doc_ids"]) <= keep]
        golden.write_text("\n".join(lines) + "\n")
    log.info("raw retrieval vs eval run, %d repetitions each", args.repeat)
    subprocess.run([*me, "--phase", "measure", "--golden", str(golden), "--work", str(work), "--repeat",
                    str(args.repeat), "--out", str(work / "measure.json")], check=True, env=child_env(data_dir))
    m = json.loads((work / "measure.json").read_text())
    result = {
        "benchmark": "eval_scifact", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/eval_scifact.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "dataset": {"path": str(args.dataset), "limit": args.limit, "test_queries": imported["questions"]},
        "ingest": ingest_info, **m,
        "targets": {"ratio_eval_to_raw": {"target": "<= 2.0", "value": round(m["ratio"], 3),
                                          "met": m["ratio"] <= 2.0},
                    "ratio_eval_no_semantic_to_raw": {"target": "<= 2.0", "value": round(m["ratio_no_semantic"], 3),
                                                      "met": m["ratio_no_semantic"] <= 2.0}},
    }
    stem = "eval_scifact" + (".smoke" if args.limit else "")
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(result, indent=2))
    mt, ops = m["metrics"], m["operations"]
    md = [f"# Eval benchmark on SciFact ({result['when']})", "",
          f"Command: `{result['command']}` on {os.cpu_count()} CPUs, Python {platform.python_version()}.", "",
          f"{m['queries']} test queries, offline extractive generator (`rag_answer@1`), median of "
          f"{args.repeat} runs each.", "",
          "| figure | value | target |", "|---|---|---|",
          f"| raw query embedding + top-10 search, in blocks of 32 (as the eval retrieves) | {m['raw_s_median']:.2f} s | |",
          f"| raw, one query at a time (as an application searches) | {m['raw_one_by_one_s_median']:.2f} s | |",
          f"| `run_eval` (retrieval, answers, every metric, files, state store) | {m['eval_s_median']:.2f} s | |",
          f"| **ratio eval / raw (blocks)** | **{m['ratio']:.2f}** | <= 2.0 ({'met' if m['ratio'] <= 2 else 'NOT met'}) |",
          f"| ratio eval / raw one at a time | {m['ratio_vs_one_by_one']:.2f} | |",
          f"| `run_eval` with `eval.semantic_metrics: false` | {m['eval_no_semantic_s_median']:.2f} s "
          f"(ratio {m['ratio_no_semantic']:.2f}) | |",
          f"| peak RSS of the measuring process | {m['peak_rss_mb']:,.0f} MB | |",
          f"| latency per question p50 / p95 | {ops['latency_ms_p50']:.1f} / {ops['latency_ms_p95']:.1f} ms | |",
          f"| nDCG@10 / Recall@10 / MRR@10 | {mt.get('ndcg@10', 0):.4f} / {mt.get('recall@10', 0):.4f} / "
          f"{mt.get('mrr@10', 0):.4f} | |",
          f"| faithfulness / citation validity | {mt.get('faithfulness', 0):.3f} / "
          f"{mt.get('citation_validity', 0):.3f} | |",
          f"| refused (of {m['counts']['questions']}) | {m['counts']['refused']} | |", ""]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
