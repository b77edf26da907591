#!/usr/bin/env python
"""Online evaluation cost: seconds and memory per 1,000 sampled production traces.

Ingests the bundled demo corpus (``include/corpus``) into a temporary embedded store, answers
every golden question of ``include/eval/golden/docs.jsonl`` through ``ragops.app.answer`` (the
extractive production prompt ``rag_answer``; each answer written as a trace: 50 distinct traces),
loads them, then times ``ragops.production.monitor.evaluate`` on all of them (sample rate 1)
``--repeat`` times, each time as a fresh run would meet them (the evaluations of the previous
repetition deleted, the sentence-embedding cache emptied): claim-level groundedness,
citation validity, PII, blocklist and planted-instruction checks; no LLM judge (``--judge`` is not
offered: the judge's cost is the endpoint's, see bench/groundedness.py for the local model's).

Usage (from the project root)::

    .venv/bin/python bench/online_eval.py                 # writes bench/results/online_eval.{json,md}
    .venv/bin/python bench/online_eval.py --repeat 2      # smoke run (online_eval.smoke.*)
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

log = logging.getLogger("bench.online_eval")
SCRIPT = Path(__file__)


def render_md(r: dict) -> str:
    f = r["figures"]
    return "\n".join([
        "# Online evaluation cost per 1,000 sampled traces", "",
        f"{r['when']} on {r['machine']['platform']} ({r['machine']['cpus']} CPUs); "
        f"load average at start {r['load_avg_start']}; commit {r['code']['commit']}.", "",
        f"Command: `{r['command']}`", "",
        "| figure | value |", "|---|---|",
        f"| traces evaluated | {f['evaluated']} |",
        f"| wall seconds per 1,000 traces | {f['seconds_per_1000']} |",
        f"| CPU seconds per 1,000 traces | {f['cpu_seconds_per_1000']} |",
        f"| ms per trace, p50 / p95 over the repetitions (50 traces each) | {f['ms_per_trace']['p50_ms']} / {f['ms_per_trace']['p95_ms']} |",
        f"| hallucinated (extractive answers, of 50) | {f['hallucinated']} |",
        f"| peak RSS of the process | {f['peak_rss_mb']} MB |",
        "| USD per 1,000 traces | 0 (local checker; the LLM judge is off) |", "",
    ]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10, help="times the 50 traces are evaluated afresh (default 10)")
    H.add_common_args(ap, dataset=False, limit=False, keep_tmp=False, render=True)
    args = ap.parse_args()
    if args.render:
        H.rewrite_markdown(args.render, render_md)
        return 0
    H.setup_logging(args.verbose, log)
    load_start = H.load_at_start(log)
    from ragops.evaluation.datasets import load_dataset
    from ragops.indexing import sync
    from ragops.production import monitor
    from ragops.production.app import answer
    from ragops.production.load import load

    questions = [q.question for q in load_dataset(H.PROJECT_ROOT / "include/eval/golden/docs.jsonl").questions]
    with tempfile.TemporaryDirectory(prefix="ragops-bench-online-") as tmp:
        settings = H.open_settings(Path(tmp) / "data")
        sync(settings, str(H.PROJECT_ROOT / "include" / "corpus"), "docs", trigger="bench")
        from ragops.registry import sync as sync_prompts

        sync_prompts(settings)
        log.info("answering %d questions", len(questions))
        for q in questions:
            answer(q, index="docs", prompt="rag_answer", settings=settings)
        loaded = load(settings)
        from ragops import state
        from ragops.embedding import Embedder
        from ragops.llm import SentenceEncoder

        enc = SentenceEncoder(Embedder(settings.embedding))
        enc(["warm-up"])
        batches: list[float] = []
        total = {"evaluated": 0, "hallucinated": 0}
        wall = cpu = 0.0
        for _ in range(args.repeat):
            with state.session_scope(settings.state_db_url) as s:
                s.query(state.TraceEval).delete()
            enc.cache.clear()  # a fresh run: no sentence vector of an earlier run
            with H.Timer() as t:
                r = monitor.evaluate(settings, run_id="bench", rate=1.0, cap=10**9, encoder=enc)
            wall, cpu = wall + t.wall, cpu + t.cpu
            total["evaluated"] += r["evaluated"]
            total["hallucinated"] = r["hallucinated"]
            batches.append(t.wall * 1000 / max(r["evaluated"], 1))
    n = max(total["evaluated"], 1)
    result = {
        "when": H.iso(H.utc_now()), "host": platform.node(), "code": {"commit": H.git_commit()},
        "command": H.command_line(SCRIPT), "machine": H.basic_machine(load_start),
        "load_avg_start": load_start, "load_avg_end": H.loadavg(),
        "params": {"repeat": args.repeat, "questions": len(questions), "traces": loaded.traces},
        "figures": {"evaluated": total["evaluated"], "hallucinated": total["hallucinated"],
                    "seconds_per_1000": round(wall / n * 1000, 1), "cpu_seconds_per_1000": round(cpu / n * 1000, 1),
                    "ms_per_trace": H.latency_summary(batches, 1), "peak_rss_mb": round(H.maxrss_kib() / 1000, 1)},
    }
    md = render_md(result)
    H.write_results(args.results_dir, H.result_stem("online_eval", args.repeat < 5), result, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
