#!/usr/bin/env python
"""Groundedness checkers on the labelled set: detection per error kind, false alarms, kappa, cost.

On ``include/eval/groundedness/docs.jsonl`` (grounded reference answers and the same answers with
one injected error: negation, number, name, appended sentence), for each checker of
``ragops.grounding.labelled.checkers``:

- ``deterministic``: the claim-level check of ``ragops.grounding`` (bundled MiniLM), whole file;
- ``cosine``: the sentence-cosine faithfulness ragops used before, whole file;
- ``judge``: claim verification by an LLM judge, here the bundled SmolLM2-135M-Instruct served by a
  ``ragops llm serve`` subprocess this script starts on a free loopback port and stops at the end.
  At several seconds per call on 2 cores it runs on a fixed stratified subset (``--judge-per-kind``
  answers of each kind, drawn with ``--seed``); deterministic and cosine are also reported on that
  same subset, so the three can be compared answer for answer.

Figures per checker (``ragops.grounding.labelled.evaluate_checker``): detection rate per error
kind, false-alarm rate on grounded answers, Cohen's kappa against the labels, undecided answers
(an unparseable judge verdict: never counted as a detection), and wall seconds per 1,000 answers on
this machine (USD 0: everything is local).

The judge is ``ragops.llm.Judge`` (runs=1, temperature 0) exactly as the library builds it, with
one change: only its faithfulness task is asked (``ragops.llm.JUDGE_TASKS`` narrowed in this
process). The verdict uses only faithfulness; the relevance call would double the cost and change
nothing.

Usage (from the project root)::

    .venv/bin/python bench/groundedness.py                    # writes bench/results/groundedness.{json,md}
    .venv/bin/python bench/groundedness.py --no-judge         # deterministic and cosine only (*.nojudge.*)
    .venv/bin/python bench/groundedness.py --judge-per-kind 1 # smoke run (*.smoke.*)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
ROOT = H.PROJECT_ROOT
LABELLED = ROOT / "include" / "eval" / "groundedness" / "docs.jsonl"
SERVED = "smollm2-135m-instruct-q4_1"
log = logging.getLogger("bench.groundedness")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_data_dir: Path, log_path: Path, threads: int,
                 timeout: float = 600) -> tuple[subprocess.Popen, str, float]:
    """``ragops llm serve`` on a free port; (process, base URL, seconds until /health answered)."""
    port = free_port()
    env = H.isolated_env(model_data_dir)
    exe = Path(sys.executable).parent / "ragops"
    t0 = time.perf_counter()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(exe), "llm", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--threads", str(threads)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"ragops llm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if "ragops llm serving" in log_path.read_text(errors="replace"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                return proc, f"http://127.0.0.1:{port}/v1", time.perf_counter() - t0
            except OSError:
                pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"ragops llm serve not ready within {timeout}s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stratified(rows: list[Any], per_kind: int, seed: int) -> list[Any]:
    """``per_kind`` rows of each kind (all of a smaller kind), drawn with a seeded RNG, in file order."""
    rng = random.Random(seed)
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_kind.setdefault(r.kind, []).append(i)
    keep: set[int] = set()
    for idx in by_kind.values():
        keep.update(rng.sample(idx, min(per_kind, len(idx))))
    return [r for i, r in enumerate(rows) if i in keep]


def memo(fn: Any) -> Any:
    """The checker with its verdicts remembered (the subset repeats answers of the whole file)."""
    seen: dict[tuple, Any] = {}

    def check(question: str, contexts: list[str], answer: str) -> Any:
        key = (question, tuple(contexts), answer)
        if key not in seen:
            seen[key] = fn(question, contexts, answer)
        return seen[key]
    return check


def logged(name: str, fn: Any, total: int) -> Any:
    """The checker, logging each verdict and its time (the judge is slow: show progress)."""
    done = [0]

    def check(question: str, contexts: list[str], answer: str) -> Any:
        t0 = time.perf_counter()
        out = fn(question, contexts, answer)
        done[0] += 1
        log.info("%s %d/%d: %s in %.1f s", name, done[0], total, out[0], time.perf_counter() - t0)
        return out
    return check


def summary(rep: dict[str, Any]) -> dict[str, Any]:
    from ragops.grounding.labelled import meets_target

    return {"checker": rep["checker"], "n": rep["n"],
            "by_kind": {k: {"n": v["n"], "flagged": v["flagged"], "rate": round(v["rate"], 4), "label": v["label"]}
                        for k, v in sorted(rep["by_kind"].items())},
            "false_alarm_rate": rep["false_alarm_rate"], "detection_rate": round(rep["detection_rate"], 4),
            "kappa": None if rep["agreement"]["kappa"] is None else round(rep["agreement"]["kappa"], 4),
            "agreement": rep["agreement"], "undecided": rep["undecided"], "seconds": rep["seconds"],
            "seconds_per_1k_answers": rep["seconds_per_1k_answers"], "usd_per_1k_answers": 0.0,
            "meets_target": meets_target(rep), "misses": rep["misses"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", type=Path, default=LABELLED)
    ap.add_argument("--judge-per-kind", type=int, default=4,
                    help="answers of each kind the judge sees (default 4: 20 answers)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--no-judge", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the model server (default 1: on 2 cores shared with other work, two "
                         "threads contend and run far slower)")
    ap.add_argument("--model-data-dir", type=Path,
                    default=Path(os.environ.get("RAGOPS_TEST_LLM_DATA_DIR")
                                 or Path(tempfile.gettempdir()) / "ragops-test-local-llm"),
                    help="data dir of the model server (its converted model folder is reused; the first start "
                         "there converts the GGUF once, ~20-40 s)")
    H.add_common_args(ap, dataset=False, limit=False, keep_tmp=False, render=True)
    args = ap.parse_args()
    if args.render:
        H.rewrite_markdown(args.render, render_md)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the model server (finally)
    H.setup_logging(args.verbose, log)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()
    load_start = H.load_at_start(log, "timings will be slower than on a quiet machine")

    from ragops.grounding.labelled import checkers, evaluate_checker, load_labelled

    smoke = args.judge_per_kind < 3 and not args.no_judge
    with tempfile.TemporaryDirectory(prefix="ragops-bench-ground-") as tmp:
        settings = H.open_settings(Path(tmp) / "data")  # the judge's response cache lives here (fresh: no hits)
        rows = load_labelled(args.file)
        subset = stratified(rows, args.judge_per_kind, args.seed)
        log.info("%d labelled answers; judge subset %d (%d per kind, seed %d)", len(rows), len(subset),
                 args.judge_per_kind, args.seed)

        judge: dict[str, Any] | None = None
        server_info: dict[str, Any] = {}
        if not args.no_judge:  # first: the slow part, and the one that needs a server
            import ragops.llm as L

            for task in [t for t in L.JUDGE_TASKS if t != "faithfulness"]:
                L.JUDGE_TASKS.pop(task)  # the verdict needs faithfulness only
            args.model_data_dir.mkdir(parents=True, exist_ok=True)
            proc, url, ready_s = start_server(args.model_data_dir, Path(tmp) / "serve.log", args.threads)
            server_info = {"base_url": url, "ready_s": round(ready_s, 1), "served_model": SERVED, "threads": args.threads,
                           "model_data_dir": str(args.model_data_dir)}
            log.info("ragops llm serve ready at %s after %.1f s", url, ready_s)
            try:
                os.environ["RAGOPS_LLM_BASE_URL"] = url
                os.environ["RAGOPS_LLM_MODEL"] = SERVED
                jsettings = settings.replace(eval=dataclasses.replace(settings.eval, llm_timeout_seconds=600.0,
                                                                      llm_max_retries=0, judge_model=SERVED))
                replies: list[str] = []  # the judge's raw replies, kept for the results (observation only)
                chat = L.ChatClient.chat

                def recording_chat(self: Any, *a: Any, **kw: Any) -> Any:
                    out = chat(self, *a, **kw)
                    replies.append(str(out[0].get("content", ""))[:600])
                    return out
                L.ChatClient.chat = recording_chat  # type: ignore[method-assign]
                fn = checkers(jsettings, ["judge"])["judge"]
                judge = summary(evaluate_checker("judge", logged("judge", fn, len(subset)), subset))
            finally:
                stop_server(proc)
            judge["raw_replies"] = [{"id": r.id, "kind": r.kind, "reply": t} for r, t in zip(subset, replies, strict=False)]
            log.info("judge: %s, false alarms %s, kappa %s, undecided %d, %.0f s/1k",
                     {k: v["rate"] for k, v in judge["by_kind"].items()}, judge["false_alarm_rate"], judge["kappa"],
                     judge["undecided"], judge["seconds_per_1k_answers"])

        local = {n: memo(fn) for n, fn in checkers(settings, ["deterministic", "cosine"]).items()}
        local["deterministic"]("warm-up", ["The model is loaded."], "The model is loaded.")  # model load untimed
        full = {n: summary(evaluate_checker(n, fn, rows)) for n, fn in local.items()}
        on_subset = {}
        for n, fn in local.items():  # verdicts from the whole-file run (memoised); its cost figure too
            on_subset[n] = summary(evaluate_checker(n, fn, subset))
            on_subset[n].update({k: full[n][k] for k in ("seconds_per_1k_answers",)},
                                seconds=round(full[n]["seconds_per_1k_answers"] * len(subset) / 1000, 3))
        for n, r in full.items():
            log.info("%s (whole file): %s, false alarms %s, kappa %s, %.1f s/1k", n,
                     {k: v["rate"] for k, v in r["by_kind"].items()}, r["false_alarm_rate"], r["kappa"],
                     r["seconds_per_1k_answers"])

    code = {"commit": H.git_commit(),
            "uncommitted_in_checkers": H.git("status", "--short", "include/ragops/grounding",
                                             "include/ragops/llm.py").split("\n")[:-1]}
    result = {
        "when": H.iso(H.utc_now()), "host": platform.node(), "code": code, "command": H.command_line(SCRIPT),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "machine_note": f"{os.cpu_count()} cores shared with other engineers' work (tests, builds) during the run: "
                        "every timing is inflated compared with a quiet machine",
        "load_avg_start": load_start, "load_avg_end": H.loadavg(),
        "duration_s": round(time.perf_counter() - started, 1),
        "file": str(args.file.relative_to(ROOT) if args.file.is_relative_to(ROOT) else args.file),
        "answers": len(rows), "kinds": {k: sum(r.kind == k for r in rows) for k in sorted({r.kind for r in rows})},
        "judge_subset": {"per_kind": args.judge_per_kind, "seed": args.seed, "n": len(subset),
                         "ids": [r.id for r in subset]},
        "judge_setup": "ragops.llm.Judge via ragops.grounding.labelled.checkers(['judge']): runs=1, temperature 0, "
                       "faithfulness task only; hallucinated = supported share < 1; an unparseable verdict is "
                       "undecided (counted as not flagged)",
        "server": server_info, "whole_file": full, "subset": {**on_subset, **({"judge": judge} if judge else {})},
    }
    md = render_md(result)
    H.write_results(args.results_dir, H.result_stem("groundedness", "nojudge" if args.no_judge else smoke), result, md)
    print(md)
    return 0


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def table(reps: dict[str, dict[str, Any]], kinds: list[str]) -> list[str]:
    head = "| checker | n | " + " | ".join(f"detects {k}" for k in kinds) + \
           " | false alarms (grounded) | Cohen's kappa | undecided | s per 1,000 answers | USD per 1,000 |"
    out = [head, "|" + "---|" * (len(kinds) + 7)]
    for name, r in reps.items():
        cells = []
        for k in kinds:
            v = r["by_kind"].get(k)
            cells.append("-" if v is None else f"{pct(v['rate'])} ({v['flagged']}/{v['n']})")
        fa = r["by_kind"].get("grounded", {})
        kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
        out.append(f"| {name} | {r['n']} | " + " | ".join(cells) +
                   f" | {pct(r['false_alarm_rate'])} ({fa.get('flagged', 0)}/{fa.get('n', 0)}) | {kappa} | "
                   f"{r['undecided']} | {r['seconds_per_1k_answers']:,.0f} | 0 |")
    return out


def verdict(result: dict[str, Any]) -> str:
    sub = result["subset"]
    j, d = sub.get("judge"), sub.get("deterministic")
    if not j or not d:
        return "The judge was not run."
    jk, dk = j["kappa"] or 0.0, d["kappa"] or 0.0
    word = "better" if jk > dk + 0.05 else ("worse" if jk < dk - 0.05 else "about as good")
    return (f"On the same {j['n']} answers the 135M judge is **{word}** than the deterministic check: kappa "
            f"{jk:.2f} vs {dk:.2f}, detection {pct(j['detection_rate'])} vs {pct(d['detection_rate'])}, false alarms "
            f"{pct(j['false_alarm_rate'])} vs {pct(d['false_alarm_rate'])}, {j['undecided']} undecided verdict(s), "
            f"and about {j['seconds_per_1k_answers'] / max(d['seconds_per_1k_answers'], 1e-9):,.0f} times slower.")


def code_note(result: dict[str, Any]) -> str:
    code = result.get("code") or {}
    if not code:
        return ""
    dirty = code.get("uncommitted_in_checkers") or []
    return (f" Code: commit {code['commit']}" + (f", with uncommitted changes in {', '.join(d.split()[-1] for d in dirty)}"
                                                  if dirty else "") + (f" ({code['note']})" if code.get("note") else "")
            + ".")


def render_md(result: dict[str, Any]) -> str:
    kinds = [k for k in ("negation", "number", "name", "appended", "model") if k in result["kinds"]]
    sub = result["judge_subset"]
    md = ["# Groundedness checkers on the labelled set", "",
          f"Run {result['when']} on {result['cpus']} CPUs, Python {result['python']}, {result['duration_s']} s in "
          f"all; load average at start {result['load_avg_start'][0]}, at end {result['load_avg_end'][0]}. "
          f"{result['machine_note']}. Command: `{result['command']}`." + code_note(result), "",
          f"File `{result['file']}`: {result['answers']} answers ("
          + ", ".join(f"{k} {v}" for k, v in result["kinds"].items()) + "). Detection = share of the answers with "
          "that injected error flagged as hallucinated; false alarms = share of grounded answers flagged. "
          "Cost is wall-clock on this machine, local models only (USD 0).", "",
          "## Whole file (deterministic, cosine)", "", *table(result["whole_file"], kinds), "",
          f"## Stratified subset: {sub['n']} answers ({sub['per_kind']} per kind, seed {sub['seed']}), all checkers",
          "", "The judge (SmolLM2-135M-Instruct through `ragops llm serve`) takes seconds per answer on 2 shared "
          "cores, so it runs on this subset only; the other checkers are shown on the same answers (their verdicts "
          "and cost per answer from the whole-file run).", "",
          *table(result["subset"], kinds), "", f"Judge: {result['judge_setup']}.", "", verdict(result), ""]
    raw = (result["subset"].get("judge") or {}).get("raw_replies") or []
    if raw:
        md += ["What the judge replied (first three, cut at 300 characters):", ""]
        md += [f"- `{r['id']}`: " + " ".join(r["reply"].split())[:300].replace("|", "\\|") for r in raw[:3]]
        md.append("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
