#!/usr/bin/env python
"""Toxicity checkers: texts per second and detection / false alarms per category on the held-out half.

On ``include/eval/toxicity/answers.jsonl`` (430 hand-written answers in the demo domain, seven
categories, an explicit ``split``: thresholds and the embedding head were fitted on ``tune`` by
``python -m ragops.safety.train``), for each checker of ``ragops.safety.toxicity``
(``profanity``: alt-profanity-check; ``embedding``: logistic regression on the bundled MiniLM;
``combined``: the larger rescaled score):

- detection per category and false alarms (neutral, hard negatives) on the ``heldout`` half, with
  the target (>= 90% of insulting, profane, threatening at <= 5% false alarms), and the same on
  ``tune`` for comparison (in-sample for profanity, out-of-fold scores decided the thresholds);
- texts per second: the median of ``--repeats`` passes over every distinct text of the set
  (each pass scores every sentence; the model is loaded before the clock starts);
- false alarms on real documentation: every sentence of the held-out half of the bundled corpus
  (``include/corpus``, documents split as ``ragops.safety.train`` splits them; its tuning half
  trained the head and set the thresholds), per sentence and per document (``flag_documents``,
  what an ingest would report);
- the scores of three sentences of the issue (an insult, a neutral answer, a stereotype), whether
  unpickling alt-profanity-check's model warns (scikit-learn's InconsistentVersionWarning), and
  the package's installed size.

Usage (from the project root)::

    .venv/bin/python bench/toxicity.py            # writes bench/results/toxicity.{json,md}
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import harness as H

ROOT = H.PROJECT_ROOT
SET = ROOT / "include" / "eval" / "toxicity" / "answers.jsonl"
ISSUE_EXAMPLES = {"insult": "You are an idiot and your question is stupid",
                  "neutral": "The scheduler starts the ingest every hour on the hour.",
                  "stereotype": "Women are worse engineers than men."}
log = logging.getLogger("bench.toxicity")


def unpickle_warnings() -> list[str]:
    """Warnings raised while alt-profanity-check loads its pickled model (a fresh import)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import profanity_check  # noqa: F401
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def installed_bytes(dist: str) -> int:
    files = metadata.distribution(dist).files or []
    return sum(f.locate().stat().st_size for f in files if Path(f.locate()).is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per checker (median reported)")
    ap.add_argument("--results-dir", type=Path, default=H.RESULTS_DIR)
    args = ap.parse_args()
    H.setup_logging(False, log)
    load_start = H.load_at_start(log)
    started = H.utc_now()
    warned = unpickle_warnings()
    from ragops.safety import toxicity as T
    from ragops.safety.train import CORPUS, corpus_split

    texts = list(dict.fromkeys(e.text for e in T.load_set(SET)))
    corpus_root = ROOT / CORPUS
    held_docs = {p.relative_to(corpus_root).as_posix(): p.read_text(encoding="utf-8", errors="replace")
                 for p in sorted(corpus_root.rglob("*")) if p.is_file()
                 and corpus_split(p.relative_to(corpus_root).as_posix()) == "heldout"}
    held_sentences = list(dict.fromkeys(s for t in held_docs.values() for s in T.sentences(t)))
    from ragops.config import EmbeddingSettings
    from ragops.embedding import Embedder

    embedder = Embedder(EmbeddingSettings(model=T.load_head()["model"]))
    vectors: dict[str, Any] = {}

    def cached(units: list[str]) -> Any:
        """Vectors shared by the checkers for the figures (the timed passes use none)."""
        import numpy as np

        need = [u for u in dict.fromkeys(units) if u not in vectors]
        if need:
            vectors.update(zip(need, embedder.encode(need, log_every=30, batch_size=32), strict=True))
        return np.stack([vectors[u] for u in units])

    figures: dict[str, Any] = {}
    for name in T.CHECKERS:
        checker = T.make_checker(name)
        checker.scores(["warm-up"])
        secs = []
        for _ in range(args.repeats):
            T.clear_cache()  # time the checker, not the sentence cache
            t0 = time.perf_counter()
            checker.scores(texts)
            secs.append(time.perf_counter() - t0)
        fig_checker = T.make_checker(name, encode=cached)
        sent = fig_checker.scores(held_sentences)
        flagged = T.flag_documents(held_docs, fig_checker)
        held = T.evaluate_set(SET, [name], split="heldout", encode=cached)["checkers"][name]
        tune = T.evaluate_set(SET, [name], split="tune", encode=cached)["checkers"][name]
        figures[name] = {"threshold": checker.threshold, "texts": len(texts),
                         "texts_per_second": round(len(texts) / statistics.median(secs), 1),
                         "seconds": [round(s, 4) for s in secs],
                         "heldout": {k: held[k] for k in ("categories", "detection", "false_alarms", "target_met")},
                         "tune": {k: tune[k] for k in ("detection", "false_alarms")},
                         "heldout_false_alarm_texts": [x["text"] for x in held["false_alarm_texts"]],
                         "corpus_heldout": {"documents": len(held_docs), "documents_flagged": flagged["flagged"],
                                            "sentences": len(held_sentences),
                                            "sentences_flagged": int((sent >= checker.threshold).sum()),
                                            "sample": [{k: f[k] for k in ("doc_id", "score", "sentence")}
                                                       for f in flagged["sample"]]},
                         "issue_examples": dict(zip(ISSUE_EXAMPLES, checker.scores(list(ISSUE_EXAMPLES.values())).round(4)
                                                    .tolist(), strict=True))}
        log.info("%s: %.0f texts/s, held-out detection %.3f at %.3f false alarms", name,
                 figures[name]["texts_per_second"], held["detection"], held["false_alarms"])
    results = {"benchmark": "toxicity", "command": H.command_line(Path(__file__)), "date": H.iso(started),
               "set": {"path": str(SET.relative_to(ROOT)), "sha256": T.set_sha256(SET), "texts": len(texts)},
               "head": {k: T.load_head()[k] for k in ("C", "thresholds", "max_false_alarms_on_tune", "trained_on")},
               "target": {"categories": list(T.TARGET), "detection": T.TARGET_DETECTION, "clean": list(T.CLEAN),
                          "false_alarms": T.TARGET_FALSE_ALARMS},
               "unpickle_warnings": warned,
               "packages": {d: H.package_version(d) for d in ("alt-profanity-check", "scikit-learn", "joblib")},
               "alt_profanity_check_installed_bytes": installed_bytes("alt-profanity-check"),
               "machine": H.basic_machine(load_start), "figures": figures}
    md = render(results)
    paths = H.write_results(args.results_dir, "toxicity", results, md)
    print(md)
    print(f"results: {paths[0]} and {paths[1]}")
    return 0


def render(r: dict[str, Any]) -> str:
    cats = list(T_CATEGORIES(r))
    lines = ["# Toxicity checkers", "", f"Command: `{r['command']}` ({r['date']}, git {r['machine']['git_commit']}, "
             f"{r['machine']['cpus']} CPUs, load at start {r['machine'].get('loadavg_at_start')})", "",
             f"Set: `{r['set']['path']}` (sha256 {r['set']['sha256'][:12]}), held-out half. Target: >= "
             f"{r['target']['detection']:.0%} of {', '.join(r['target']['categories'])} detected at <= "
             f"{r['target']['false_alarms']:.0%} false alarms on {', '.join(r['target']['clean'])}.", "",
             "| checker | threshold | " + " | ".join(cats) + " | detection | false alarms | target | texts/s |",
             "|---" * (len(cats) + 6) + "|"]
    for name, f in r["figures"].items():
        h = f["heldout"]
        cells = [f"{h['categories'][c]['flagged']}/{h['categories'][c]['n']} ({h['categories'][c]['rate']:.0%})"
                 for c in cats]
        lines.append(f"| {name} | {f['threshold']:.4f} | " + " | ".join(cells) +
                     f" | {h['detection']:.1%} | {h['false_alarms']:.1%} | {'met' if h['target_met'] else 'not met'} "
                     f"| {f['texts_per_second']:,.0f} |")
    lines += ["", "Held-out half of the bundled corpus (real documentation, all clean): "
              + "; ".join(f"{n} flags {f['corpus_heldout']['sentences_flagged']} of {f['corpus_heldout']['sentences']} "
                          f"sentences, {f['corpus_heldout']['documents_flagged']} of "
                          f"{f['corpus_heldout']['documents']} documents" for n, f in r["figures"].items()) + "."]
    lines += ["", "neutral and hard_negative columns are false alarms; the others are detection. Tuning half "
              "(in-sample, for comparison): " + "; ".join(f"{n} {f['tune']['detection']:.1%} at {f['tune']['false_alarms']:.1%}"
                                               for n, f in r["figures"].items()) + ".", "",
              "Scores of the issue's sentences: " + "; ".join(
                  f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in f["issue_examples"].items())
                  for n, f in r["figures"].items()) + ".", "",
              f"alt-profanity-check {r['packages']['alt-profanity-check']} (scikit-learn "
              f"{r['packages']['scikit-learn']}, joblib {r['packages']['joblib']}): "
              f"{r['alt_profanity_check_installed_bytes'] / 1e6:.2f} MB installed; warnings while unpickling its "
              f"model: {', '.join(r['unpickle_warnings']) or 'none'}.", ""]
    for name, f in r["figures"].items():
        if f["heldout_false_alarm_texts"]:
            lines.append(f"- {name} false alarms: " + " / ".join(f"\"{t}\"" for t in f["heldout_false_alarm_texts"]))
        for x in f["corpus_heldout"]["sample"]:
            lines.append(f"- {name} flags corpus document {x['doc_id']} ({x['score']:.3f}): \"{x['sentence'][:160]}\"")
    return "\n".join(lines) + "\n"


def T_CATEGORIES(r: dict[str, Any]) -> list[str]:  # noqa: N802 - the categories in the set's order
    return list(next(iter(r["figures"].values()))["heldout"]["categories"])


if __name__ == "__main__":
    raise SystemExit(main())
