"""Statistics for decisions: paired bootstrap intervals and the nightly regression check.

A regression is a drop that is both *significant* (the whole confidence interval of the mean
per-question difference lies below zero) and *material* (the mean drop is larger than the
allowed margin). Pairing per question removes the between-question variance, which is far
larger than the change being measured.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from ragops import state
from ragops.config import Settings
from ragops.errors import EvalError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def paired_bootstrap(diffs: list[float] | np.ndarray, samples: int = 2000, confidence: float = 0.95,
                     seed: int = 13,
                     within: list[tuple[list[float], list[float]]] | None = None) -> Interval:
    """Percentile bootstrap interval of the mean of paired differences (candidate - baseline).

    ``within`` (one ``(candidate values, baseline values)`` pair per question, in the order of
    ``diffs``): the per-sample values of questions answered several times (``eval.samples``). The
    bootstrap then has two levels: each replicate resamples the questions, and for every drawn
    question resamples its candidate samples and its baseline samples (with replacement) and takes
    the difference of their means, so the interval carries the sampling noise of the answers as
    well as the spread between questions. A question with one value per side keeps that value."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise EvalError("no paired questions to compare")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(samples, d.size))
    if within is None:
        means = d[idx].mean(axis=1)
    else:
        if len(within) != d.size:
            raise EvalError(f"within has {len(within)} questions, diffs {d.size}")
        drawn = np.empty(idx.shape, dtype=np.float64)
        for q, (cur, base) in enumerate(within):
            at = idx == q
            k = int(at.sum())
            if not k:
                continue
            drawn[at] = _resampled_means(cur, k, rng) - _resampled_means(base, k, rng)
        means = drawn.mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(d.mean()), float(lo), float(hi), int(d.size))


def _resampled_means(values: list[float], k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` means of ``values`` resampled with replacement (one value: itself, k times)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise EvalError("a question without sample values")
    if v.size == 1:
        return np.full(k, v[0])
    return v[rng.integers(0, v.size, size=(k, v.size))].mean(axis=1)


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    current: float
    baseline: float
    difference: float
    ci_low: float
    ci_high: float
    n: int
    regressed: bool
    two_level: bool = False  # the bootstrap also resampled each question's answer samples


def compare_metric(metric: str, current: dict[str, float], baseline: dict[str, float], margin: float,
                   samples: int, confidence: float, seed: int, higher_is_better: bool = True,
                   current_samples: dict[str, list[float]] | None = None,
                   baseline_samples: dict[str, list[float]] | None = None) -> MetricCheck | None:
    """Paired check of one metric over the questions both sides have (difference = current - baseline).

    ``current_samples`` / ``baseline_samples``: per question, the metric's value in each answer
    sample (a run with ``eval.samples`` > 1). When either side has a question with several samples,
    the bootstrap resamples those too (two levels, see ``paired_bootstrap``); a question without
    samples counts with its one value."""
    common = sorted(set(current) & set(baseline))
    if len(common) < 5:
        return None
    within = None
    cs, bs = current_samples or {}, baseline_samples or {}
    if any(len(cs.get(q) or ()) > 1 or len(bs.get(q) or ()) > 1 for q in common):
        within = [(list(cs.get(q) or [current[q]]), list(bs.get(q) or [baseline[q]])) for q in common]
    iv = paired_bootstrap([current[q] - baseline[q] for q in common], samples, confidence, seed, within)
    if higher_is_better:
        regressed = iv.high < 0 and -iv.mean > margin
    else:
        regressed = iv.low > 0 and iv.mean > margin
    return MetricCheck(metric, float(np.mean([current[q] for q in common])),
                       float(np.mean([baseline[q] for q in common])), iv.mean, iv.low, iv.high, iv.n, regressed,
                       within is not None)


def _per_question(session: Any, run_id: str) -> dict[str, dict[str, float]]:
    rows = session.execute(select(state.EvalResult.question_id, state.EvalResult.payload)
                           .where(state.EvalResult.run_id == run_id, state.EvalResult.ok == 1)).all()
    return {qid: {k: float(v) for k, v in (payload.get("metrics") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)} for qid, payload in rows}


def _per_question_samples(session: Any, run_id: str) -> dict[str, dict[str, list[float]]]:
    """Per question, each metric's per-sample values (only runs with ``eval.samples`` > 1 store them)."""
    rows = session.execute(select(state.EvalResult.question_id, state.EvalResult.payload)
                           .where(state.EvalResult.run_id == run_id, state.EvalResult.ok == 1)).all()
    out: dict[str, dict[str, list[float]]] = {}
    for qid, payload in rows:
        smp = payload.get("samples") if isinstance(payload, dict) else None
        if isinstance(smp, dict):
            out[qid] = {k: [float(x) for x in v] for k, v in smp.items() if isinstance(v, list) and v}
    return out


LOWER_IS_BETTER = {"false_refusal", "pii_rate", "blocklist_rate", "tokens_in", "tokens_out", "hallucination_rate",
                   "toxicity", "toxicity_rate", "context_toxicity_rate"}


def served_models(run: Any) -> list[str] | None:
    """The models the endpoint reported for a run's answers (None for runs from before this was kept)."""
    served = (run.metrics or {}).get("served_models") if hasattr(run, "metrics") else None
    return list(served) if served else None


def utc_day(at: dt.datetime) -> dt.date:
    """The calendar day (UTC) of a timestamp; a naive one (SQLite) is already UTC."""
    return (at.astimezone(dt.UTC) if at.tzinfo is not None else at).date()


def night_key(started_at: dt.datetime, prompt: str, served: Sequence[str] | None,
              index_version: int | None) -> tuple[Hashable, ...]:
    """What makes two nightly runs the same night: the UTC day, the prompt version, the served
    model(s) and the index version (index, dataset and retrieval mode are compared already)."""
    return utc_day(started_at), prompt, tuple(served) if served else None, index_version


def run_night_key(run: Any) -> tuple[Hashable, ...]:
    """:func:`night_key` of an eval run row (the ORM object or a selected row with its columns)."""
    return night_key(run.started_at, f"{run.prompt_name}@{run.prompt_version}",
                     (run.metrics or {}).get("served_models"), run.index_version)


def one_per_night(keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """Positions (in the order given, newest first) of the runs that count as a night, and of the
    ones left out: of several runs with the same :func:`night_key`, only the newest counts. Unpausing
    a DAG adds Airflow's catch-up run to the one a person triggers, and a rerun the same day
    measures the same night again: neither may weigh twice in a baseline."""
    seen: set[Hashable] = set()
    kept: list[int] = []
    dropped: list[int] = []
    for i, key in enumerate(keys):
        (dropped if key in seen else kept).append(i)
        seen.add(key)
    return kept, dropped


def check_regression(settings: Settings, run_id: str) -> dict[str, Any]:
    """Compare a run with the per-question mean of the previous ``eval.baseline_runs`` nightly runs
    on the same index and dataset. Returns the checks, the verdict and the worst questions.

    One run per night: of several earlier nightly runs of one UTC day with the same prompt version,
    served model and index version (a catch-up run and a triggered one, or a rerun), only the
    newest of the day counts, so ``baseline_runs`` are distinct nights (``same_day_left_out`` lists
    the others, and the note says so).

    Like is compared with like: the baseline is the nightly runs whose answers came from the same
    served model(s). When the served model changed, the result says so (``model_change``); until
    runs of the new model exist, the comparison is with the earlier model's runs and says that it
    compares unlike runs (``unlike_baseline``)."""
    e = settings.eval
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
        mode = (run.config or {}).get("retrieval")  # a baseline is only comparable in the same retrieval mode
        current_served = served_models(run)
        prev = s.execute(
            select(state.EvalRun.run_id, state.EvalRun.config, state.EvalRun.metrics, state.EvalRun.started_at,
                   state.EvalRun.prompt_name, state.EvalRun.prompt_version, state.EvalRun.index_version).where(
                state.EvalRun.index_name == run.index_name, state.EvalRun.dataset_hash == run.dataset_hash,
                state.EvalRun.status.in_(("success", "partial")), state.EvalRun.run_id != run_id,
                state.EvalRun.started_at < run.started_at)
            .order_by(state.EvalRun.started_at.desc(), state.EvalRun.run_id.desc())).all()
        nightly_rows = [p for p in prev
                        if (p.config or {}).get("purpose") == "nightly" and (p.config or {}).get("retrieval") == mode]
        kept, dropped = one_per_night([run_night_key(p) for p in nightly_rows])
        nightly = [(nightly_rows[i].run_id, ((nightly_rows[i].metrics or {}).get("served_models") or None))
                   for i in kept]
        like = [rid for rid, served in nightly if served is None or current_served is None or served == current_served]
        unlike = not like and bool(nightly)
        baseline_ids = (like or [rid for rid, _ in nightly])[:e.baseline_runs]
        # the same-day runs of the nights in the window (the ones that would have weighed twice)
        days = {utc_day(p.started_at) for p in nightly_rows if p.run_id in baseline_ids}
        same_day = [nightly_rows[i].run_id for i in dropped if utc_day(nightly_rows[i].started_at) in days]
        last_served = next((served for _, served in nightly if served is not None), None)
        current = _per_question(s, run_id)
        base_rows = [_per_question(s, b) for b in baseline_ids]
        current_smp = _per_question_samples(s, run_id)
        base_smp = [_per_question_samples(s, b) for b in baseline_ids]
        asked = {qid: (p.get("question", ""), p.get("answer", "")) for qid, p in s.execute(
            select(state.EvalResult.question_id, state.EvalResult.payload)
            .where(state.EvalResult.run_id == run_id)).all()}
    result: dict[str, Any] = {"run_id": run_id, "baseline_runs": baseline_ids, "checks": [], "regressed": [],
                              "worst_questions": [], "verdict": "no baseline", "served_models": current_served,
                              "unlike_baseline": unlike, "same_day_left_out": same_day,
                              "baseline_rule": "one nightly run per UTC day counts (the newest of the day, per prompt "
                                               "version, served model and index version)"}
    if current_served is not None and last_served is not None and last_served != current_served:
        result["model_change"] = {"from": last_served, "to": current_served}
        log.warning("the served model changed since the last nightly run: %s -> %s", last_served, current_served)
    if unlike:
        result["note"] = (f"the served model changed ({', '.join(last_served or [])} -> "
                          f"{', '.join(current_served or [])}): no nightly run of the new model yet, so this compares "
                          "unlike runs (the new model against the old one's runs)")
    elif baseline_ids and len(like) < len(nightly):
        result["note"] = (f"compared only with the nightly runs of the same served model "
                          f"({', '.join(current_served or [])}); {len(nightly) - len(like)} earlier run(s) of "
                          "another model left out")
    if same_day:
        day_note = (f"{len(same_day)} earlier nightly run(s) of a day that has a newer run left out of the "
                    "baseline: one run per UTC day counts, the newest")
        result["note"] = f"{result['note']}; {day_note}" if result.get("note") else day_note
        log.info("left out of the baseline, a newer nightly run of the same day counts instead: %s", same_day)
    if not baseline_ids:
        log.info("no earlier nightly runs on this index and dataset: nothing to compare with yet")
        return result
    checks: list[MetricCheck] = []
    for metric in e.watch_metrics:
        base: dict[str, list[float]] = {}
        for rows in base_rows:
            for qid, ms in rows.items():
                if metric in ms:
                    base.setdefault(qid, []).append(ms[metric])
        cur = {qid: ms[metric] for qid, ms in current.items() if metric in ms}
        pooled: dict[str, list[float]] = {}  # sampled runs: the baseline runs' samples of a question, pooled
        for smp in base_smp:
            for qid, v in smp.items():
                if metric in v:
                    pooled.setdefault(qid, []).extend(v[metric])
        c = compare_metric(metric, cur, {q: float(np.mean(v)) for q, v in base.items()}, e.regression_margin,
                           e.bootstrap_samples, e.confidence, e.seed, metric not in LOWER_IS_BETTER,
                           {q: v[metric] for q, v in current_smp.items() if metric in v}, pooled)
        if c is not None:
            checks.append(c)
    regressed = [c for c in checks if c.regressed]
    drops: dict[str, float] = {}
    for c in regressed:
        for qid, ms in current.items():
            vals = [r[qid][c.metric] for r in base_rows if qid in r and c.metric in r[qid]]
            if c.metric in ms and vals:
                drop = float(np.mean(vals)) - ms[c.metric]
                drops[qid] = drops.get(qid, 0.0) + (-drop if c.metric in LOWER_IS_BETTER else drop)
    worst = sorted(drops.items(), key=lambda kv: -kv[1])[:5]
    result.update({
        "checks": [asdict(c) for c in checks], "regressed": [c.metric for c in regressed],
        "verdict": "regression" if regressed else "ok",
        "worst_questions": [{"id": q, "question": asked.get(q, ("", ""))[0], "answer": asked.get(q, ("", ""))[1],
                             "drop": round(d, 4)} for q, d in worst if d > 0],
    })
    return result


# ----------------------------------------------------------------------------------------------
# promotion gate: candidate vs production on the same questions


def _run_summary(session: Any, run_id: str) -> state.EvalRun:
    run = session.get(state.EvalRun, run_id)
    if run is None:
        raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
    if run.status not in ("success", "partial"):
        raise EvalError(f"eval run {run_id} ended {run.status}: a gate needs a finished run")
    return run


def evaluate_gate(settings: Settings, profile: str, candidate_run: str, production_run: str) -> dict[str, Any]:
    """Apply a gate profile (``gates.<profile>``) to two eval runs of the same questions on the
    same index version: absolute thresholds on the candidate, non-regression against production
    (paired bootstrap on each metric's per-question difference), and the operations budget.
    Returns ``passed``, every check, the failing ones and the questions that dropped most."""
    if profile not in settings.gates:
        raise EvalError(f"unknown gate profile {profile!r}: the settings define {', '.join(sorted(settings.gates))}")
    gate = settings.gates[profile]
    e = settings.eval
    with state.session_scope(settings.state_db_url) as s:
        cand, prod = _run_summary(s, candidate_run), _run_summary(s, production_run)
        if (cand.dataset_hash, cand.index_name, cand.index_version) != \
                (prod.dataset_hash, prod.index_name, prod.index_version):
            raise EvalError(f"runs {candidate_run} and {production_run} differ in dataset or index version; a gate "
                            "compares two runs of the same questions on the same index version")
        cur, base = _per_question(s, candidate_run), _per_question(s, production_run)
        cur_smp, base_smp = _per_question_samples(s, candidate_run), _per_question_samples(s, production_run)
        asked = {qid: (p.get("question", ""), p.get("answer", "")) for qid, p in s.execute(
            select(state.EvalResult.question_id, state.EvalResult.payload)
            .where(state.EvalResult.run_id == candidate_run)).all()}
        prod_answers = {qid: p.get("answer") for qid, p in s.execute(
            select(state.EvalResult.question_id, state.EvalResult.payload)
            .where(state.EvalResult.run_id == production_run, state.EvalResult.ok == 1)).all()}
        c_sum, p_sum = dict(cand.metrics or {}), dict(prod.metrics or {})
        cand_models = [cand.generator.split(":", 1)[-1], *(c_sum.get("served_models") or [])]
        meta = {"candidate": f"{cand.prompt_name}@{cand.prompt_version}",
                "production": f"{prod.prompt_name}@{prod.prompt_version}", "index_version": cand.index_version,
                "questions": len(set(cur) & set(base))}
    c_metrics, p_metrics = c_sum.get("metrics") or {}, p_sum.get("metrics") or {}
    checks: list[dict[str, Any]] = []
    for metric, (op, value) in gate["thresholds"].items():
        op = op or ("<=" if metric in LOWER_IS_BETTER else ">=")
        got = c_metrics.get(metric)
        ok = got is not None and (got >= value if op == ">=" else got <= value)
        checks.append({"kind": "threshold", "metric": metric, "rule": f"{op} {value}", "candidate": got,
                       "production": p_metrics.get(metric), "passed": bool(ok),
                       **({} if got is not None else {"note": "the run has no value for this metric"})})
    nr = gate["non_regression"]
    regressed: list[str] = []
    for metric in nr["metrics"]:
        c = compare_metric(metric, {q: m[metric] for q, m in cur.items() if metric in m},
                           {q: m[metric] for q, m in base.items() if metric in m}, nr["margin"],
                           e.bootstrap_samples, e.confidence, e.seed, metric not in LOWER_IS_BETTER,
                           {q: v[metric] for q, v in cur_smp.items() if metric in v},
                           {q: v[metric] for q, v in base_smp.items() if metric in v})
        if c is None:
            checks.append({"kind": "non_regression", "metric": metric, "rule": f"no significant drop > {nr['margin']}",
                           "passed": True, "note": "fewer than 5 paired questions: not tested"})
            continue
        if c.regressed:
            regressed.append(metric)
        checks.append({"kind": "non_regression", "metric": metric,
                       "rule": f"no significant {'rise' if metric in LOWER_IS_BETTER else 'drop'} > {nr['margin']}",
                       "candidate": c.current, "production": c.baseline, "difference": c.difference,
                       "ci": [c.ci_low, c.ci_high], "n": c.n, "passed": not c.regressed,
                       **({"bootstrap": "two-level: questions, then each question's answer samples"}
                          if c.two_level else {})})
    ops = c_sum.get("operations") or {}
    for name, key in (("latency_p95_ms", "latency_ms_p95"), ("cost_per_1k_usd", "cost_per_1k_questions_usd")):
        if name in gate["budget"]:
            got = ops.get(key)
            check = {"kind": "budget", "metric": name, "rule": f"<= {gate['budget'][name]}", "candidate": got,
                     "production": (p_sum.get("operations") or {}).get(key),
                     "passed": got is None or got <= gate["budget"][name]}
            if got is None and name == "cost_per_1k_usd":  # unknown cost is not zero
                free = sorted(set(gate.get("free_models") or []) & set(cand_models))
                check["passed"] = bool(free)
                check["note"] = (f"model {free[0]} is free (gates.{profile}.budget.free_models)" if free else
                                 f"unknown cost: no price for model {' / '.join(dict.fromkeys(cand_models))} in "
                                 f"eval.prices; add its prices, or mark it free (eval.prices.<model>: {{free: true}}, "
                                 f"or gates.{profile}.budget.free_models)")
            elif got is None:
                check["note"] = "not measured"
            checks.append(check)
    drops: dict[str, float] = {}
    for metric in regressed or nr["metrics"]:
        for qid, ms in cur.items():
            if metric in ms and metric in base.get(qid, {}):
                d = base[qid][metric] - ms[metric]
                drops[qid] = drops.get(qid, 0.0) + (-d if metric in LOWER_IS_BETTER else d)
    worst = [{"id": q, "question": asked.get(q, ("", ""))[0], "answer": asked.get(q, ("", ""))[1], "drop": round(d, 4)}
             for q, d in sorted(drops.items(), key=lambda kv: -kv[1])[:5] if d > 0]
    failed = [c for c in checks if not c["passed"]]
    paired = sorted(set(asked) & set(prod_answers))
    identical = bool(paired) and all(asked[q][1] == prod_answers[q] for q in paired)
    out = {"profile": profile, "passed": not failed, "checks": checks, "failed": failed,
           "worst_questions": worst, "candidate_run": candidate_run, "production_run": production_run,
           "identical_answers": identical, **meta}
    if identical:
        out["note"] = (f"candidate and production gave identical answers on all {len(paired)} questions: the "
                       "answer metrics cannot differ, only tokens, latency and cost can")
    return out
