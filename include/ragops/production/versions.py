"""Each prompt version as production sees it, next to what its golden-set evaluation said, and what
moving the production alias did to production.

Per prompt version (traffic of the last ``days``): requests, refusal rate, negative-feedback rate
(of the traces with feedback), hallucination rate of the online-evaluated answers with its Wilson
95% interval, latency p95 and cost (``ragops.production.aggregate.figures``), and the metrics of
its latest eval run.

Per move of a production alias (promotion or rollback, ``prompt_events``) older than a day: the
hallucination and negative-feedback rates of the version before (its traffic in the ``days``
before the move) and of the version after (its traffic from the move on, at most ``days``, until
the next move), with a 95% interval of the difference (Newcombe's hybrid score interval, built from
the two Wilson intervals). Fewer than ``production.min_traces`` evaluated traces on either side is
"not enough traffic": no interval is claimed from a handful of answers.
"""

from __future__ import annotations

import datetime as dt
import math
from statistics import NormalDist
from typing import Any

from sqlalchemy import case, func, select

from ragops import state
from ragops.config import Settings

CONFIDENCE = 0.95
SETTLE = dt.timedelta(days=1)  # a move younger than this has too little "after" to judge
MOVES = ("promoted", "rolled_back")
GOLDEN_METRICS = ("hallucination_rate", "faithfulness", "answer_f1", "hit_rate@5", "refusal_accuracy")
MAX_MOVES = 20


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n (None without observations)."""
    if n <= 0:
        return None
    z, p = _z(confidence), k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k0: int, n0: int, confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """p1 - p0 and its interval (Newcombe 1998, method 10: hybrid score from the Wilson limits)."""
    a, b = wilson(k1, n1, confidence), wilson(k0, n0, confidence)
    if a is None or b is None:
        return None
    p1, p0 = k1 / n1, k0 / n0
    d = p1 - p0
    low = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p0) ** 2)
    high = d + math.sqrt((a[1] - p1) ** 2 + (p0 - b[0]) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def _rate(k: int, n: int) -> dict[str, Any]:
    iv = wilson(k, n)
    return {"n": n, "k": k, "rate": round(k / n, 4) if n else None,
            "ci": [round(iv[0], 4), round(iv[1], 4)] if iv else None}


def _counts(s: Any, name: str, version: int, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    """Requests, evaluated answers (something to check), hallucinated ones, feedback, negative feedback."""
    T, E = state.Trace, state.TraceEval
    checked = E.hallucinated.is_not(None)
    row = s.execute(select(
        func.count(T.trace_id), func.sum(case((checked, 1), else_=0)), func.sum(case((E.hallucinated == 1, 1), else_=0)),
        func.sum(case((T.feedback.is_not(None), 1), else_=0)), func.sum(case((T.feedback < 0, 1), else_=0)))
        .outerjoin(E, E.trace_id == T.trace_id)
        .where(T.prompt_name == name, T.prompt_version == version, T.ts >= since, T.ts < until)).one()
    return dict(zip(("requests", "evaluated", "hallucinated", "feedback", "negative"), (int(v or 0) for v in row),
                    strict=True))


def _effect(before: dict[str, int], after: dict[str, int], k: str, n: str, minimum: int) -> dict[str, Any]:
    out: dict[str, Any] = {"before": _rate(before[k], before[n]), "after": _rate(after[k], after[n])}
    if before[n] < minimum or after[n] < minimum:
        out.update(status="not enough traffic", difference=None, ci=None,
                   why=f"{before[n]} before and {after[n]} after; each side needs at least {minimum}")
        return out
    d, low, high = newcombe(after[k], after[n], before[k], before[n])  # type: ignore[misc]
    out.update(difference=round(d, 4), ci=[round(low, 4), round(high, 4)],
               status="worse" if low > 0 else "better" if high < 0 else "no significant change")
    return out


def promotion_effects(settings: Settings, now: dt.datetime | None = None, days: int = 7) -> list[dict[str, Any]]:
    """Before/after figures of each production-alias move older than a day, newest first."""
    now = _utc(now or state.utcnow())
    window = dt.timedelta(days=days)
    minimum = settings.production.min_traces
    E = state.PromptEvent
    out = []
    with state.session_scope(settings.state_db_url) as s:
        events = s.execute(select(E).where(E.alias == "production").order_by(E.name, E.created_at, E.id)).scalars().all()
        moves_by_name: dict[str, list[state.PromptEvent]] = {}
        for e in events:
            if e.to_version is not None:
                moves_by_name.setdefault(e.name, []).append(e)
        candidates = []
        for name, evs in moves_by_name.items():
            for i, e in enumerate(evs):
                at = _utc(e.created_at)
                if e.action not in MOVES or e.from_version is None or at > now - SETTLE:
                    continue
                nxt = _utc(evs[i + 1].created_at) if i + 1 < len(evs) else None
                candidates.append((at, name, e, nxt))
        candidates.sort(key=lambda c: (c[0], c[2].id), reverse=True)
        for at, name, e, nxt in candidates[:MAX_MOVES]:
            end = min(at + window, now, *([nxt] if nxt else []))
            before = _counts(s, name, e.from_version, at - window, at)  # type: ignore[arg-type]
            after = _counts(s, name, e.to_version, at, end)  # type: ignore[arg-type]
            hall = _effect(before, after, "hallucinated", "evaluated", minimum)
            neg = _effect(before, after, "negative", "feedback", minimum)
            out.append({"prompt": name, "action": e.action, "from_version": e.from_version,
                        "to_version": e.to_version, "at": at.isoformat(), "actor": e.actor, "reason": e.reason,
                        "before_window": [(at - window).isoformat(), at.isoformat()],
                        "after_window": [at.isoformat(), end.isoformat()],
                        "requests": {"before": before["requests"], "after": after["requests"]},
                        "hallucination": hall, "negative_feedback": neg, "status": hall["status"]})
    return out


def by_version(settings: Settings, now: dt.datetime | None = None, days: int = 7) -> list[dict[str, Any]]:
    """Production figures of every prompt version with traffic in the last ``days`` (and every
    version a production alias points at), beside the metrics of its latest eval run."""
    from ragops.production.aggregate import figures, window

    now = _utc(now or state.utcnow())
    since = now - dt.timedelta(days=days)
    prod = {(r["prompt"], r["prompt_version"]): r for r in figures(settings, since, now, by=("prompt", "prompt_version"))
            if r["prompt"] is not None and r["prompt_version"] is not None}
    T, E, R = state.Trace, state.TraceEval, state.EvalRun
    with state.session_scope(settings.state_db_url) as s:
        checked = {(n, v): (int(a or 0), int(b or 0)) for n, v, a, b in s.execute(
            select(T.prompt_name, T.prompt_version, func.count(E.trace_id), func.sum(case((E.hallucinated == 1, 1), else_=0)))
            .join(E, E.trace_id == T.trace_id)
            .where(*window(since, now), E.hallucinated.is_not(None), T.prompt_name.is_not(None))
            .group_by(T.prompt_name, T.prompt_version))}
        aliases: dict[tuple[str, int], list[str]] = {}
        for a in s.execute(select(state.PromptAlias)).scalars():
            aliases.setdefault((a.name, a.version), []).append(a.alias)
        keys = sorted(set(prod) | {k for k, al in aliases.items() if "production" in al},
                      key=lambda k: (k[0], -k[1]))
        golden: dict[tuple[str, int], dict[str, Any]] = {}
        for name, version in keys:
            run = s.execute(select(R).where(R.prompt_name == name, R.prompt_version == version,
                                            R.status.in_(("success", "partial")))
                            .order_by(R.started_at.desc(), R.run_id.desc()).limit(1)).scalar_one_or_none()
            if run is not None:
                m = (run.metrics or {}).get("metrics") or {}
                golden[(name, version)] = {"run_id": run.run_id, "index": run.index_name,
                                           "started_at": _utc(run.started_at).isoformat(),
                                           "questions": run.n_questions,
                                           "metrics": {k: m.get(k) for k in GOLDEN_METRICS}}
    out = []
    for name, version in keys:
        f = prod.get((name, version)) or {}
        n, k = checked.get((name, version), (0, 0))
        out.append({"prompt": name, "version": version, "aliases": sorted(aliases.get((name, version), [])),
                    "requests": f.get("requests", 0), "refusal_rate": f.get("refusal_rate"),
                    "feedback": f.get("feedback", 0), "negative_feedback_rate": f.get("negative_feedback_rate"),
                    "hallucination": _rate(k, n), "latency_p95_ms": f.get("latency_p95_ms"),
                    "cost_usd": f.get("cost_usd", 0.0), "unpriced_requests": f.get("unpriced_requests", 0),
                    "golden": golden.get((name, version))})
    return out


def production_view(settings: Settings, now: dt.datetime | None = None, days: int = 7) -> dict[str, Any]:
    """What the LLMOps page shows: figures by version and the effects of the alias moves."""
    now = _utc(now or state.utcnow())
    return {"days": days, "until": now.isoformat(), "min_traces": settings.production.min_traces,
            "versions": by_version(settings, now, days), "promotions": promotion_effects(settings, now, days)}
