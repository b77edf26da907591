"""Fit the embedding toxicity head and choose every checker's threshold, on the tuning half only.

    python -m ragops.safety.train [--set include/eval/toxicity/answers.jsonl] [--out PATH]

Deterministic: the same set and model give the same file. Steps, all on the ``tune`` split:

1. sentence embeddings of the bundled model (all-MiniLM-L6-v2, normalised) of each whole text;
2. logistic regression (scikit-learn, lbfgs, balanced classes), positives = every toxic category;
   its regularisation C is picked from ``C_GRID`` by out-of-fold detection (5 folds stratified by
   category) of the target categories at the false-alarm budget;
3. thresholds: the lowest with at most ``MAX_FALSE_ALARMS`` of the clean tuning texts flagged,
   on the profanity scores, on the out-of-fold embedding scores (never on scores of texts the
   model was fitted on) and on their combination;
4. the final head is fitted on the whole tuning half and written with its provenance.

The false-alarm budget on the tuning half (2%) is below the 5% target, so that the held-out half,
which is never looked at here, has room for the threshold's sampling error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ragops.safety import toxicity as T

log = logging.getLogger(__name__)
C_GRID = (1.0, 4.0, 16.0)
FOLDS = 5
SEED = 13
MAX_FALSE_ALARMS = 0.02
MODEL = "bundled:all-MiniLM-L6-v2"


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, y)


def train(set_path: str | Path, encode: T.Encode | None = None) -> dict[str, Any]:
    """The head as a JSON-ready dict (see the module docstring)."""
    from sklearn.model_selection import StratifiedKFold

    examples = [e for e in T.load_set(set_path) if e.split == "tune"]
    if not examples:
        raise T.ToxicityError(f"{set_path} has no tuning examples (split: tune) to train on")
    if encode is None:
        from ragops.config import EmbeddingSettings
        from ragops.embedding import Embedder

        embedder = Embedder(EmbeddingSettings(model=MODEL))
        def encode(texts: list[str]) -> np.ndarray:
            return embedder.encode(texts, log_every=1e9, batch_size=32)
    texts = [e.text for e in examples]
    cats = np.array([e.category for e in examples])
    y = np.array([e.label == "toxic" for e in examples], dtype=int)
    clean = np.isin(cats, T.CLEAN)
    target = np.isin(cats, T.TARGET)
    x = np.asarray(encode(texts), dtype=np.float64)
    cache: dict[str, np.ndarray] = {}

    def unit_vecs(units: list[str]) -> np.ndarray:
        need = [u for u in dict.fromkeys(units) if u not in cache]
        if need:
            cache.update(zip(need, np.asarray(encode(need), dtype=np.float64), strict=True))
        return np.stack([cache[u] for u in units])

    def oof_scores(c: float) -> np.ndarray:
        """Out-of-fold scores, computed as the checker computes them (worst sentence)."""
        out = np.zeros(len(examples))
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
        for tr, te in folds.split(x, cats):
            model = _fit(x[tr], y[tr], c)
            head = {"weights": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]), "model": MODEL}
            checker = T.EmbeddingChecker(0.5, head, encode=unit_vecs)
            out[te] = checker.scores([texts[i] for i in te])
        return out

    def detection_at_budget(s: np.ndarray) -> tuple[float, float]:
        t = T.choose_threshold(s, clean, MAX_FALSE_ALARMS)
        return float((s[target] >= t).mean()), t

    prof = T.ProfanityChecker(0.5).scores(texts)
    t_prof = T.choose_threshold(prof, clean, MAX_FALSE_ALARMS)
    grid: list[dict[str, Any]] = []
    best: tuple[float, float, np.ndarray] | None = None
    for c in C_GRID:
        oof = oof_scores(c)
        det, t = detection_at_budget(oof)
        grid.append({"C": c, "oof_detection": round(det, 4), "oof_threshold": round(t, 6)})
        if best is None or det > best[0] + 1e-12:
            best = (det, c, oof)
    assert best is not None
    _, c_best, oof = best
    t_emb = T.choose_threshold(oof, clean, MAX_FALSE_ALARMS)
    combined = np.maximum(T.rescale(prof, t_prof), T.rescale(oof, t_emb))
    t_comb = T.choose_threshold(combined, clean, MAX_FALSE_ALARMS)
    model = _fit(x, y, c_best)
    tuned = {"profanity": (prof, t_prof), "embedding": (oof, t_emb), "combined": (combined, t_comb)}
    return {
        "model": MODEL, "dimension": int(x.shape[1]),
        "weights": [float(f"{w:.7g}") for w in model.coef_[0]], "intercept": float(f"{model.intercept_[0]:.7g}"),
        "C": c_best, "C_grid": grid, "positives": sorted(c for c, lab in T.CATEGORIES.items() if lab == "toxic"),
        "thresholds": {k: float(f"{t:.7g}") for k, (_, t) in tuned.items()},
        "max_false_alarms_on_tune": MAX_FALSE_ALARMS,
        "tune_figures": {k: {"detection": round(float((s[target] >= t).mean()), 4),
                             "false_alarms": round(float((s[clean] >= t).mean()), 4)}
                         for k, (s, t) in tuned.items()},
        "trained_on": {"path": T.DEFAULT_SET if Path(set_path).resolve() == _default_set().resolve()
                       else str(set_path), "split": "tune", "sha256": T.set_sha256(set_path),
                       "examples": len(examples)},
        "generated_by": "python -m ragops.safety.train",
    }


def _default_set() -> Path:
    from ragops.config import project_root

    return project_root() / T.DEFAULT_SET


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default=None, help=f"labelled set (default {T.DEFAULT_SET})")
    ap.add_argument("--out", default=str(T.HEAD_PATH), help="where the head goes (default: beside the module)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    head = train(args.set or _default_set())
    Path(args.out).write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: head[k] for k in ("C", "C_grid", "thresholds", "tune_figures")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
