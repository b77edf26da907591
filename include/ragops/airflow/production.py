"""Glue of the monitor_production DAG (one library call per task) and its `production` e-mail."""

from __future__ import annotations

import logging
import re
from typing import Any

from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def _run_id(run_id: str) -> str:
    return ("monitor_production__" + re.sub(r"[^A-Za-z0-9_.:+-]", "_", run_id))[:128]


def run(params: dict[str, Any], run_id: str, run_type: str, actor: str = "airflow") -> dict[str, Any]:
    """Load, evaluate the sample, check; a retry returns the stored outcome of the same run."""
    from ragops.airflow.hooks import LlmHook
    from ragops.production.monitor import run as monitor

    settings = task_settings()
    llm = LlmHook.optional(settings.eval.llm_conn_id) if settings.production.judge else None
    rate = params.get("sample_rate")
    cap = params.get("daily_eval_cap")
    summary = run_library(monitor, settings, run_id=_run_id(run_id), trigger=actor,
                          window=params.get("window") or None, evaluate_sample=bool(params.get("evaluate", True)),
                          rate=None if rate in (None, "") else float(rate),
                          cap=None if cap in (None, "") else int(cap), llm=llm)
    log.info("monitor_production (%s): %s, %d request(s) in the window, breaches: %s", run_type, summary["status"],
             summary["requests"], ", ".join(summary["breaches"]) or "none")
    return {k: summary[k] for k in ("run_id", "status", "requests", "evaluated", "breaches", "checks", "worst",
                                    "window", "load", "online_eval", "promotion_effects")}


def notify(summary: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """A `production` e-mail when a check breached (nothing otherwise)."""
    from ragops.airflow.alerting import run_link, send_event

    if not summary.get("breaches"):
        log.info("no production breach: no e-mail")
        return {"sent": False, "reason": "no breach"}
    return send_event(production_alert(summary, run_link(dag_id, run_id)))


def production_alert(s: dict[str, Any], link: str) -> Any:
    from ragops.alerts import Alert, Figure

    figures: list[Figure] = []
    for name, c in s["checks"].items():
        if name == "cost":
            figures.append(Figure(metric=f"cost · {c['day']}", value=c["cost_usd"],
                                  threshold=f"<= {c['budget_usd']} USD" if c.get("budget_usd") is not None else "–",
                                  production=f"{c['unpriced_requests']} unpriced" if c["unpriced_requests"] else None,
                                  passed=c["status"] != "breach"))
            continue
        if c["status"] == "skipped":
            figures.append(Figure(metric=name, value="skipped", threshold=c.get("reason"), passed=None))
            continue
        figures.append(Figure(metric=name, value=c["rate"], threshold=f"<= {c['limit']}",
                              production=f"{c['k']} of {c['n']}", difference=c["p_value"],
                              passed=c["status"] != "breach"))
    items = []
    for w in s.get("worst") or []:
        detail = f"Q: {w['question']} | A: {w['answer']}"
        if w.get("unsupported"):
            detail += " | unsupported: " + " / ".join(w["unsupported"])
        if w.get("comment"):
            detail += f" | user: {w['comment']}"
        items.append({"title": f"{w['why']}: trace {w['trace_id']} ({w['prompt']}, {w['index']}, "
                               f"{w['latency_ms'] and round(w['latency_ms'])} ms)", "detail": detail})
    for e in s.get("promotion_effects") or []:
        h = e["hallucination"]
        change = (f"{100 * h['difference']:+.1f} points" + (f" [{100 * h['ci'][0]:+.1f}, {100 * h['ci'][1]:+.1f}]"
                                                             if h.get("ci") else "")
                  if h.get("difference") is not None else h.get("status", ""))
        items.append({"title": f"promotion {e['prompt']} v{e['from_version']} -> v{e['to_version']} at {e['at'][:16]}",
                      "detail": f"hallucination rate before -> after: {change} ({h.get('status')})"})
    facts = [("monitor run", s["run_id"]), ("window", f"{s['window']['start'][:16]} to {s['window']['end'][:16]}"),
             ("requests", str(s["requests"])), ("evaluated online", str(s["evaluated"])),
             ("traces loaded this run", str(s["load"]["traces"])),
             ("lines skipped this run", ", ".join(f"{k} x{v}" for k, v in s["load"]["skipped"].items()) or "none")]
    reasons = {c: s["checks"][c].get("reason") for c in s["breaches"] if s["checks"][c].get("reason")}
    return Alert(event="production", status="PRODUCTION", severity="warning", where="monitor_production",
                 headline=f"production: {', '.join(s['breaches'])}",
                 summary=("The live application breached a production check. Rates are judged with a one-sided "
                          "binomial test against their limit (production.* in the settings); the worst traces are "
                          "below. " + "".join(f"{k}: {v}. " for k, v in reasons.items()) +
                          "`ragops monitor show` prints every figure; the LLMOps page's review queue turns these "
                          "traces into golden questions."),
                 figures=figures, items=items, facts=facts, links=[("Airflow run", link)],
                 figure_headers=["check", "rule", "rate", "count", "p-value", "", ""])
