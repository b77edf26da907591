#!/usr/bin/env python
"""The promotion gate under sampling noise: how often it decides wrongly, and what it can still see.

Simulation, no model: 40 questions, each with a true score p drawn uniformly from [0.2, 0.95];
each run answers every question ``--samples`` times (default 3), each answer good or not at random
(Bernoulli(p), or p + normal noise sd 0.15 clipped to [0, 1]). Two runs of the same version are
gated against each other (``ragops.gates.compare_metric``, margin 0.02, 95%, 2,000 resamples):
"worse" = the gate's regression (significant and material drop), "better" = a significant and
material rise. Then a version truly worse by ``delta`` (power). Both with the plain paired
bootstrap over the questions' sample means (one level) and with the two-level bootstrap that also
resamples each question's samples (what the gate does when runs store samples, ``eval.samples``).

Usage::

    .venv/bin/python bench/gate_sampling.py          # writes bench/results/gate_sampling.{json,md}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import harness as H
import numpy as np

from ragops.gates import compare_metric

SCRIPT = Path(__file__).resolve()


def decide(seed: int, delta: float, two_level: bool, noise: str, questions: int, n: int) -> str:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.95, questions)
    if noise == "bernoulli":
        cand = rng.binomial(1, np.clip(p + delta, 0, 1)[:, None], (questions, n)).astype(float)
        base = rng.binomial(1, p[:, None], (questions, n)).astype(float)
    else:
        cand = np.clip(p[:, None] + delta + rng.normal(0, 0.15, (questions, n)), 0, 1)
        base = np.clip(p[:, None] + rng.normal(0, 0.15, (questions, n)), 0, 1)
    qs = [f"q{i}" for i in range(questions)]
    cur = {q: float(cand[i].mean()) for i, q in enumerate(qs)}
    bas = {q: float(base[i].mean()) for i, q in enumerate(qs)}
    cs = {q: cand[i].tolist() for i, q in enumerate(qs)} if two_level else None
    bs = {q: base[i].tolist() for i, q in enumerate(qs)} if two_level else None
    c = compare_metric("m", cur, bas, 0.02, 2000, 0.95, seed, True, cs, bs)
    assert c is not None
    if c.regressed:
        return "worse"
    return "better" if c.ci_low > 0 and c.difference > 0.02 else "same"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--questions", type=int, default=40)
    H.add_common_args(ap, dataset=False, limit=False, keep_tmp=False, verbose=False)
    args = ap.parse_args()
    rows = []
    for noise in ("bernoulli", "normal"):
        for delta in (0.0, -0.15, -0.25):
            for two in (False, True):
                d = [decide(s, delta, two, noise, args.questions, args.samples) for s in range(args.trials)]
                rows.append({"noise": noise, "delta": delta, "bootstrap": "two-level" if two else "one-level",
                             "worse": d.count("worse") / len(d), "better": d.count("better") / len(d),
                             "same": d.count("same") / len(d)})
    result = {"when": H.iso(H.utc_now()), "command": H.command_line(SCRIPT),
              "trials": args.trials, "questions": args.questions, "samples": args.samples, "rows": rows}
    md = ["# The gate under sampling noise (simulation)", "",
          f"{result['when']}, `{result['command']}`: {args.trials} trials per line, {args.questions} questions x "
          f"{args.samples} samples, margin 0.02, 95% interval, 2,000 resamples. delta 0 = a version gated against "
          "itself (any 'worse' or 'better' is a wrong decision); delta < 0 = truly worse (share 'worse' = power).",
          "", "| noise per sample | delta | bootstrap | worse (rejected) | better (significant rise) | same |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['noise']} | {r['delta']} | {r['bootstrap']} | {100 * r['worse']:.1f}% | {100 * r['better']:.1f}% | "
           f"{100 * r['same']:.1f}% |" for r in rows]
    H.write_results(args.results_dir, "gate_sampling", result, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
