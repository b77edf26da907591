#!/usr/bin/env python
"""Where an evaluation run's time goes: one ``run_eval`` under cProfile on an existing index.

Loads the embedder and store once, warms up on 20 questions, fills the vector cache with one
unprofiled run (``--cache warm``, the default) or empties it (``--cache cold``), then profiles one whole
``run_eval`` of the golden set with the bundled offline prompt and prints the wall time and the
cumulative time of the functions that matter (groundedness, toxicity, the embedding model,
retrieval), then the top of the cumulative profile. The profiler adds its own cost.

Usage (from the project root), on the data directory ``bench/eval_scifact.py --keep-tmp`` left::

    .venv/bin/python bench/eval_profile.py --data-dir /tmp/ragops-eval-bench-XXXX/data \\
        --golden /tmp/ragops-eval-bench-XXXX/scifact-test.jsonl [--index scifact]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import harness as H

WATCH = {  # label -> (file suffix, function name)
    "run_eval": ("evaluation/runner.py", "run_eval"),
    "groundedness (claim check)": ("grounding/checker.py", "check"),
    "groundedness: passage clause vectors": ("grounding/checker.py", "_vectors"),
    "toxicity metrics": ("evaluation/runner.py", "toxicity_metrics"),
    "toxicity: embedding head's sentence vectors": ("safety/toxicity.py", "encode"),
    "embedding model (onnxruntime run)": ("onnxruntime_inference_collection.py", "run"),
    "retrieval (blocks)": ("evaluation/runner.py", "block"),
}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--golden", type=Path, required=True)
    p.add_argument("--index", default="scifact")
    p.add_argument("--prompt", default="rag_answer@1")
    p.add_argument("--top", type=int, default=30, help="lines of the cumulative profile printed")
    p.add_argument("--cache", choices=["warm", "cold"], default="warm",
                   help="profile a run on the vector cache a previous run left (warm: the nightly case; one "
                        "unprofiled run fills it first) or on an empty one (cold: the first run on an index)")
    args = p.parse_args(argv)
    os.environ["RAGOPS_DATA_DIR"] = str(args.data_dir)
    from ragops.config import load_settings
    from ragops.embedding import Embedder
    from ragops.evaluation.runner import run_eval
    from ragops.vectorstore import VectorStore

    settings = load_settings()
    embedder, store = Embedder(settings.embedding), VectorStore(settings)
    run_eval(settings, args.golden, args.prompt, args.index, embedder=embedder, store=store,
             run_id=f"profile-warm-{int(time.time())}", sample_size=20)
    if args.cache == "warm":
        run_eval(settings, args.golden, args.prompt, args.index, embedder=embedder, store=store,
                 run_id=f"profile-fill-{int(time.time())}")
    H.forget_eval_caches(settings.data_dir, embedder.fingerprint, disk=args.cache == "cold")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_eval(settings, args.golden, args.prompt, args.index, embedder=embedder, store=store,
             run_id=f"profile-{int(time.time())}")
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    print(f"run_eval wall time under the profiler ({args.cache} vector cache): {wall:.1f} s")
    for label, (suffix, name) in WATCH.items():
        hits = [(v[1], v[3]) for (f, _, fn), v in stats.stats.items()  # type: ignore[attr-defined]
                if fn == name and f.endswith(suffix)]
        if hits:
            print(f"  {label}: {sum(c for c, _ in hits)} calls, {max(t for _, t in hits):.1f} s cumulative")
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
