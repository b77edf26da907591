"""Glue of the check_drift DAG (one library call per task) and of the reference snapshots other
DAGs take; plus the drift e-mail."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def _check_id(run_id: str) -> str:
    return ("check_drift__" + re.sub(r"[^A-Za-z0-9_.:+-]", "_", run_id))[:128]


def run(params: dict[str, Any], run_id: str, run_type: str, end: Any, actor: str = "airflow") -> dict[str, Any]:
    """One drift check; a retry of the task returns the stored outcome of the same check id."""
    from ragops.drift.checks import run_check

    settings = task_settings()
    when = None
    if run_type == "scheduled" and end is not None:  # the run's data interval ends at the cron tick
        when = dt.datetime.fromisoformat(str(end)) if not isinstance(end, dt.datetime) else end
    summary = run_library(
        run_check, settings, params.get("index") or None, checks=params.get("checks") or None,
        methods=params.get("methods") or None, reference=params.get("reference") or "last",
        reference_window=params.get("reference_window") or None, current_window=params.get("current_window") or None,
        end=when, sample_size=int(params.get("sample_size") or 0) or None,
        permutations=int(params.get("permutations") or 0) or None,
        seed=None if params.get("seed") in (None, "") else int(params["seed"]),
        targeted=params.get("targeted_eval"), check_id=_check_id(run_id), trigger=f"airflow:{run_type}",
        actor=actor)
    return summary


def notify(summary: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """A `drift` e-mail when a check breached (nothing otherwise)."""
    from ragops.airflow.alerting import run_link, send_event

    if not summary.get("breaches"):
        log.info("no drift breach: no e-mail")
        return {"sent": False, "reason": "no breach"}
    return send_event(drift_alert(summary, run_link(dag_id, run_id)))


def targeted_conf(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The nightly_eval run conf for the golden questions nearest the drifted region, or None
    (the short-circuit skips the trigger)."""
    t = summary.get("targeted") or {}
    if not t.get("question_ids"):
        log.info("no targeted evaluation: %s", t.get("reason") or "no corpus, query or gap breach")
        return None
    return {"index": summary["index"], "question_ids": list(t["question_ids"])}


def drift_alert(s: dict[str, Any], link: str) -> Any:
    from ragops.alerts import Alert, Figure
    from ragops.drift.checks import describe_check

    figures: list[Figure] = []
    items: list[dict[str, Any]] = []
    for name, c in s["checks"].items():
        ev = c.get("evidence") or {}
        if name in ("corpus", "queries"):
            for test, v in ev.items():
                if "statistic" in v:
                    figures.append(Figure(metric=f"{name} · {test}", value=round(v["statistic"], 4),
                                          threshold=f"AUC > {v['threshold']:.3f}" if "threshold" in v else "p small",
                                          difference=round(v["p_value"], 4),
                                          passed=name not in s["breaches"] or test not in c.get("fired", [])))
        elif name == "gaps" and "share" in ev:
            figures.append(Figure(metric="gaps · uncovered share", value=round(ev["share"], 4),
                                  production=ev.get("reference_share"), threshold=f"<= {ev.get('max_share')}",
                                  passed=c["status"] != "breach"))
        elif name in ("documents", "quality") and c["status"] == "breach":
            figures.append(Figure(metric=name, value=", ".join(c.get("fired") or []), passed=False))
        if c["status"] == "breach":
            items.append({"title": f"{name}: {describe_check(name, c)}", "detail": f"rule: {c.get('rule', '')}"})
        for cl in c.get("clusters") or []:
            items.append({"title": f"uncovered queries ({cl['size']}): {', '.join(cl['terms'])}",
                          "detail": " | ".join(cl["examples"])})
        if name == "queries" and c.get("novel_examples") and c["status"] == "breach":
            items.append({"title": "new kinds of queries", "detail": " | ".join(c["novel_examples"])})
    t = s.get("targeted") or {}
    facts = [("index", s["index"]), ("check", s["check_id"]), ("serving", str(s.get("collection"))),
             ("reference snapshot", str(s.get("reference") or "–")),
             ("current window", " to ".join(x[:16] for x in s["windows"]["current"])),
             ("reference window", " to ".join(x[:16] for x in s["windows"]["reference"])),
             ("report", s["report"]),
             ("targeted eval", (f"nightly_eval on {len(t['question_ids'])} question(s): {', '.join(t['question_ids'])}"
                                if t.get("question_ids") else t.get("reason") or "off"))]
    return Alert(event="drift", status="DRIFT", severity="warning", where=f"check_drift · index {s['index']}",
                 headline=f"drift in index {s['index']}: {', '.join(s['breaches'])}",
                 summary=("A drift check breached. Corpus and query drift are permutation tests (p-values valid "
                          "under no drift, Bonferroni over the tests); gaps are queries no chunk answers well; "
                          "quality compares the newest nightly evals with control limits from the runs before. "
                          "The report has the plots and every figure; `ragops drift show "
                          f"{s['check_id']}` prints them."),
                 figures=figures, items=items, facts=facts, links=[("Airflow run", link)],
                 figure_headers=["check · measure", "rule", "current", "reference", "p-value", "", ""])


def snapshot_after_swap(result: dict[str, Any], actor: str) -> dict[str, Any]:
    """rebuild_index: the drift reference for the version that now serves (its own task, so a
    retry never repeats the rebuild)."""
    from ragops.drift.snapshots import take

    if not result.get("swapped"):
        return {"taken": False, "reason": result.get("skipped") or "no new version serves"}
    reason = "index_rollback" if result.get("action") == "rollback" else "index_swap"
    snap = run_library(take, task_settings(), result["index"], reason=reason, actor=actor)
    return {"taken": True, "name": snap["name"], "vectors": snap["vectors"]}
