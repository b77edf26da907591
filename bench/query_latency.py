#!/usr/bin/env python
"""Query embedding latency per embedding backend: the 300 SciFact test queries, one at a time.

Every search, evaluation question and live answer embeds one query, so this is the latency an
application pays before the vector search. For each backend (torch, onnx, openvino when the
package is installed, onnx int8), in one process:

- load (the export is written once under a temporary data dir), warm up on 20 queries;
- then ``--repeat`` rounds; in each round every backend embeds all test queries one at a time
  through ``Embedder.encode([query])``, backend after backend (not query by query: each runtime
  keeps its own thread pool, and switching runtime on every query costs more than the query);
- per backend, p50 / p95 of each round and the median over rounds.

The machine's load average is recorded before and after: on this 2-core machine a second job
running at the same time doubles the figures (docs/performance.md), so run it on an idle machine.

Target (issue 21): the default backend embeds a query in <= 8 ms p50.

Usage (from the project root)::

    .venv/bin/python bench/query_latency.py               # writes bench/results/query_latency.{json,md}
    .venv/bin/python bench/query_latency.py --limit 300   # smoke run (queries of the first 300 documents)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "query_latency"
BACKENDS = [("torch", "none"), ("onnx", "none"), ("openvino", "none"), ("onnx", "int8")]
DEFAULT = "onnx"
QUERY_P50_MS = 8.0
log = logging.getLogger("bench.query_latency")


def measure(dataset: Path, limit: int | None, repeat: int, tmp: Path) -> dict[str, Any]:
    from ragops.config import EmbeddingSettings
    from ragops.embedding import Embedder
    from ragops.errors import ConfigError

    keep = None
    if limit is not None:
        keep = {str(json.loads(line)["_id"]) for line in H.iter_lines(dataset / "corpus.jsonl", limit)}
    queries, qrels = H.test_queries(dataset, keep)
    texts = [queries[q] for q in queries if q in qrels]
    embedders: dict[str, Any] = {}
    out: dict[str, Any] = {"queries": len(texts), "repeat": repeat, "backends": {}}
    for backend, quant in BACKENDS:
        name = backend + ("" if quant == "none" else f"-{quant}")
        emb = Embedder(EmbeddingSettings(backend=backend, quantize=quant, cache_dir=str(tmp / "models")))
        t0 = time.perf_counter()
        try:
            emb.encode(["warm-up"], log_every=1e9)
        except ConfigError as exc:  # openvino is an optional package
            log.info("%s: skipped (%s)", name, exc)
            out["backends"][name] = {"skipped": str(exc)}
            continue
        for q in texts[:20]:
            emb.encode([q], log_every=1e9)
        embedders[name] = emb
        out["backends"][name] = {"load_or_export_s": round(time.perf_counter() - t0, 2), "rounds": []}
        log.info("%s: loaded", name)
    tokenizer = next(iter(embedders.values())).tokenizer
    out["word_pieces_p50"] = statistics.median(len(tokenizer(t)["input_ids"]) for t in texts)
    for r in range(repeat):
        for name, emb in embedders.items():
            ms = []
            for q in texts:
                t = time.perf_counter()
                emb.encode([q], log_every=1e9)
                ms.append((time.perf_counter() - t) * 1000)
            summary = H.latency_summary(ms)
            out["backends"][name]["rounds"].append(summary)
            log.info("round %d %s: p50 %.2f ms, p95 %.2f ms (load %s)", r + 1, name, summary["p50_ms"],
                     summary["p95_ms"], H.loadavg())
    for fig in out["backends"].values():
        if fig.get("rounds"):
            fig["p50_ms"] = round(statistics.median(x["p50_ms"] for x in fig["rounds"]), 2)
            fig["p95_ms"] = round(statistics.median(x["p95_ms"] for x in fig["rounds"]), 2)
    out["load_at_end"] = H.loadavg()
    return out


def evaluate(fig: dict[str, Any]) -> list[H.Target]:
    d = fig["backends"][DEFAULT]
    return [H.Target(f"{DEFAULT} (default): query embedding p50, median of rounds (ms)", d["p50_ms"],
                     f"<= {QUERY_P50_MS}", d["p50_ms"] <= QUERY_P50_MS)]


def render(results: dict[str, Any], markdown: bool) -> str:
    m, f = results["machine"], results["figures"]
    facts = (f"date {results['date']}; {H.cpus_python_torch(m)}; {f['queries']} test queries (median "
             f"{f['word_pieces_p50']} word pieces), {f['repeat']} rounds; {H.load_averages(m)}; load at the end "
             f"{f['load_at_end']}")
    rows = []
    for name, b in f["backends"].items():
        if "skipped" in b:
            rows.append([name, "skipped", "", b["skipped"][:80]])
            continue
        per_round = ", ".join(f"{x['p50_ms']:.2f}/{x['p95_ms']:.2f}" for x in b["rounds"])
        rows.append([name, f"{b['p50_ms']:.2f} / {b['p95_ms']:.2f}", per_round, H.fmt(b["load_or_export_s"])])
    tables = [(["check", "value", "target", "result"], H.target_rows(results["targets"])),
              (["backend", "p50 / p95 ms (median of rounds)", "each round p50/p95", "first load incl. export (s)"],
               rows)]
    notes = ["`Embedder.encode([query])` one query at a time after 20 warm-up queries, as `ragops search`, an "
             "evaluation and the live application embed; backends one after another within a round."]
    return H.render_report(results, "ragops query embedding latency, BEIR SciFact", facts, tables, markdown, notes)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="query embedding latency per backend (see bench/README.md)")
    H.add_common_args(p, render=True)
    p.add_argument("--repeat", type=int, default=3, help="rounds over all test queries per backend (default 3)")
    return H.dataset_main(p, argv, benchmark=RESULT_STEM, script=SCRIPT, logger=log, tmp_prefix="ragops-bench-query-",
                          measure=lambda dataset, args, tmp: measure(dataset, args.limit, args.repeat, tmp),
                          evaluate=evaluate, render=render)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
