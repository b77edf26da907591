"""Two evaluation runs side by side: every metric with its difference and paired interval, then
every question both runs answered, worst regressions first, with both answers, their contexts and
their unsupported claims.

The runs may be any two (a candidate and production from a gate decision, last night and
tonight, two retrieval modes): questions are paired by id. Runs of different datasets or index
versions are compared all the same, with a warning, since that is often the point (what did the
rebuild change?). A metric's interval is the paired bootstrap of ``ragops.gates`` over the
per-question differences; run-level figures without per-question values (latency percentiles,
cost) get their difference only.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ragops.config import Settings
from ragops.errors import EvalError
from ragops.gates import LOWER_IS_BETTER, paired_bootstrap

GROUPS = ("retrieval", "answer", "groundedness", "safety", "operations", "other")
_GROUP_PATTERNS = (
    ("retrieval", re.compile(r"^(hit_rate|ndcg|recall|precision|mrr|map)(@\d+)?$|^context_(precision|recall)")),
    ("groundedness", re.compile(r"faithful|hallucinat|citation|grounded|judge|contradict|unsupported")),
    ("safety", re.compile(r"pii|blocklist|toxic|bias|safety|jailbreak|injection")),
    ("answer", re.compile(r"^answer|_f1$|_em$|similarity|relevance|correct|refusal_accuracy")),
    ("operations", re.compile(r"latency|tokens|cost|refus|context_chars|error|questions")),
)
# what orders the questions: the change of these (lower-is-better ones counted negated); a
# question is a regression when their sum dropped
HEADLINE = ("hit_rate@5", "ndcg@10", "answer_f1", "answer_similarity", "faithfulness", "hallucination_rate",
            "refusal_accuracy", "citation_validity")
LOWER_IS_BETTER_EXTRA = re.compile(r"latency|tokens|cost|false_refusal|_rate$")


def metric_group(name: str) -> str:
    """The group a metric is shown in (retrieval, answer, groundedness, safety, operations, other)."""
    for group, pattern in _GROUP_PATTERNS:
        if pattern.search(name):
            return group
    return "other"


def lower_is_better(name: str) -> bool:
    if name in LOWER_IS_BETTER:
        return True
    if name.startswith("hit_rate"):  # a rate of successes
        return False
    return bool(LOWER_IS_BETTER_EXTRA.search(name))


def _numeric(d: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _load(settings: Settings, run_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A run and its questions by id, context texts included (``ragops.overview.eval_run``)."""
    from ragops.overview import eval_run

    data = eval_run(settings, run_id)
    return data["run"], {q["id"]: q for q in data["questions"]}


def _side(q: dict[str, Any] | None) -> dict[str, Any] | None:
    if q is None:
        return None
    detail = q.get("detail") or {}
    return {"answer": q.get("answer") or "", "refused": bool(q.get("refused")), "error": q.get("error"),
            "ok": q.get("ok", True), "metrics": _numeric(q.get("metrics")),
            "retrieved_docs": [d.get("doc_id") for d in q.get("retrieved_docs") or []],
            "contexts": [{"n": c.get("n"), "doc_id": c.get("doc_id"), "chunk_id": c.get("chunk_id"),
                          "score": c.get("score"), "page": c.get("page"),
                          "text": c.get("text", "")} for c in q.get("contexts") or []],
            "unsupported_claims": [{"claim": c.get("claim"), "reason": c.get("reason"), "passage": c.get("passage"),
                                    "closest": c.get("closest")} for c in detail.get("unsupported_claims") or []]}


def question_change(a: dict[str, float], b: dict[str, float]) -> float:
    """How much better (positive) or worse (negative) a question got from a to b: the sum of the
    changes of the headline metrics both have, a lower-is-better one counted negated."""
    total = 0.0
    for m in HEADLINE:
        if m in a and m in b:
            total += (a[m] - b[m]) if lower_is_better(m) else (b[m] - a[m])
    return round(total, 6)


def compare_runs(settings: Settings, a: str, b: str, *, samples: int | None = None,
                 confidence: float | None = None, limit: int | None = None) -> dict[str, Any]:
    """Run ``b`` against run ``a`` (differences are b - a). ``limit``: at most that many questions
    (worst first); the counts cover all of them."""
    if a == b:
        raise EvalError(f"compare two different runs (both are {a!r})")
    e = settings.eval
    samples = samples or e.bootstrap_samples
    confidence = confidence or e.confidence
    run_a, res_a = _load(settings, a)
    run_b, res_b = _load(settings, b)
    warnings = []
    if (run_a["dataset"], run_a.get("dataset_sha256")) != (run_b["dataset"], run_b.get("dataset_sha256")):
        warnings.append("the runs used different datasets: only the questions with the same id are paired")
    if (run_a["index"], run_a["index_version"]) != (run_b["index"], run_b["index_version"]):
        warnings.append(f"the runs searched different index versions ({run_a['index']} v{run_a['index_version']} "
                        f"and {run_b['index']} v{run_b['index_version']}): differences include the index's")
    ok_a = {q: _numeric(r.get("metrics")) for q, r in res_a.items() if r.get("ok", True)}
    ok_b = {q: _numeric(r.get("metrics")) for q, r in res_b.items() if r.get("ok", True)}
    common = sorted(set(ok_a) & set(ok_b))

    metrics: list[dict[str, Any]] = []
    names = sorted(set(_numeric(run_a["metrics"])) | set(_numeric(run_b["metrics"])))
    for name in names:
        va, vb = _numeric(run_a["metrics"]).get(name), _numeric(run_b["metrics"]).get(name)
        lower = lower_is_better(name)
        row: dict[str, Any] = {"metric": name, "group": metric_group(name), "lower_is_better": lower, "a": va,
                               "b": vb, "difference": None if va is None or vb is None else round(vb - va, 6),
                               "ci_low": None, "ci_high": None, "paired": 0, "verdict": "n/a"}
        paired = [q for q in common if name in ok_a[q] and name in ok_b[q]]
        if len(paired) >= 2:
            iv = paired_bootstrap([ok_b[q][name] - ok_a[q][name] for q in paired], samples, confidence, e.seed)
            row.update(paired=iv.n, paired_difference=round(iv.mean, 6), ci_low=round(iv.low, 6),
                       ci_high=round(iv.high, 6))
            if iv.low > 0 or iv.high < 0:
                up = iv.low > 0
                row["verdict"] = "worse" if up == lower else "better"
            else:
                row["verdict"] = "no significant change"
        elif row["difference"] is not None:
            row["verdict"] = "changed" if row["difference"] else "same"
        metrics.append(row)
    metrics.sort(key=lambda r: (GROUPS.index(r["group"]), r["metric"]))

    questions = []
    for qid in sorted(set(res_a) & set(res_b)):
        qa, qb = res_a[qid], res_b[qid]
        ma, mb = _numeric(qa.get("metrics")), _numeric(qb.get("metrics"))
        deltas = {m: round(mb[m] - ma[m], 6) for m in sorted(set(ma) & set(mb)) if mb[m] != ma[m]}
        questions.append({"id": qid, "question": qa.get("question") or qb.get("question") or "",
                          "tags": qa.get("tags") or qb.get("tags") or [],
                          "relevant_doc_ids": qa.get("relevant_doc_ids") or qb.get("relevant_doc_ids") or [],
                          "reference_answer": qa.get("reference_answer") or qb.get("reference_answer") or "",
                          "change": question_change(ma, mb), "deltas": deltas,
                          "answer_changed": (qa.get("answer") or "") != (qb.get("answer") or ""),
                          "a": _side(qa), "b": _side(qb)})
    questions.sort(key=lambda q: (q["change"], q["id"]))
    counts = {"paired": len(questions), "worse": sum(q["change"] < 0 for q in questions),
              "better": sum(q["change"] > 0 for q in questions),
              "unchanged": sum(q["change"] == 0 for q in questions),
              "answers_changed": sum(q["answer_changed"] for q in questions),
              "only_in_a": len(set(res_a) - set(res_b)), "only_in_b": len(set(res_b) - set(res_a))}
    return {"a": run_a, "b": run_b, "warnings": warnings, "confidence": confidence, "metrics": metrics,
            "groups": [g for g in GROUPS if any(m["group"] == g for m in metrics)], "counts": counts,
            "questions": questions[:limit] if limit else questions,
            "mean_change": round(float(np.mean([q["change"] for q in questions])), 6) if questions else None}
