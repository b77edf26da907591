"""monitor_production: online evaluation of sampled traces, figures, and breaches.

Sampling is deterministic (a hash of the trace id against ``production.sample_rate``), capped per
UTC day (``daily_eval_cap``) and stratified: every prompt version in the day's traffic gets at
least ``min_per_version`` evaluated traces before any version gets more than its hash share.
Each sampled trace gets claim-level groundedness (ragops.grounding), citation validity, safety
(PII, blocklist, toxicity of the answer and of the retrieved text, instructions planted in the
retrieved text) and, when ``production.judge`` and an
LLM endpoint are set, the LLM judge. Results are stored per trace (``trace_evals``).

Breaches are judged on the window's traces with a one-sided binomial test of the rate against
its limit (``alpha``), like the drift checks judge theirs: hallucination rate, negative feedback,
refusal rate, toxic answers (``max_toxicity_rate``), the share of answers slower than the latency SLO;
cost per UTC day against
``daily_budget_usd`` (traffic of a model without a price is unknown cost, never free). A window
with fewer than ``min_traces`` is skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from ragops import state
from ragops.config import Settings, parse_window
from ragops.errors import RagopsError
from ragops.production.aggregate import window as in_window

log = logging.getLogger(__name__)
LOOKBACK = dt.timedelta(days=1)  # traces this recent are candidates for online evaluation

# instructions addressed to the model, planted in a document (prompt injection through retrieval)
INJECTION_RE = re.compile(
    r"(?i)(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|preceding|"
    r"system|your)\s+(instructions|prompts?|rules|directions|context)|"
    r"\byou\s+are\s+now\s+(a|an|the|in)\b|\bnew\s+(system\s+)?instructions?\s*:|"
    r"\b(reveal|print|show|repeat)\s+(the\s+|your\s+)?(system\s+prompt|hidden\s+instructions|api\s+key)|"
    r"<\|?(im_start|system|endoftext)\|?>|\[\s*/?INST\s*\]|^\s*#+\s*(system|instruction)s?\s*:")


def injected_instructions(texts: list[str]) -> list[str]:
    """Snippets of retrieved text that address the model with instructions."""
    found = []
    for t in texts:
        m = INJECTION_RE.search(t or "")
        if m:
            found.append((t[max(0, m.start() - 40):m.end() + 40]).replace("\n", " ").strip())
    return found


def sampled(trace_id: str, rate: float) -> bool:
    """The trace's fixed sampling decision (the same in every run)."""
    h = int(hashlib.sha256(trace_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < rate


def _rank(trace_id: str) -> str:
    return hashlib.sha256(trace_id.encode()).hexdigest()


def choose(settings: Settings, now: dt.datetime, rate: float | None = None,
           cap: int | None = None) -> list[str]:
    """Trace ids to evaluate now: hash-sampled, at least min_per_version per prompt version a day,
    at most the day's remaining cap (shared so that every version keeps its floor)."""
    p = settings.production
    rate = p.sample_rate if rate is None else rate
    cap = p.daily_eval_cap if cap is None else cap
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    T, E = state.Trace, state.TraceEval
    with state.session_scope(settings.state_db_url) as s:
        done_today = {f"{name}@{ver if ver is not None else '?'}": int(c) for name, ver, c in s.execute(
            select(T.prompt_name, T.prompt_version, func.count()).join(E, E.trace_id == T.trace_id)
            .where(E.evaluated_at >= day).group_by(T.prompt_name, T.prompt_version)).all()}
        rows = s.execute(
            select(T.trace_id, T.prompt_name, T.prompt_version).outerjoin(E, E.trace_id == T.trace_id)
            .where(E.trace_id.is_(None), *in_window(now - LOOKBACK, now + dt.timedelta(microseconds=1)), T.error.is_(None),
                   T.answer.is_not(None))).all()
    remaining = max(0, cap - sum(done_today.values()))
    strata: dict[str, list[str]] = defaultdict(list)
    for tid, name, ver in rows:
        strata[f"{name}@{ver if ver is not None else '?'}"].append(tid)
    picks: dict[str, list[str]] = {}
    for key, ids in strata.items():
        ids.sort(key=_rank)
        chosen = [t for t in ids if sampled(t, rate)]
        floor = max(0, p.min_per_version - done_today.get(key, 0))
        if len(chosen) < floor:
            taken = set(chosen)
            chosen += [t for t in ids if t not in taken][:floor - len(chosen)]
        picks[key] = chosen
    order: list[str] = []
    # round-robin across strata: under the cap, every version gets its first picks before any gets more
    queues = {k: list(v) for k, v in sorted(picks.items())}
    while queues and len(order) < remaining:
        for k in list(queues):
            if not queues[k]:
                del queues[k]
                continue
            order.append(queues[k].pop(0))
            if len(order) >= remaining:
                break
    return order


class _Contexts:
    """The retrieved chunk texts of a trace: from the trace, else from the index version's collection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None

    def of(self, t: state.Trace) -> list[str] | None:
        chunks = t.chunks or []
        if chunks and all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in chunks):
            return [c["text"] for c in chunks]
        ids = [str(c.get("id")) for c in chunks if isinstance(c, dict) and c.get("id")]
        if not ids or t.index_name is None or t.index_version is None:
            return None
        from ragops.vectorstore import VectorStore

        with state.session_scope(self.settings.state_db_url) as s:
            v = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == t.index_name,
                                                           state.IndexVersion.version == t.index_version)
                          ).scalar_one_or_none()
            collection = v.collection if v is not None else None
        if collection is None:
            return None
        self._store = self._store or VectorStore(self.settings)
        try:
            got = self._store.get_chunks(collection, ids)
        except Exception:  # noqa: BLE001 - a dropped collection: the contexts are gone, said in the row
            return None
        return [got[i][0] or "" for i in ids if i in got] or None


def evaluate(settings: Settings, *, run_id: str, now: dt.datetime | None = None, rate: float | None = None,
             cap: int | None = None, encoder: Any = None, llm: Any = None) -> dict[str, Any]:
    """Evaluate the chosen traces; a trace evaluated before is never evaluated again. ``llm``:
    the judge's endpoint (default: RAGOPS_LLM_BASE_URL), asked only with ``production.judge``."""
    from ragops.embedding import Embedder
    from ragops.evaluation import metrics as M
    from ragops.grounding.checker import GroundednessChecker
    from ragops.llm import Context, Judge, LlmSettings, SentenceEncoder

    now = now or dt.datetime.now(dt.UTC)
    ids = choose(settings, now, rate, cap)
    out: dict[str, Any] = {"chosen": len(ids), "evaluated": 0, "hallucinated": 0, "no_contexts": 0, "pii": 0,
                           "blocklist": 0, "injection": 0, "toxic": 0, "toxic_contexts": 0, "judged": 0,
                           "seconds": 0.0}
    if not ids:
        return out
    t0 = time.perf_counter()
    if encoder is None:
        from ragops.vectorcache import VectorCache

        embedder = Embedder(settings.embedding)
        encoder = SentenceEncoder(embedder, persist=VectorCache.for_embedder(
            settings.data_dir, embedder.fingerprint, settings.eval.vector_cache_mb))
    checker = GroundednessChecker(encoder)
    judge = None
    if settings.production.judge:
        llm = llm or LlmSettings.from_env(settings)
        if llm is not None:
            from ragops.llm import ChatClient

            judge = Judge(ChatClient(llm, settings, use_cache=False), settings.eval.judge_model or llm.model or "",
                          settings.eval.judge_runs, toxicity=settings.eval.judge_toxicity)
    contexts = _Contexts(settings)
    from ragops.evaluation.runner import toxicity_checker

    toxicity = toxicity_checker(settings, encoder)
    for i in range(0, len(ids), 50):
        with state.session_scope(settings.state_db_url) as s:
            traces = s.execute(select(state.Trace).where(state.Trace.trace_id.in_(ids[i:i + 50]))).scalars().all()
            have = set(s.execute(select(state.TraceEval.trace_id)
                                 .where(state.TraceEval.trace_id.in_(ids[i:i + 50]))).scalars())
            for t in traces:
                if t.trace_id in have:  # a concurrent or earlier run did it
                    continue
                answer = t.answer or ""
                texts = contexts.of(t)
                detail: dict[str, Any] = {}
                row = state.TraceEval(trace_id=t.trace_id, run_id=run_id, evaluated_at=now, pii=0, blocklist=0,
                                      injection=0, detail=detail)
                pii = M.pii_findings(answer)
                blocked = M.blocklist_hits(answer, settings.eval.blocklist)
                row.pii, row.blocklist = int(bool(pii)), int(bool(blocked))
                if pii:
                    detail["pii"] = pii
                if blocked:
                    detail["blocklist"] = blocked
                if toxicity is not None:  # kept in detail (no column): check() counts it from there
                    [v] = toxicity.verdicts([answer])
                    detail["toxicity"] = {**v, "checker": toxicity.name}
                    out["toxic"] += int(v["toxic"])
                    if texts:
                        bad = [j + 1 for j, sc in enumerate(toxicity.scores(texts)) if sc >= toxicity.threshold]
                        if bad:
                            detail["toxic_contexts"] = bad
                            out["toxic_contexts"] += 1
                if texts is None:
                    detail["contexts"] = "unavailable: the trace has no chunk texts and its index version is gone"
                    out["no_contexts"] += 1
                else:
                    inj = injected_instructions(texts)
                    row.injection = int(bool(inj))
                    if inj:
                        detail["injection"] = inj[:3]
                    if not t.refused:
                        verdict = checker.check(answer, texts)
                        if verdict["faithfulness"] is not None:
                            row.faithfulness = verdict["faithfulness"]
                            row.hallucinated = int(bool(verdict["hallucinated"]))
                        row.citation_validity = verdict["citation_validity"]
                        detail["n_claims"] = verdict["n_claims"]
                        detail["unsupported_claims"] = [
                            {"claim": v["claim"], "reason": v["reason"], "closest": (v.get("closest") or "")[:300]}
                            for v in verdict["claims"] if not v["supported"]]
                        if judge is not None:
                            ctx = [Context(n=j + 1, chunk_id="", doc_id="", score=0.0, title="", headings="", text=x)
                                   for j, x in enumerate(texts)]
                            row.judge = {k: v for k, v in judge.score(t.question, answer, ctx).items()
                                         if not k.endswith("_samples")}
                            out["judged"] += 1
                s.add(row)
                out["evaluated"] += 1
                out["hallucinated"] += int(row.hallucinated or 0)
                out["pii"] += row.pii
                out["blocklist"] += row.blocklist
                out["injection"] += row.injection
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["ms_per_trace"] = round(out["seconds"] * 1000 / max(out["evaluated"], 1), 1)
    log.info("online evaluation: %d of %d chosen trace(s) evaluated, %d hallucinated, %d with PII, %d with injected "
             "instructions in %.1fs", out["evaluated"], out["chosen"], out["hallucinated"], out["pii"],
             out["injection"], out["seconds"])
    return out


# ---- breaches ---------------------------------------------------------------------------------


def rate_test(k: int, n: int, limit: float, alpha: float, min_n: int, what: str) -> dict[str, Any]:
    """One-sided binomial test: is the true rate above ``limit``?"""
    from scipy.stats import binomtest

    if n < max(min_n, 1):
        return {"status": "skipped", "reason": f"{n} {what} in the window (production.min_traces = {min_n})",
                "n": n, "k": k, "limit": limit}
    p = float(binomtest(k, n, limit, alternative="greater").pvalue)
    rate = k / n
    breach = rate > limit and p < alpha
    return {"status": "breach" if breach else "ok", "n": n, "k": k, "rate": round(rate, 4), "limit": limit,
            "p_value": round(p, 6), "alpha": alpha}


def check(settings: Settings, now: dt.datetime | None = None, window: str | None = None) -> dict[str, Any]:
    """Every production check on the traces of the window ending ``now``."""
    p = settings.production
    now = now or dt.datetime.now(dt.UTC)
    span = parse_window(window or p.window, "production.window")
    start = now - span
    T, E = state.Trace, state.TraceEval
    with state.session_scope(settings.state_db_url) as s:
        base = in_window(start, now)
        n, refused, errors = s.execute(select(func.count(), func.coalesce(func.sum(T.refused), 0),
                                              func.count(T.error)).where(*base)).one()
        slow_n, slow_k = s.execute(select(func.count(T.latency_ms), func.coalesce(func.sum(
            (T.latency_ms > p.latency_slo_ms).cast(state.Integer)), 0)).where(*base)).one()
        fb_n, fb_k = s.execute(select(func.count(T.feedback), func.coalesce(func.sum(
            (T.feedback < 0).cast(state.Integer)), 0)).where(*base)).one()
        ev_n, ev_k = s.execute(select(func.count(E.hallucinated), func.coalesce(func.sum(E.hallucinated), 0))
                               .join(T, T.trace_id == E.trace_id).where(*base)).one()
        safety = s.execute(select(func.count(), func.coalesce(func.sum(E.pii), 0), func.coalesce(func.sum(E.blocklist), 0),
                                  func.coalesce(func.sum(E.injection), 0)).join(T, T.trace_id == E.trace_id)
                           .where(*base)).one()
        tox = [d.get("toxicity") for d in s.execute(select(E.detail).join(T, T.trace_id == E.trace_id)
                                                     .where(*base)).scalars() if isinstance(d, dict)]
        tox = [t for t in tox if isinstance(t, dict)]
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        cost, unpriced = s.execute(select(func.coalesce(func.sum(T.cost_usd), 0.0), func.count().filter(
            T.cost_usd.is_(None), T.error.is_(None), T.model.is_not(None))).where(*in_window(day, now))).one()
    ok_n = int(n) - int(errors)
    checks: dict[str, Any] = {
        "hallucination": rate_test(int(ev_k), int(ev_n), p.max_hallucination_rate, p.alpha, p.min_traces,
                                   "evaluated answers"),
        "negative_feedback": rate_test(int(fb_k), int(fb_n), p.max_negative_feedback, p.alpha, p.min_traces,
                                       "traces with feedback"),
        "refusal": rate_test(int(refused), ok_n, p.max_refusal_rate, p.alpha, p.min_traces, "answered requests"),
        "toxicity": rate_test(sum(1 for t in tox if t.get("toxic")), len(tox), p.max_toxicity_rate, p.alpha,
                              p.min_traces, "answers scored for toxicity"),
        "latency": rate_test(int(slow_k), int(slow_n), p.latency_slo_share, p.alpha, p.min_traces,
                             f"timed requests (SLO {p.latency_slo_ms:g} ms)"),
    }
    checks["latency"]["slo_ms"] = p.latency_slo_ms
    cost_check: dict[str, Any] = {"day": day.date().isoformat(), "cost_usd": round(float(cost), 6),
                                  "unpriced_requests": int(unpriced), "budget_usd": p.daily_budget_usd}
    if p.daily_budget_usd is None:
        cost_check.update(status="skipped", reason="no budget (production.daily_budget_usd)")
    elif float(cost) > p.daily_budget_usd:
        cost_check.update(status="breach", reason=f"{float(cost):.4f} USD today, over the budget of "
                                                  f"{p.daily_budget_usd:g} USD")
    elif unpriced:
        cost_check.update(status="breach", reason=f"{int(unpriced)} request(s) today by a model without a price in "
                                                  "eval.prices: the day's cost is unknown (add the price, or "
                                                  "free: true for a local model)")
    else:
        cost_check["status"] = "ok"
    checks["cost"] = cost_check
    breaches = [k for k, c in checks.items() if c["status"] == "breach"]
    return {"window": {"start": start.isoformat(), "end": now.isoformat(), "span": window or p.window},
            "requests": int(n), "errors": int(errors), "evaluated": int(safety[0]),
            "safety": {"pii": int(safety[1]), "blocklist": int(safety[2]), "injection": int(safety[3]),
                       "toxic": sum(1 for t in tox if t.get("toxic"))},
            "checks": checks, "breaches": breaches,
            "worst": worst(settings, start, now, breaches) if breaches else []}


def worst(settings: Settings, start: dt.datetime, end: dt.datetime, breaches: list[str]) -> list[dict[str, Any]]:
    """The traces a person should read first for these breaches."""
    T, E = state.Trace, state.TraceEval
    n = settings.production.worst_traces
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    with state.session_scope(settings.state_db_url) as s:
        queries = []
        if "hallucination" in breaches:
            queries.append(("unsupported claims", select(T, E).join(E, E.trace_id == T.trace_id).where(
                *in_window(start, end), E.hallucinated == 1).order_by(E.faithfulness, T.ts.desc()).limit(n)))
        if "negative_feedback" in breaches:
            queries.append(("negative feedback", select(T, E).outerjoin(E, E.trace_id == T.trace_id).where(
                *in_window(start, end), T.feedback < 0).order_by(T.feedback, T.ts.desc()).limit(n)))
        if "latency" in breaches:
            queries.append(("slow", select(T, E).outerjoin(E, E.trace_id == T.trace_id).where(
                *in_window(start, end), T.latency_ms.is_not(None)).order_by(T.latency_ms.desc()).limit(n)))
        if "refusal" in breaches:
            queries.append(("refused", select(T, E).outerjoin(E, E.trace_id == T.trace_id).where(
                *in_window(start, end), T.refused == 1).order_by(T.ts.desc()).limit(n)))
        if "toxicity" in breaches:
            rows = [(t, e) for t, e in s.execute(select(T, E).join(E, E.trace_id == T.trace_id)
                                                  .where(*in_window(start, end))).all()
                    if ((e.detail or {}).get("toxicity") or {}).get("toxic")]
            rows.sort(key=lambda te: -float(te[1].detail["toxicity"]["score"]))
            queries.insert(0, ("toxic answer", rows[:n]))
        for why, q in queries:
            for t, e in (q if isinstance(q, list) else s.execute(q).all()):
                if t.trace_id in seen:
                    continue
                seen.add(t.trace_id)
                out.append({"why": why, "trace_id": t.trace_id, "at": t.ts.isoformat(), "question": t.question[:300],
                            "answer": (t.answer or "")[:400], "prompt": f"{t.prompt_name}@{t.prompt_version}",
                            "index": f"{t.index_name}@{t.index_version}", "latency_ms": t.latency_ms,
                            "feedback": t.feedback, "comment": t.feedback_comment,
                            "unsupported": [c["claim"] for c in ((e.detail or {}).get("unsupported_claims") or [])][:3]
                            if e is not None else []})
    return out


def run(settings: Settings, *, run_id: str | None = None, trigger: str = "cli", now: dt.datetime | None = None,
        window: str | None = None, evaluate_sample: bool = True, rate: float | None = None,
        cap: int | None = None, llm: Any = None) -> dict[str, Any]:
    """Load new traces, evaluate the sample, check; recorded as a monitor run. A finished run id
    returns its stored outcome (a task retry repeats nothing)."""
    from ragops.production.aggregate import figures
    from ragops.production.load import load

    state.require_schema(settings.state_db_url)
    now = now or dt.datetime.now(dt.UTC)
    run_id = run_id or f"monitor-{now:%Y%m%dT%H%M%S}"
    with state.session_scope(settings.state_db_url) as s:
        old = s.get(state.MonitorRun, run_id)
        if old is not None and old.status in ("ok", "breach"):
            log.info("monitor run %s already finished (%s): returning its outcome", run_id, old.status)
            return dict(old.results)
        if old is None:
            s.add(state.MonitorRun(run_id=run_id, status="running", trigger=trigger, started_at=now, results={},
                                   breaches=[]))
    try:
        loaded = load(settings, now=now)
        ev = evaluate(settings, run_id=run_id, now=now, rate=rate, cap=cap, llm=llm) if evaluate_sample else {"skipped": True}
        verdict = check(settings, now, window)
        since = dt.datetime.fromisoformat(verdict["window"]["start"])
        by_version = figures(settings, since, now, by=("prompt", "prompt_version", "model"))
        from ragops.production.versions import promotion_effects

        # each production move is reported once it is a day old: before/after with an interval
        effects = [e for e in promotion_effects(settings, now)
                   if dt.datetime.fromisoformat(e["at"]) >= now - dt.timedelta(days=8)]
    except RagopsError:
        with state.session_scope(settings.state_db_url) as s:
            r = s.get(state.MonitorRun, run_id)
            if r is not None:
                r.status, r.finished_at = "failed", dt.datetime.now(dt.UTC)
        raise
    summary = {"run_id": run_id, "status": "breach" if verdict["breaches"] else "ok", "load": loaded.as_dict(),
               "online_eval": ev, **verdict, "by_prompt_version": by_version, "promotion_effects": effects}
    with state.session_scope(settings.state_db_url) as s:
        r = s.get(state.MonitorRun, run_id)
        r.status, r.finished_at, r.results, r.breaches = (summary["status"], dt.datetime.now(dt.UTC), summary,
                                                          verdict["breaches"])
        for b in verdict["breaches"]:
            state.audit(s, trigger, "production_breach", None, run_id=run_id, check=b, figures=verdict["checks"][b])
    return summary


def history(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.MonitorRun).order_by(state.MonitorRun.started_at.desc()).limit(limit)).scalars()
        return [{"run_id": r.run_id, "status": r.status, "trigger": r.trigger, "started_at": r.started_at.isoformat(),
                 "breaches": list(r.breaches or []), "requests": (r.results or {}).get("requests"),
                 "evaluated": ((r.results or {}).get("online_eval") or {}).get("evaluated")} for r in rows]


def show(settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """One monitor run's figures (default: the latest)."""
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.MonitorRun).order_by(state.MonitorRun.started_at.desc())
        if run_id:
            q = q.where(state.MonitorRun.run_id == run_id)
        r = s.execute(q.limit(1)).scalar_one_or_none()
        if r is None:
            raise RagopsError(f"no monitor run {run_id or 'yet'}: see `ragops monitor history`, or run `ragops "
                              "monitor run`")
        return dict(r.results) if r.results else {"run_id": r.run_id, "status": r.status}
