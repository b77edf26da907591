"""Fit the embedding toxicity head and choose every checker's threshold, on the tuning half only.

    python -m ragops.safety.train [--set include/eval/toxicity/answers.jsonl] [--out PATH]

Deterministic: the same set and model give the same file. Steps, all on the ``tune`` split:

1. sentence embeddings of the bundled model (all-MiniLM-L6-v2, normalised) of each whole text,
   and of every sentence of the ``tune`` half of the bundled corpus (``include/corpus``, documents
   split by the parity of the SHA-256 of their path): real documentation sentences, headings and
   fragments as clean examples, so that the head does not learn "short or imperative = toxic";
2. logistic regression (scikit-learn, lbfgs, balanced classes), positives = every toxic category;
   its regularisation C is picked from ``C_GRID`` by out-of-fold detection (5 folds stratified by
   category) of the target categories at the false-alarm budget;
3. thresholds: the lowest with at most ``MAX_FALSE_ALARMS`` of the clean tuning answers flagged
   and at most ``MAX_CORPUS_FALSE_ALARMS`` of the tuning corpus sentences (a document has dozens of
   sentences, so a document-level false alarm needs a far lower sentence rate), on the profanity
   scores, on the out-of-fold embedding scores (never on scores of texts the model was fitted on)
   and on their combination;
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
MAX_CORPUS_FALSE_ALARMS = 0.002
CORPUS = "include/corpus"


def corpus_split(rel: str) -> str:
    """A corpus document's half: the parity of the SHA-256 of its path under the corpus."""
    import hashlib

    return "tune" if int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 2 == 0 else "heldout"


def corpus_sentences(root: Path, split: str) -> list[tuple[str, str]]:
    """(document, sentence) of every document of ``split``, each distinct sentence once."""
    out: dict[str, str] = {}
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        rel = p.relative_to(root).as_posix()
        if corpus_split(rel) == split:
            for s in T.sentences(p.read_text(encoding="utf-8", errors="replace")):
                out.setdefault(s, rel)
    return [(d, s) for s, d in out.items()]
MODEL = "bundled:all-MiniLM-L6-v2"


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, y)


def train(set_path: str | Path, encode: T.Encode | None = None, corpus: str | Path | None = None) -> dict[str, Any]:
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
    extra = [s for _, s in corpus_sentences(Path(corpus), "tune")] if corpus else []
    texts = [e.text for e in examples] + extra
    cats = np.array([e.category for e in examples] + ["corpus"] * len(extra))
    y = np.array([e.label == "toxic" for e in examples] + [False] * len(extra), dtype=int)
    clean = np.isin(cats, T.CLEAN)
    docs = cats == "corpus"
    target = np.isin(cats, T.TARGET)
    x = np.asarray(encode(texts), dtype=np.float64)
    cache: dict[str, np.ndarray] = dict(zip(texts, x, strict=True))  # a one-sentence text is its own unit

    def unit_vecs(units: list[str]) -> np.ndarray:
        need = [u for u in dict.fromkeys(units) if u not in cache]
        if need:
            cache.update(zip(need, np.asarray(encode(need), dtype=np.float64), strict=True))
        return np.stack([cache[u] for u in units])

    def oof_scores(c: float) -> np.ndarray:
        """Out-of-fold scores, computed as the checker computes them (worst sentence)."""
        out = np.zeros(len(texts))
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
        for tr, te in folds.split(x, cats):
            model = _fit(x[tr], y[tr], c)
            head = {"weights": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]), "model": MODEL}
            checker = T.EmbeddingChecker(0.5, head, encode=unit_vecs)
            out[te] = checker.scores([texts[i] for i in te])
        return out

    def threshold(s: np.ndarray) -> float:
        t = T.choose_threshold(s, clean, MAX_FALSE_ALARMS)
        return max(t, T.choose_threshold(s, docs, MAX_CORPUS_FALSE_ALARMS)) if docs.any() else t

    def detection_at_budget(s: np.ndarray) -> tuple[float, float]:
        t = threshold(s)
        return float((s[target] >= t).mean()), t

    prof = T.ProfanityChecker(0.5).scores(texts)
    t_prof = threshold(prof)
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
    t_emb = threshold(oof)
    combined = np.maximum(T.rescale(prof, t_prof), T.rescale(oof, t_emb))
    t_comb = threshold(combined)
    model = _fit(x, y, c_best)
    tuned = {"profanity": (prof, t_prof), "embedding": (oof, t_emb), "combined": (combined, t_comb)}
    return {
        "model": MODEL, "dimension": int(x.shape[1]),
        "weights": [float(f"{w:.7g}") for w in model.coef_[0]], "intercept": float(f"{model.intercept_[0]:.7g}"),
        "C": c_best, "C_grid": grid, "positives": sorted(c for c, lab in T.CATEGORIES.items() if lab == "toxic"),
        "thresholds": {k: float(f"{t:.7g}") for k, (_, t) in tuned.items()},
        "max_false_alarms_on_tune": MAX_FALSE_ALARMS, "max_corpus_false_alarms_on_tune": MAX_CORPUS_FALSE_ALARMS,
        "tune_figures": {k: {"detection": round(float((s[target] >= t).mean()), 4),
                             "false_alarms": round(float((s[clean] >= t).mean()), 4),
                             "corpus_sentence_false_alarms": round(float((s[docs] >= t).mean()), 4) if docs.any()
                             else None}
                         for k, (s, t) in tuned.items()},
        "corpus": {"path": CORPUS, "split": "tune", "sentences": len(extra)} if corpus else None,
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
    ap.add_argument("--no-corpus", action="store_true", help="train on the labelled set only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from ragops.config import project_root

    head = train(args.set or _default_set(), corpus=None if args.no_corpus else project_root() / CORPUS)
    Path(args.out).write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: head[k] for k in ("C", "C_grid", "thresholds", "tune_figures")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
