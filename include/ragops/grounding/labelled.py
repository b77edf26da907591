"""Labelled answers: how well does a groundedness checker agree with the labels?

A labelled file is JSONL, one answer per line::

    {"id": "q001-negation", "question": "...", "contexts": ["passage 1", ...], "answer": "...",
     "label": "grounded" | "hallucinated", "kind": "negation", "source": "golden"}

``kind`` says which error was injected (``negation``, ``number``, ``name``, ``appended``), or
``grounded``, or ``model`` for real answers labelled by hand. ``ragops eval groundedness FILE``
reports, for every checker, the detection rate per error kind and the false alarms on grounded
answers; ``ragops eval calibrate FILE`` reports agreement with the labels (accuracy, precision
and recall on hallucinated answers, Cohen's kappa) and stores it, so a gate can say how far the
checker that decided is to be trusted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragops.errors import EvalError, brief

log = logging.getLogger(__name__)
LABELS = ("grounded", "hallucinated")


@dataclass(frozen=True)
class LabelledAnswer:
    id: str
    question: str
    contexts: tuple[str, ...]
    answer: str
    hallucinated: bool
    kind: str
    source: str


def load_labelled(path: str | Path) -> list[LabelledAnswer]:
    """Rows of a labelled JSONL file; an error names file, line and field."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"labelled file {p} does not exist; pass a JSONL file of {{question, contexts, answer, label}} "
                        "rows (include/eval/groundedness/docs.jsonl is the bundled one)")
    rows: list[LabelledAnswer] = []
    seen: set[str] = set()
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{i}"
        try:
            r = json.loads(line)
        except ValueError as exc:
            raise EvalError(f"{where}: not JSON ({exc.msg}); each line must be one JSON object") from exc
        if not isinstance(r, dict):
            raise EvalError(f"{where}: a row must be a JSON object, got {type(r).__name__}")
        for key in ("answer", "label"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise EvalError(f"{where}: field {key!r} is missing or empty")
        if r["label"] not in LABELS and r["label"] not in ("supported", "unsupported"):
            raise EvalError(f"{where}: field 'label' is {brief(r['label'])}; use 'grounded' or 'hallucinated'")
        ctx = r.get("contexts")
        if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
            raise EvalError(f"{where}: field 'contexts' must be a list of passage texts")
        rid = str(r.get("id") or f"line{i}")
        if rid in seen:
            raise EvalError(f"{where}: duplicate id {brief(rid)}")
        seen.add(rid)
        bad = r["label"] in ("hallucinated", "unsupported")
        rows.append(LabelledAnswer(rid, str(r.get("question") or ""), tuple(ctx), r["answer"], bad,
                                   str(r.get("kind") or ("hallucinated" if bad else "grounded")),
                                   str(r.get("source") or "")))
    if not rows:
        raise EvalError(f"labelled file {p} has no rows")
    return rows


# A checker maps (question, contexts, answer) to (hallucinated?, detail); None = could not decide.
Verdict = tuple[bool | None, dict[str, Any]]
CheckFn = Callable[[str, list[str], str], Verdict]


def agreement(pred: list[bool], truth: list[bool]) -> dict[str, float | int | None]:
    """Accuracy, precision/recall/F1 on the hallucinated class, Cohen's kappa."""
    n = len(pred)
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    tn = sum((not p) and (not t) for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum((not p) and t for p, t in zip(pred, truth, strict=True))
    acc = (tp + tn) / n if n else None
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
    pe = (((tp + fp) / n) * ((tp + fn) / n) + ((tn + fn) / n) * ((tn + fp) / n)) if n else 0.0
    kappa = (acc - pe) / (1 - pe) if acc is not None and pe < 1 else None
    return {"n": n, "accuracy": acc, "precision": prec, "recall": rec, "f1": f1, "kappa": kappa,
            "tp": tp, "tn": tn, "fp": fp, "fn": fn}


def evaluate_checker(name: str, check: CheckFn, rows: list[LabelledAnswer]) -> dict[str, Any]:
    """Detection per error kind, false alarms on grounded answers, agreement, cost in seconds."""
    t0 = time.perf_counter()
    preds: list[bool] = []
    undecided = 0
    misses: list[dict[str, Any]] = []
    for i, r in enumerate(rows, start=1):
        verdict, detail = check(r.question, list(r.contexts), r.answer)
        if verdict is None:
            undecided += 1
            verdict = False  # undecided never counts as a detection
        preds.append(verdict)
        if verdict != r.hallucinated:
            misses.append({"id": r.id, "kind": r.kind, "label": "hallucinated" if r.hallucinated else "grounded",
                           "answer": r.answer[:300], "detail": detail})
        if i % 50 == 0:
            log.info("%s: %d/%d answers checked", name, i, len(rows))
    seconds = time.perf_counter() - t0
    kinds: dict[str, dict[str, Any]] = {}
    for r, p in zip(rows, preds, strict=True):
        k = kinds.setdefault(r.kind, {"n": 0, "flagged": 0, "label": "hallucinated" if r.hallucinated else "grounded"})
        k["n"] += 1
        k["flagged"] += int(p)
    for k in kinds.values():
        k["rate"] = k["flagged"] / k["n"]
    grounded = [p for r, p in zip(rows, preds, strict=True) if not r.hallucinated]  # every grounded kind
    return {"checker": name, "n": len(rows), "by_kind": kinds,
            "false_alarm_rate": (sum(grounded) / len(grounded)) if grounded else None,
            "detection_rate": (sum(p for r, p in zip(rows, preds, strict=True) if r.hallucinated)
                               / max(1, sum(r.hallucinated for r in rows))),
            "agreement": agreement(preds, [r.hallucinated for r in rows]), "undecided": undecided,
            "seconds": round(seconds, 3), "seconds_per_1k_answers": round(seconds / len(rows) * 1000, 2),
            "misses": misses}


def meets_target(report: dict[str, Any], detection: float = 0.9, false_alarms: float = 0.05) -> dict[str, bool]:
    """The issue's target: >= 90% detection for each error kind at <= 5% false alarms on grounded answers."""
    out = {k: v["rate"] >= detection for k, v in report["by_kind"].items() if v["label"] == "hallucinated"}
    out["false_alarms"] = (report["false_alarm_rate"] or 0.0) <= false_alarms
    return out


def checkers(settings: Any, names: list[str] | None = None) -> dict[str, CheckFn]:
    """The checkers that can run here: ``deterministic`` (ragops.grounding), ``cosine`` (the sentence
    cosine check ragops used before, kept as a baseline) and ``judge`` (claim verification by the LLM
    judge; only with an endpoint: the llm_default Connection or RAGOPS_LLM_BASE_URL)."""
    from ragops.embedding import Embedder
    from ragops.evaluation import metrics as M
    from ragops.grounding.checker import GroundednessChecker
    from ragops.llm import ChatClient, Context, Judge, LlmSettings, SentenceEncoder

    want = names or ["deterministic", "cosine", "judge"]
    unknown = [n for n in want if n not in ("deterministic", "cosine", "judge")]
    if unknown:
        raise EvalError(f"unknown checker(s) {', '.join(unknown)}: use deterministic, cosine or judge")
    enc = SentenceEncoder(Embedder(settings.embedding))
    out: dict[str, CheckFn] = {}
    if "deterministic" in want:
        det = GroundednessChecker(enc)

        def deterministic(question: str, contexts: list[str], answer: str) -> Verdict:
            r = det.check(answer, contexts)
            return r["hallucinated"], {"unsupported": [(c["claim"][:120], c["reason"], c["detail"][:3])
                                                       for c in r["claims"] if not c["supported"]]}
        out["deterministic"] = deterministic
    if "cosine" in want:
        threshold = settings.eval.support_threshold

        def cosine(question: str, contexts: list[str], answer: str) -> Verdict:
            f, uns = M.faithfulness(M.split_sentences(answer) or [answer],
                                    [s for c in contexts for s in M.split_sentences(c)], enc, threshold)
            return (None if f is None else f < 1.0), {"unsupported": uns[:3]}
        out["cosine"] = cosine
    llm = LlmSettings.from_env(settings)
    if "judge" in want and llm is not None:
        judge = Judge(ChatClient(llm, settings, cache_scope="calibrate"),
                      settings.eval.judge_model or llm.model or "default", runs=1, temperature=0.0)

        def judged(question: str, contexts: list[str], answer: str) -> Verdict:
            ctx = [Context(i, f"c{i}", "", 1.0, "", "", t) for i, t in enumerate(contexts, start=1)]
            r = judge.score(question, answer, ctx)
            f = r.get("judge_faithfulness")
            return (None if f is None else f < 1.0), {k: v for k, v in r.items() if "unparsed" in k}
        out["judge"] = judged
    elif "judge" in want and names:
        raise EvalError("checker 'judge' needs an LLM endpoint: set RAGOPS_LLM_BASE_URL (for example the "
                        "`ragops llm serve` URL http://127.0.0.1:8765/v1) or the llm_default Connection")
    return out


def groundedness_report(settings: Any, path: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Every available checker on a labelled file: detection per error kind, false alarms, agreement."""
    rows = load_labelled(path)
    reports = [evaluate_checker(n, fn, rows) for n, fn in checkers(settings, names).items()]
    for r in reports:
        r["meets_target"] = meets_target(r)
    return {"file": str(path), "answers": len(rows),
            "kinds": sorted({r.kind for r in rows}), "checkers": reports}


def calibrate(settings: Any, path: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Agreement of each checker with people's labels, stored under <data_dir>/calibration/ so gates and
    the LLMOps page can say how far the checker that decided agrees with people."""
    import datetime as dt

    rep = groundedness_report(settings, path, names)
    out = {"file": rep["file"], "answers": rep["answers"], "at": dt.datetime.now(dt.UTC).isoformat(),
           "checkers": {r["checker"]: {**r["agreement"], "false_alarm_rate": r["false_alarm_rate"],
                                       "detection_rate": r["detection_rate"]} for r in rep["checkers"]}}
    folder = Path(settings.data_dir) / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "groundedness.json.tmp"
    tmp.write_text(json.dumps(out, indent=2), encoding="utf-8")
    tmp.replace(folder / "groundedness.json")
    return out


def stored_calibration(settings: Any) -> dict[str, Any] | None:
    p = Path(settings.data_dir) / "calibration" / "groundedness.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


CHECKER_METRICS = {"deterministic": ("faithfulness", "hallucination_rate", "citation_validity"),
                   "judge": ("judge_faithfulness",)}


def decided_by(settings: Any, metrics: list[str]) -> str | None:
    """Which groundedness checker produced the gate's groundedness metrics, and how well it agrees
    with people (from the last `ragops eval calibrate`), in one sentence; None when the gate has none."""
    cal = (stored_calibration(settings) or {}).get("checkers", {})
    parts = []
    for checker, names in CHECKER_METRICS.items():
        used = [m for m in names if m in metrics]
        if not used:
            continue
        what = "the deterministic claim check" if checker == "deterministic" else "the LLM judge"
        a = cal.get(checker)
        if a and a.get("kappa") is not None:
            agree = (f"agreement with human labels: kappa {a['kappa']:.2f}, accuracy {a['accuracy']:.2f}, "
                     f"false alarms {a['false_alarm_rate']:.2f}")
        else:
            agree = "agreement with people not measured yet: run `ragops eval calibrate FILE`"
        parts.append(f"{', '.join(used)} by {what} ({agree})")
    return ("Groundedness decided by " + "; ".join(parts)) if parts else None
