#!/usr/bin/env python
"""Local LLM benchmark: what the bundled SmolLM2-135M-Instruct (Q4_1 GGUF, transformers, CPU) costs.

1. a fresh data directory; ``include/corpus`` ingested into an index ``docs`` (the bundled
   MiniLM, embedded Chroma), and the top 5 chunks retrieved (dense, as ``ragops search``) for the
   first N answerable questions of ``include/eval/golden/docs.jsonl``;
2. child process *cold*: load from the GGUF file (de-quantization) plus the one-time conversion
   to a float32 folder under ``<data_dir>/models`` — what the first ``ragops llm serve`` pays;
3. child process *warm*: load from the converted folder (every later start), then each question
   rendered with ``rag_local@1`` (5 passages, greedy, max_tokens 160): prefill rate (a 1-token
   generate: prompt tokens / seconds), generation rate (new tokens after the first / the rest of
   the time), seconds per question, and the child's peak RSS.

Usage (from the project root)::

    .venv/bin/python bench/llm_local.py              # writes bench/results/llm_local.{json,md}
    .venv/bin/python bench/llm_local.py --questions 3  # smoke run (*.smoke.*)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
ROOT = H.PROJECT_ROOT
GOLDEN = ROOT / "include" / "eval" / "golden" / "docs.jsonl"
PROMPT = ROOT / "include" / "prompts" / "rag_local" / "v1.yaml"
log = logging.getLogger("bench.llm_local")


def prepare(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """Index include/corpus in ``data_dir`` and retrieve 5 contexts for the first ``n`` answerable questions."""
    from ragops.embedding import Embedder
    from ragops.indexing import sync
    from ragops.retrieval import search

    settings = H.open_settings(data_dir)
    embedder = Embedder(settings.embedding)
    t0 = time.perf_counter()
    report = sync(settings, str(ROOT / "include" / "corpus"), "docs", trigger="bench", embedder=embedder)
    log.info("indexed include/corpus in %.1fs: %s", time.perf_counter() - t0, report.get("counts", report))
    rows = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in [r for r in rows if r.get("answerable", True)][:n]:
        hits = search(settings, row["question"], k=5, index="docs", embedder=embedder, mode="dense")
        out.append({"id": row["id"], "question": row["question"], "reference_answer": row.get("reference_answer"),
                    "relevant_doc_ids": row.get("relevant_doc_ids", []),
                    "contexts": [{"n": h.rank, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score,
                                  "title": h.title, "headings": h.headings, "text": h.text} for h in hits]})
    return out


def child_cold(data_dir: Path) -> dict[str, Any]:
    from ragops.generation.local import LocalChatModel

    t0 = time.perf_counter()
    m = LocalChatModel(data_dir)
    locate = time.perf_counter() - t0
    m.load()
    return {"locate_and_hash_s": round(locate, 2), "load_s": round(m.load_seconds or 0, 2),
            "loaded_from": m.loaded_from, "peak_rss_mib": round((H.vm_hwm_kib() or 0) / 1024, 1)}


def child_warm(data_dir: Path, questions_file: Path, threads: int | None) -> dict[str, Any]:
    import torch

    from ragops.generation.local import LocalChatModel
    from ragops.llm import Context, render_messages
    from ragops.prompts import load_prompt_file

    prompt = load_prompt_file(PROMPT)
    params = prompt.model.params
    t0 = time.perf_counter()
    m = LocalChatModel(data_dir, threads=threads).load()
    wall_load = time.perf_counter() - t0
    rows = []
    for q in json.loads(questions_file.read_text(encoding="utf-8")):
        ctx = [Context(**c) for c in q["contexts"]]
        msgs = render_messages(prompt, q["question"], ctx)
        t = time.perf_counter()
        pre = m.chat(msgs, max_tokens=1, temperature=0)
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        r = m.chat(msgs, max_tokens=int(params.get("max_tokens", 160)), temperature=float(params.get("temperature", 0)))
        total_s = time.perf_counter() - t
        gen_s = max(total_s - prefill_s, 1e-6)
        rows.append({"id": q["id"], "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                     "finish_reason": r.finish_reason, "prefill_s": round(prefill_s, 3), "seconds": round(total_s, 2),
                     "prefill_tok_s": round(pre.prompt_tokens / prefill_s, 1),
                     "gen_tok_s": round(max(r.completion_tokens - 1, 0) / gen_s, 1),
                     "answer": r.text, "reference_answer": q["reference_answer"]})
        log.info("%s: %d+%d tokens in %.1fs", q["id"], r.prompt_tokens, r.completion_tokens, total_s)
    return {"load_s": round(m.load_seconds or 0, 2), "load_wall_s": round(wall_load, 2), "loaded_from": m.loaded_from,
            "torch_threads": torch.get_num_threads(), "questions": rows,
            "peak_rss_mib": round((H.vm_hwm_kib() or 0) / 1024, 1)}


def run_child(args: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    data = H.run_child([sys.executable, str(SCRIPT), *args, "--out", str(out)], out, env, log)
    if "error" in data:
        raise SystemExit(f"child {args[1]} failed: {data['error']}")
    data.pop("process_wall_s", None)
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the warm child")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="keep the indexed corpus here and reuse it next time (a re-sync of an unchanged corpus "
                         "is a no-op); the model's data dir is always fresh, so the cold load stays cold")
    ap.add_argument("--child", choices=["cold", "warm"], help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--questions-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    H.add_common_args(ap, dataset=False, limit=False, keep_tmp=False, render=True)
    args = ap.parse_args()
    if args.render:
        H.rewrite_markdown(args.render, render_md)
        return 0
    H.setup_logging(args.verbose, *([] if args.child else [log]))
    if args.child == "cold":
        H.write_json(args.out, child_cold(args.data_dir))
        return 0
    if args.child == "warm":
        H.write_json(args.out, child_warm(args.data_dir, args.questions_file, args.threads))
        return 0

    smoke = args.questions < 10
    load_start = H.load_at_start(log, "the figures will be slower than on a quiet machine")
    with H.workspace("ragops-bench-llm-", False, log) as tmp:
        t0 = time.perf_counter()
        questions = prepare(args.work_dir or tmp / "data", args.questions)
        prepare_s = time.perf_counter() - t0
        qfile = tmp / "questions.json"
        qfile.write_text(json.dumps(questions), encoding="utf-8")
        data_dir = tmp / "model-data"  # fresh: no converted model yet
        env = H.isolated_env(data_dir)
        cold = run_child(["--child", "cold", "--data-dir", str(data_dir)], tmp / "cold.json", env)
        log.info("cold load: %s", cold)
        warm_args = ["--child", "warm", "--data-dir", str(data_dir), "--questions-file", str(qfile)]
        if args.threads:
            warm_args += ["--threads", str(args.threads)]
        warm = run_child(warm_args, tmp / "warm.json", env)
    qs = warm["questions"]
    total_prompt = sum(q["prompt_tokens"] for q in qs)
    total_new = sum(q["completion_tokens"] for q in qs)
    summary = {
        "questions": len(qs),
        "contexts_per_question": 5,
        "contexts_from": "dense retrieval (ragops.retrieval.search, k=5) on an index of include/corpus built in a "
                         "temp data dir with the bundled MiniLM",
        "prompt": "rag_local@1 (temperature 0, max_tokens 160)",
        "cold_load_s": cold["load_s"], "warm_load_s": warm["load_s"],
        "prefill_tok_s_median": statistics.median(q["prefill_tok_s"] for q in qs),
        "gen_tok_s_median": statistics.median(q["gen_tok_s"] for q in qs),
        "seconds_per_question_median": statistics.median(q["seconds"] for q in qs),
        "seconds_per_question_mean": round(statistics.mean(q["seconds"] for q in qs), 2),
        "prompt_tokens_mean": round(total_prompt / len(qs), 1),
        "completion_tokens_mean": round(total_new / len(qs), 1),
        "hit_length_limit": sum(q["finish_reason"] == "length" for q in qs),
        "peak_rss_mib_warm_child": warm["peak_rss_mib"], "peak_rss_mib_cold_child": cold["peak_rss_mib"],
        "torch_threads": warm["torch_threads"],
    }
    machine = H.basic_machine(load_start)
    result = {"when": H.iso(H.utc_now()), "host": platform.node(), "command": H.command_line(SCRIPT),
              "cpus": machine["cpus"], "python": machine["python"], "git_commit": machine["git_commit"],
              "load_avg_start": machine["loadavg_at_start"], "load_avg_end": machine["loadavg_at_end"],
              "prepare_s": round(prepare_s, 1),
              "summary": summary, "cold": cold, "warm": {k: v for k, v in warm.items() if k != "questions"},
              "per_question": qs}
    md = render_md(result)
    H.write_results(args.results_dir, H.result_stem("llm_local", smoke), result, md)
    print(md)
    return 0


def render_md(result: dict[str, Any]) -> str:
    """The Markdown report of a result (also ``--render FILE.json`` to write it again)."""
    s = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["summary"].items()}
    qs = result["per_question"]
    md = ["# Local LLM benchmark (SmolLM2-135M-Instruct Q4_1, transformers, CPU)", "",
          f"Run {result['when']} on {result['cpus']} CPUs, Python {result['python']}; load average at start "
          f"{result['load_avg_start'][0]}, at end {result['load_avg_end'][0]} (other work on the machine slows every "
          f"figure). Command: `{result.get('command', '.venv/bin/python bench/llm_local.py')}`.", "",
          f"{s['questions']} answerable questions of include/eval/golden/docs.jsonl, {s['contexts_from']}; "
          f"prompt {s['prompt']}; torch threads {s['torch_threads']}.", "",
          "| figure | value |", "|---|---|",
          f"| first load: GGUF de-quantization + conversion to a float32 folder | {s['cold_load_s']} s |",
          f"| later loads (converted folder) | {s['warm_load_s']} s |",
          f"| prefill (prompt tokens/s, median) | {s['prefill_tok_s_median']} |",
          f"| generation (new tokens/s, median) | {s['gen_tok_s_median']} |",
          f"| seconds per question (median / mean) | {s['seconds_per_question_median']} / "
          f"{s['seconds_per_question_mean']} |",
          f"| prompt tokens / answer tokens (mean) | {s['prompt_tokens_mean']} / {s['completion_tokens_mean']} |",
          f"| answers cut at max_tokens | {s['hit_length_limit']} of {s['questions']} |",
          f"| peak RSS, warm child (model + generation) | {s['peak_rss_mib_warm_child']} MiB |",
          f"| peak RSS, cold child (GGUF load + conversion) | {s['peak_rss_mib_cold_child']} MiB |",
          "", "## Answers (as generated; a 135M model: judge them, do not trust them)", "",
          "| id | s | tokens in/out | answer | reference |", "|---|---|---|---|---|"]
    for q in qs:
        md.append(f"| {q['id']} | {q['seconds']} | {q['prompt_tokens']}/{q['completion_tokens']} | "
                  f"{H.md_cell(q['answer'])} | {H.md_cell(q['reference_answer'])} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
