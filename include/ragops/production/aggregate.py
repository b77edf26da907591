"""Hourly and daily production figures, computed by the database from the loaded traces.

Latency percentiles come from a histogram: each trace stores the bucket of its latency (log-spaced,
each 2^(1/4) = 19% wider than the one before), so a percentile over any set of hours is a GROUP
BY of counts (memory flat in the number of traces), estimated at the bucket's geometric middle
(within 10% of the exact value).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import case, func, select

from ragops import state
from ragops.config import Settings

BASE = 2 ** 0.25
MAX_BUCKET = 160  # 2^40 ms
DIMENSIONS = {"hour": state.Trace.hour, "index": state.Trace.index_name, "index_version": state.Trace.index_version,
              "prompt": state.Trace.prompt_name, "prompt_version": state.Trace.prompt_version,
              "model": state.Trace.served_model}


def bucket_of(ms: float | None) -> int | None:
    if ms is None:
        return None
    if ms <= 1.0:
        return 0
    return min(MAX_BUCKET, int(math.floor(math.log(ms, BASE))) + 1)


def bucket_value(b: int) -> float:
    """The geometric middle of bucket ``b`` (bucket 0 = up to 1 ms)."""
    if b <= 0:
        return 1.0
    return BASE ** (b - 0.5)


def percentile(hist: dict[int, int], q: float) -> float | None:
    n = sum(hist.values())
    if n == 0:
        return None
    rank, seen = q * n, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return round(bucket_value(b), 1)
    return round(bucket_value(max(hist)), 1)


def _key(row: Any, names: list[str], day: bool) -> tuple[Any, ...]:
    out = []
    for name, v in zip(names, row, strict=False):
        if name == "hour" and v is not None:
            v = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
            v = v.date().isoformat() if day else v.isoformat()
        out.append(v)
    return tuple(out)


def window(since: dt.datetime, until: dt.datetime | None = None) -> list[Any]:
    """Conditions of ``since <= ts < until`` that the index on ``hour`` serves (ts alone is a scan)."""
    T = state.Trace
    out = [T.hour >= since.replace(minute=0, second=0, microsecond=0), T.ts >= since]
    if until is not None:
        out += [T.hour <= until, T.ts < until]
    return out


def figures(settings: Settings, since: dt.datetime, until: dt.datetime | None = None,
            by: tuple[str, ...] = ("hour", "index", "index_version", "prompt", "prompt_version", "model"),
            day: bool = False) -> list[dict[str, Any]]:
    """Volume, refusals, errors, latency p50/p95, tokens, cost (known and unknown-priced traffic),
    cache hits and savings, feedback, per group of ``by`` (``hour`` grouped by day with ``day``)."""
    bad = [b for b in by if b not in DIMENSIONS]
    if bad:
        raise ValueError(f"unknown grouping {bad[0]!r}: use {', '.join(DIMENSIONS)}")
    T = state.Trace
    cols = [DIMENSIONS[b] for b in by]
    where = window(since, until)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    hists: dict[tuple[Any, ...], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    with state.session_scope(settings.state_db_url) as s:
        q = (select(*cols, func.count(), func.sum(T.refused), func.sum(case((T.error.is_not(None), 1), else_=0)),
                    func.sum(T.tokens_in), func.sum(T.tokens_out), func.sum(T.cost_usd),
                    func.sum(case((T.cost_usd.is_(None) & T.error.is_(None) & T.model.is_not(None), 1), else_=0)),
                    func.sum(T.cache_hit), func.sum(case((T.feedback.is_not(None), 1), else_=0)),
                    func.sum(case((T.feedback < 0, 1), else_=0)), func.sum(T.saved_tokens), func.sum(T.saved_usd))
             .where(*where).group_by(*cols))
        for row in s.execute(q):
            k = _key(row, list(by), day)
            n, refused, errors, tin, tout, cost, unpriced, hits, fb, neg, st, su = row[len(cols):]
            agg = out.setdefault(k, {**dict(zip(by, k, strict=True)), "requests": 0, "refused": 0, "errors": 0,
                                     "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "unpriced_requests": 0,
                                     "cache_hits": 0, "saved_tokens": 0, "saved_usd": 0.0, "feedback": 0,
                                     "negative_feedback": 0})
            agg["requests"] += n
            agg["refused"] += int(refused or 0)
            agg["errors"] += int(errors or 0)
            agg["tokens_in"] += int(tin or 0)
            agg["tokens_out"] += int(tout or 0)
            agg["cost_usd"] += float(cost or 0.0)
            agg["unpriced_requests"] += int(unpriced or 0)
            agg["cache_hits"] += int(hits or 0)
            agg["saved_tokens"] += int(st or 0)
            agg["saved_usd"] += float(su or 0.0)
            agg["feedback"] += int(fb or 0)
            agg["negative_feedback"] += int(neg or 0)
        hq = (select(*cols, T.latency_bucket, func.count()).where(*where, T.latency_bucket.is_not(None))
              .group_by(*cols, T.latency_bucket))
        for row in s.execute(hq):
            hists[_key(row, list(by), day)][int(row[len(cols)])] += int(row[len(cols) + 1])
    rows = []
    for k, agg in sorted(out.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        h = hists.get(k, {})
        n = agg["requests"]
        agg.update(latency_p50_ms=percentile(h, 0.5), latency_p95_ms=percentile(h, 0.95),
                   refusal_rate=round(agg["refused"] / n, 4) if n else None,
                   negative_feedback_rate=round(agg["negative_feedback"] / agg["feedback"], 4) if agg["feedback"]
                   else None, cache_hit_rate=round(agg["cache_hits"] / n, 4) if n else None,
                   cost_usd=round(agg["cost_usd"], 6), saved_usd=round(agg["saved_usd"], 6), cost_known=agg["unpriced_requests"] == 0)
        rows.append(agg)
    return rows
