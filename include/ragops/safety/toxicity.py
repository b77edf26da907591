"""Toxicity of answers and documents: offline classifiers, no download at run time.

Three checkers, measured on the labelled set ``include/eval/toxicity/answers.jsonl``
(``ragops eval toxicity``, ``bench/toxicity.py``):

- ``profanity``: alt-profanity-check, a scikit-learn linear model on word n-grams shipped in its
  wheel. Fast (thousands of texts a second) and good at swearing and name-calling, blind to
  threats and stereotypes that use no offensive word.
- ``embedding``: a logistic regression on the bundled sentence embeddings (all-MiniLM-L6-v2),
  whose weights are ``toxicity_head.json`` beside this file, fitted by ``python -m
  ragops.safety.train`` on the set's tuning half only (with the sentences of the tuning half of the
  bundled corpus as clean examples). It reads meaning, so it catches threats,
  insults without a listed word and many stereotypes; it is slower (one embedding per sentence).
- ``combined`` (the default): the larger of the two scores, each first rescaled so that its own
  threshold maps to 0.5.

A text is scored sentence by sentence and takes its worst sentence's score: one insult inside a
long, polite answer is not diluted by the rest. Every threshold was chosen on the tuning half
(the lowest score with at most 2% of the clean tuning answers and 0.2% of the tuning corpus
sentences flagged, see ``train``); the held-out halves are only ever reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragops.errors import RagopsError, brief

log = logging.getLogger(__name__)

HEAD_PATH = Path(__file__).with_name("toxicity_head.json")
DEFAULT_SET = "include/eval/toxicity/answers.jsonl"
# category -> the label it must carry
CATEGORIES: dict[str, str] = {"neutral": "ok", "hard_negative": "ok", "rude": "toxic", "insulting": "toxic",
                              "profane": "toxic", "threatening": "toxic", "stereotype": "toxic"}
CLEAN = ("neutral", "hard_negative")  # a flag here is a false alarm
TARGET = ("insulting", "profane", "threatening")  # the detection target covers these
TARGET_DETECTION = 0.90
TARGET_FALSE_ALARMS = 0.05
SPLITS = ("tune", "heldout")
CHECKERS = ("profanity", "embedding", "combined")
DEFAULT_CHECKER = "combined"

Encode = Callable[[list[str]], np.ndarray]


class ToxicityError(RagopsError):
    """A labelled toxicity set or a checker name/threshold that cannot be used."""


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    category: str
    label: str
    split: str


def load_set(path: str | Path) -> list[Example]:
    """Read and validate a labelled set: one JSON object a line with text, category, label and
    optionally id and split. Every problem names the line and the fix."""
    p = Path(path)
    if not p.is_file():
        raise ToxicityError(f"toxicity set {p} does not exist: give a JSONL file with one object a line "
                            f"({{\"text\", \"category\", \"label\", \"split\"}}), e.g. {DEFAULT_SET}")
    out: list[Example] = []
    seen: set[str] = set()
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ToxicityError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise ToxicityError(f"{where}: expected a JSON object with text, category and label, got {brief(row)}")
        missing = [k for k in ("text", "category", "label") if k not in row]
        if missing:
            raise ToxicityError(f"{where}: missing field(s) {', '.join(missing)}; each line needs text, category "
                                "and label (and split: tune or heldout)")
        text, cat, label = row["text"], row["category"], row["label"]
        if not isinstance(text, str) or not text.strip():
            raise ToxicityError(f"{where}: field 'text' must be a non-empty string, got {brief(text)}")
        if cat not in CATEGORIES:
            raise ToxicityError(f"{where}: unknown category {brief(cat)}; use one of {', '.join(CATEGORIES)}")
        if label != CATEGORIES[cat]:
            raise ToxicityError(f"{where}: label {brief(label)} does not fit category {cat!r}; {cat} answers are "
                                f"labelled {CATEGORIES[cat]!r} (ok: neutral, hard_negative; toxic: the others)")
        split = row.get("split", "heldout")
        if split not in SPLITS:
            raise ToxicityError(f"{where}: unknown split {brief(split)}; use tune or heldout")
        rid = str(row.get("id") or f"line-{n}")
        if rid in seen:
            raise ToxicityError(f"{where}: duplicate id {rid!r}; ids must be unique")
        seen.add(rid)
        out.append(Example(rid, text, cat, label, split))
    if not out:
        raise ToxicityError(f"toxicity set {p} has no examples")
    return out


def set_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- checkers


def sentences(text: str) -> list[str]:
    """The units a text is scored by: its sentences (the whole text when it has none)."""
    from ragops.evaluation.metrics import split_sentences, strip_citations

    parts = [strip_citations(s) for s in split_sentences(text or "")]
    parts = [s for s in parts if s]
    return parts or ([text.strip()] if (text or "").strip() else [])


UNIT_CACHE_SIZE = 200_000
_UNIT_SCORES: OrderedDict[tuple[str, str], float] = OrderedDict()  # (checker key, sentence) -> score


def clear_cache() -> None:
    """Forget every cached sentence score (benchmarks time the checkers, not the cache)."""
    _UNIT_SCORES.clear()


class Checker:
    """Scores in [0, 1]; a text is toxic when its score is >= ``threshold``."""

    name = "base"

    def __init__(self, threshold: float) -> None:
        if not 0 < threshold <= 1:
            raise ToxicityError(f"toxicity threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)

    def score_units(self, units: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, the highest score of its sentences (0 for an empty text)."""
        pairs: list[tuple[int, int]] = []  # (text, unit)
        units: list[str] = []
        index: dict[str, int] = {}
        for i, t in enumerate(texts):
            for s in sentences(t):
                if s not in index:
                    index[s] = len(units)
                    units.append(s)
                pairs.append((i, index[s]))
        out = np.zeros(len(texts), dtype=np.float64)
        if units:
            key = self.cache_key()
            got = np.array([_UNIT_SCORES.get((key, u), np.nan) for u in units], dtype=np.float64)
            todo = [j for j in range(len(units)) if np.isnan(got[j])]
            if todo:  # retrieved passages repeat across questions and runs: score each sentence once
                fresh = np.asarray(self.score_units([units[j] for j in todo]), dtype=np.float64)
                got[todo] = fresh
                for j, v in zip(todo, fresh, strict=True):
                    _UNIT_SCORES[(key, units[j])] = float(v)
                while len(_UNIT_SCORES) > UNIT_CACHE_SIZE:
                    _UNIT_SCORES.popitem(last=False)
            for i, j in pairs:
                out[i] = max(out[i], got[j])
        return out

    def cache_key(self) -> str:
        """What a sentence's score depends on besides the sentence (the threshold does not count)."""
        return self.name

    def verdicts(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return [{"score": round(float(s), 6), "toxic": bool(s >= self.threshold)} for s in self.scores(texts)]


# Unambiguous swearing, with its inflections, compounds and starred spellings. A sentence with one
# of these scores 1.0 whatever the linear model says: alt-profanity-check weighs word n-grams
# against the whole sentence, so a single swearword in an otherwise technical sentence ("The
# embedded store is a clusterfuck with two writers.") scored 0.0 to 0.5, below its threshold.
# Only words with no technical or everyday meaning are listed: not "hell" (dependency hell), "kill",
# "dummy", "abort", "master", "slave", "screw" or "dick" (a name); those are the hard negatives.
SWEARING = re.compile(
    r"(?<![a-z])(?:"
    r"[a-z]*f(?:u|\*|@|#)(?:c|\*)k[a-z]*|f\*+k[a-z]*|"  # fuck, fucking, clusterfuck, motherfucker, f*ck, f**k
    r"[a-z]*sh(?:i|\*|1|!)t(?:s|ty|tier|tiest|ting|ted|head|hole|show|storm)?|"  # shit, bullshit, shitty, sh*t
    r"god ?damn[a-z]*|damn(?:ed|it|s)?|dammit|"
    r"ass ?holes?|arse ?holes?|dumbass(?:es)?|jackass(?:es)?|smartass(?:es)?|"
    r"bitch(?:y|ing|ed)?|bastards?|cunts?|dickheads?|twats?|wank[a-z]*|bollocks|piss(?:ed|es|ing)?(?: off)?|"
    r"crap(?:py|pier|piest|s)?|wtf|stfu|omfg"
    r")(?![a-z])", re.IGNORECASE)


def swearing(text: str) -> bool:
    return SWEARING.search(text) is not None


class ProfanityChecker(Checker):
    """alt-profanity-check's linear model, and 1.0 for a sentence with an unambiguous swearword."""

    name = "profanity"

    def cache_key(self) -> str:
        return "profanity+swearing"

    def score_units(self, units: list[str]) -> np.ndarray:
        from profanity_check import predict_prob

        model = np.asarray(predict_prob(units), dtype=np.float64)
        return np.where([swearing(u) for u in units], 1.0, model)


class EmbeddingChecker(Checker):
    """Logistic regression on the bundled model's normalised sentence embeddings."""

    name = "embedding"

    def __init__(self, threshold: float, head: dict[str, Any], encode: Encode | None = None,
                 backend: str | None = None) -> None:
        super().__init__(threshold)
        self.weights = np.asarray(head["weights"], dtype=np.float64)
        self.intercept = float(head["intercept"])
        self.model = str(head["model"])
        self._encode = encode
        self._backend = backend

    def encode(self, units: list[str]) -> np.ndarray:
        if self._encode is None:
            from ragops.config import EmbeddingSettings
            from ragops.embedding import Embedder

            settings = EmbeddingSettings(model=self.model, **({"backend": self._backend} if self._backend else {}))
            embedder = Embedder(settings)
            self._encode = lambda texts: embedder.encode(texts, log_every=1e9, batch_size=32)
        return np.asarray(self._encode(units), dtype=np.float64)

    def cache_key(self) -> str:
        return f"embedding:{self.model}:{self.intercept!r}:{float(self.weights.sum())!r}:{self._backend}"

    def score_units(self, units: list[str]) -> np.ndarray:
        x = self.encode(units)
        if x.shape[1] != self.weights.size:
            raise ToxicityError(f"the toxicity head expects {self.weights.size}-dimensional vectors of {self.model}, "
                                f"got {x.shape[1]}: pass the bundled model's encoder (or none)")
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.intercept)))


def rescale(score: np.ndarray, threshold: float) -> np.ndarray:
    """Piecewise linear map with 0 -> 0, threshold -> 0.5, 1 -> 1 (puts two checkers on one scale)."""
    s = np.asarray(score, dtype=np.float64)
    return np.where(s < threshold, 0.5 * s / threshold, 0.5 + 0.5 * (s - threshold) / max(1.0 - threshold, 1e-12))


class CombinedChecker(Checker):
    """The larger rescaled score of the profanity and the embedding checkers."""

    name = "combined"

    def __init__(self, threshold: float, parts: Sequence[Checker]) -> None:
        super().__init__(threshold)
        self.parts = list(parts)

    def cache_key(self) -> str:
        return "combined:" + "|".join(f"{p.cache_key()}@{p.threshold!r}" for p in self.parts)

    def score_units(self, units: list[str]) -> np.ndarray:
        return np.max([rescale(p.score_units(units), p.threshold) for p in self.parts], axis=0)


def load_head(path: Path = HEAD_PATH) -> dict[str, Any]:
    if not path.is_file():
        raise ToxicityError(f"the toxicity head {path} is missing: regenerate it with `python -m ragops.safety.train`")
    return json.loads(path.read_text(encoding="utf-8"))


def make_checker(name: str = DEFAULT_CHECKER, *, threshold: float | None = None, encode: Encode | None = None,
                 backend: str | None = None, head: dict[str, Any] | None = None) -> Checker:
    """A checker by name with its tuned threshold (``threshold`` overrides it). ``encode``: a
    function returning normalised vectors of the bundled model (e.g. an eval run's encoder)."""
    if name not in CHECKERS:
        raise ToxicityError(f"unknown toxicity checker {name!r}; use one of {', '.join(CHECKERS)}")
    head = head or load_head()
    tuned = head["thresholds"]
    if name == "profanity":
        return ProfanityChecker(tuned["profanity"] if threshold is None else threshold)
    if name == "embedding":
        return EmbeddingChecker(tuned["embedding"] if threshold is None else threshold, head, encode, backend)
    parts = [ProfanityChecker(tuned["profanity"]), EmbeddingChecker(tuned["embedding"], head, encode, backend)]
    return CombinedChecker(tuned["combined"] if threshold is None else threshold, parts)


def score_texts(texts: Sequence[str], checker: Checker | None = None) -> list[float]:
    """Toxicity score of each text (its worst sentence), with the default checker unless given."""
    checker = checker or make_checker()
    return [round(float(s), 6) for s in checker.scores(list(texts))]


def flag_documents(docs: Mapping[str, str] | Iterable[tuple[str, str]], checker: Checker | None = None,
                   sample_size: int = 5) -> dict[str, Any]:
    """A data-quality finding for ingest: which documents have a toxic sentence.

    ``docs``: doc id -> text (or pairs). Returns the count, the flagged ids with their score and
    worst sentence, and a sample for a run report. Pure: it indexes, deletes and stores nothing."""
    checker = checker or make_checker()
    items = list(docs.items()) if isinstance(docs, Mapping) else list(docs)
    flagged: list[dict[str, Any]] = []
    for doc_id, text in items:
        units = sentences(text)
        if not units:
            continue
        scores = checker.scores(units)
        worst = int(np.argmax(scores))
        if scores[worst] >= checker.threshold:
            flagged.append({"doc_id": doc_id, "score": round(float(scores[worst]), 4),
                            "sentence": units[worst][:300],
                            "toxic_sentences": int((scores >= checker.threshold).sum())})
    flagged.sort(key=lambda f: -f["score"])
    return {"checker": checker.name, "threshold": checker.threshold, "checked": len(items), "flagged": len(flagged),
            "flagged_ids": [f["doc_id"] for f in flagged], "sample": flagged[:sample_size], "all": flagged}


# ---------------------------------------------------------------- evaluation on a labelled set


def category_table(examples: Sequence[Example], scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Per category: n, flagged, rate; then detection on TARGET, false alarms on CLEAN, verdict."""
    cats: dict[str, dict[str, Any]] = {}
    for c in CATEGORIES:
        idx = [i for i, e in enumerate(examples) if e.category == c]
        if not idx:
            continue
        k = int(sum(scores[i] >= threshold for i in idx))
        cats[c] = {"n": len(idx), "flagged": k, "rate": round(k / len(idx), 4),
                   "kind": "false_alarm" if c in CLEAN else "detection"}
    tgt = [i for i, e in enumerate(examples) if e.category in TARGET]
    cln = [i for i, e in enumerate(examples) if e.category in CLEAN]
    det = sum(scores[i] >= threshold for i in tgt) / len(tgt) if tgt else None
    fa = sum(scores[i] >= threshold for i in cln) / len(cln) if cln else None
    met = det is not None and fa is not None and det >= TARGET_DETECTION and fa <= TARGET_FALSE_ALARMS
    return {"threshold": round(threshold, 6), "categories": cats,
            "detection": None if det is None else round(float(det), 4),
            "false_alarms": None if fa is None else round(float(fa), 4), "target_met": bool(met)}


def evaluate_set(path: str | Path, checkers: Sequence[str] = CHECKERS, split: str = "heldout",
                 threshold: float | None = None, encode: Encode | None = None) -> dict[str, Any]:
    """Every checker on a labelled set's ``split`` (tune, heldout or all): detection per
    category, false alarms on clean answers, and whether the target is met; texts per second."""
    if split not in (*SPLITS, "all"):
        raise ToxicityError(f"unknown split {split!r}; use tune, heldout or all")
    examples = [e for e in load_set(path) if split == "all" or e.split == split]
    if not examples:
        raise ToxicityError(f"{path} has no examples in split {split!r}; give each line \"split\": \"tune\" or "
                            "\"heldout\", or pass --split all")
    texts = [e.text for e in examples]
    out: dict[str, Any] = {"path": str(path), "sha256": set_sha256(path), "split": split, "n": len(examples),
                           "target": {"categories": list(TARGET), "detection": TARGET_DETECTION,
                                      "clean": list(CLEAN), "false_alarms": TARGET_FALSE_ALARMS},
                           "checkers": {}}
    for name in checkers:
        checker = make_checker(name, threshold=threshold, encode=encode)
        checker.scores(texts[:1])  # load the model before the clock starts
        clear_cache()
        t0 = time.perf_counter()
        scores = checker.scores(texts)
        secs = time.perf_counter() - t0
        table = category_table(examples, scores, checker.threshold)
        table["texts_per_second"] = round(len(texts) / max(secs, 1e-9), 1)
        table["missed"] = [{"id": e.id, "category": e.category, "score": round(float(s), 4), "text": e.text}
                           for e, s in zip(examples, scores, strict=True)
                           if e.label == "toxic" and s < checker.threshold][:50]
        table["false_alarm_texts"] = [{"id": e.id, "category": e.category, "score": round(float(s), 4),
                                       "text": e.text}
                                      for e, s in zip(examples, scores, strict=True)
                                      if e.label == "ok" and s >= checker.threshold]
        out["checkers"][name] = table
        log.info("toxicity checker %s on %s (%s): detection %.3f, false alarms %.3f", name, path, split,
                 table["detection"] or 0.0, table["false_alarms"] or 0.0)
    return out


def choose_threshold(scores: np.ndarray, clean: np.ndarray, max_false_alarms: float) -> float:
    """The lowest threshold at which at most ``max_false_alarms`` of the clean texts are flagged
    (detection can only fall as the threshold rises, so the lowest admissible one detects most)."""
    s = np.asarray(scores, dtype=np.float64)
    clean_scores = np.sort(s[np.asarray(clean, dtype=bool)])[::-1]
    allowed = int(np.floor(max_false_alarms * clean_scores.size))
    if allowed >= clean_scores.size:
        return float(max(np.min(s), 1e-6))
    # just above the (allowed + 1)-th highest clean score
    return float(min(1.0, np.nextafter(clean_scores[allowed], 2.0)))
