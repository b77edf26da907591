"""Read models for the LLMOps page (and anything else that wants one view of the state store):
indexes and their versions, prompts with aliases and history, eval runs and per-question results,
drift checks, quarantine, the audit log. Read-only; no Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ragops import state
from ragops.config import Settings
from ragops.errors import EvalError

CHART_METRICS = ["hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1", "refusal_accuracy"]
CHART_GROUPS = {"retrieval": ["hit_rate@5", "ndcg@10"],
                "answer": ["faithfulness", "hallucination_rate", "answer_f1", "refusal_accuracy"]}


def indexes(settings: Settings) -> list[dict[str, Any]]:
    from ragops.lifecycle import versions

    with state.session_scope(settings.state_db_url) as s:
        names = state.known_indexes(s)
        last_runs = {}
        for name in names:
            run = s.execute(select(state.SyncRun).where(state.SyncRun.index_name == name)
                            .order_by(state.SyncRun.started_at.desc()).limit(1)).scalar_one_or_none()
            if run is not None:
                last_runs[name] = {"run_id": run.run_id, "status": run.status, "trigger": run.trigger,
                                   "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                                   "counts": (run.stats or {}).get("counts") or {}}
        chunks = {n: s.query(state.Chunk).filter(state.Chunk.index_name == n).count() for n in names}
    out = []
    for name in names:
        vs = versions(settings, name)
        live = next((v for v in vs if v["live"]), None)
        out.append({"name": name, "live": live["collection"] if live else None, "chunks": chunks[name],
                    "versions": vs, "last_sync": last_runs.get(name)})
    return out


def prompts(settings: Settings) -> list[dict[str, Any]]:
    from ragops.registry import history, list_prompts

    out = []
    for p in list_prompts(settings):
        p["history"] = list(reversed(history(settings, p["name"])))[:30]
        out.append(p)
    return out


def eval_runs(settings: Settings, limit: int = 60) -> dict[str, Any]:
    """Recent runs (newest first) and, per index and dataset, the nightly series (oldest first)."""
    from ragops.evaluation.runner import list_runs

    runs = list_runs(settings, limit=limit)
    series: dict[str, list[dict[str, Any]]] = {}
    for r in reversed(runs):
        if r["status"] in ("success", "partial"):
            series.setdefault(f"{r['index']} · {Path(r['dataset']).name}", []).append(
                {"label": r["started_at"][5:16].replace("T", " "), "metrics": r["metrics"], "run_id": r["run_id"]})
    charts: dict[str, dict[str, Any]] = {}
    for r in reversed(runs):  # oldest first: what a time axis draws
        if r["status"] not in ("success", "partial"):
            continue
        at = dt.datetime.fromisoformat(r["started_at"])
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        chart = charts.setdefault(f"{r['index']} · {Path(r['dataset']).name}", {"index": r["index"], "points": []})
        chart["points"].append({"t": round(at.timestamp(), 3), "at": at.isoformat(), "run_id": r["run_id"],
                                "purpose": r["purpose"] or "adhoc", "prompt": r["prompt"],
                                "metrics": {m: r["metrics"].get(m) for m in CHART_METRICS}})
    return {"runs": runs, "series": series, "metrics": CHART_METRICS, "charts": charts,
            "chart_groups": CHART_GROUPS}


def chart_events(prompt_list: list[dict[str, Any]], audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the trend charts mark on their time axis: prompt promotions and rollbacks (every index's
    charts), index swaps and rollbacks (that index's)."""
    out = []
    for p in prompt_list:
        for e in p["history"]:
            if e["action"] in ("promoted", "rolled_back") and e.get("alias") == "production":
                out.append({"at": e["at"], "kind": "promotion" if e["action"] == "promoted" else "rollback",
                            "index": None, "label": f"{p['name']} → v{e['to']}"})
    for a in audit:
        if a["action"] in ("index_swapped", "index_rolled_back"):
            d = a.get("detail") or {}
            out.append({"at": a["at"], "kind": "index swap" if a["action"] == "index_swapped" else "index rollback",
                        "index": a["index"], "label": f"{a['index']} → {d.get('live') or d.get('to') or ''}".strip()})
    for e in out:
        at = dt.datetime.fromisoformat(e["at"])
        e["t"] = round((at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp(), 3)
    return sorted(out, key=lambda e: e["t"])


def gate_thresholds(settings: Settings) -> dict[str, float]:
    """The default gate's absolute thresholds on the charted metrics (drawn as lines)."""
    gate = settings.gates.get("default") or {}
    out = {}
    for metric, rule in (gate.get("thresholds") or {}).items():
        value = rule[1] if isinstance(rule, (list, tuple)) else rule
        if metric in CHART_METRICS and isinstance(value, (int, float)):
            out[metric] = float(value)
    return out


def eval_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """One run with every question: answer, metrics, retrieved documents and context texts (from
    the run's results.jsonl when it is still there, else the chunk as the state store has it now)."""
    from ragops.evaluation.runner import run_row

    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
        row = run_row(run)
        results = {r.question_id: dict(r.payload or {}, ok=bool(r.ok)) for r in s.execute(
            select(state.EvalResult).where(state.EvalResult.run_id == run_id)).scalars()}
        index = run.index_name
    texts: dict[tuple[str, str], str] = {}
    source = "state store (current chunk text)"
    path = Path(row["output_dir"] or "") / "results.jsonl"
    if row["output_dir"] and path.exists():
        source = "the run's results.jsonl (the texts the run saw)"  # not the server path
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                q = json.loads(line)
            except json.JSONDecodeError:
                continue
            for c in q.get("contexts") or []:
                texts[(q.get("id", ""), c.get("chunk_id", ""))] = c.get("text", "")
    else:
        ids = {c.get("chunk_id") for r in results.values() for c in r.get("contexts") or []}
        with state.session_scope(settings.state_db_url) as s:
            found = dict(s.execute(select(state.Chunk.chunk_id, state.Chunk.text).where(
                state.Chunk.index_name == index, state.Chunk.chunk_id.in_(ids))).all()) if ids else {}
        texts = {(qid, c.get("chunk_id", "")): found.get(c.get("chunk_id"), "(chunk no longer in the index)")
                 for qid, r in results.items() for c in r.get("contexts") or []}
    questions = []
    for qid in sorted(results):
        r = results[qid]
        for c in r.get("contexts") or []:
            c["text"] = texts.get((qid, c.get("chunk_id", "")), "")
        questions.append(r)
    return {"run": row, "questions": questions, "context_source": source}


def eval_report_html(settings: Settings, run_id: str) -> str:
    """The report.html of an eval run, from its run folder."""
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
        folder = run.output_dir
    path = Path(folder or "") / "report.html"
    if not folder or not path.exists():
        raise EvalError(f"no report.html for eval run {run_id!r} on this server: its run folder was removed or is "
                        "on another machine (the drill-down has the same figures)")
    return path.read_text(encoding="utf-8")


_ACTOR = re.compile(r"^(?P<who>.*) \(airflow (?P<dag>\S+) (?P<run>\S+)\)$")


def split_actor(actor: str | None) -> tuple[str, str | None, str | None]:
    """(who, dag_id, run_id) of an audit actor written by ragops.airflow.common.actor, e.g.
    ``alice (airflow check_drift manual__...)``; (actor, None, None) for any other actor."""
    m = _ACTOR.match(actor or "")
    return (m["who"], m["dag"], m["run"]) if m else (actor or "", None, None)


def audit_log(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        return [{"id": a.id, "at": a.at.isoformat(), "actor": a.actor, "action": a.action, "index": a.index_name,
                 "detail": a.detail} for a in s.execute(select(state.AuditEntry)
                                                         .order_by(state.AuditEntry.id.desc()).limit(limit)).scalars()]


def drift_checks(settings: Settings, limit: int = 30) -> list[dict[str, Any]]:
    from ragops.drift.checks import history

    out = history(settings, limit=limit)
    with state.session_scope(settings.state_db_url) as s:
        for r in out:
            row = s.get(state.DriftCheck, r["check_id"])
            r["checks"] = {k: v.get("status") for k, v in ((row.results or {}).get("summary") or {})
                           .get("checks", {}).items()} if row else {}
    return out


def status(settings: Settings, ixs: list[dict[str, Any]], evals: dict[str, Any],
           drift: list[dict[str, Any]]) -> dict[str, Any]:
    """The page's strip at a glance: last ingest, last nightly run, open breaches (each index's
    latest drift check), failed alerts in the outbox."""
    syncs = [dict(i["last_sync"], index=i["name"]) for i in ixs if i.get("last_sync")]
    last_ingest = max(syncs, key=lambda r: r.get("finished_at") or "", default=None)
    nightly = next((r for r in evals["runs"] if r["purpose"] == "nightly"), None)
    latest: dict[str, dict[str, Any]] = {}
    for d in drift:  # newest first
        latest.setdefault(d["index"], d)
    breaches = [{"index": i, "check_id": d["check_id"], "at": d["started_at"]} for i, d in latest.items()
                if d["status"] == "breach"]
    with state.session_scope(settings.state_db_url) as s:
        failed = s.scalar(select(func.count()).select_from(state.AlertRecord)
                          .where(state.AlertRecord.status.in_(("failed", "undeliverable"))))
    return {"last_ingest": last_ingest, "last_nightly": None if nightly is None else {
                k: nightly[k] for k in ("run_id", "status", "started_at", "index", "prompt")} | {
                "metrics": {m: nightly["metrics"].get(m) for m in ("hit_rate@5", "faithfulness")}},
            "breaches": breaches, "failed_alerts": int(failed or 0)}


def overview(settings: Settings) -> dict[str, Any]:
    """Everything the LLMOps page shows, in one read."""
    from ragops.retrieval import quarantine_entries

    state.require_schema(settings.state_db_url)
    ixs = indexes(settings)
    quarantine = [q for ix in ixs for q in quarantine_entries(settings, ix["name"], limit=200)]  # latest sync each
    plist, audit = prompts(settings), audit_log(settings)
    evals = eval_runs(settings)
    evals["events"] = chart_events(plist, audit)
    evals["thresholds"] = gate_thresholds(settings)
    drift = drift_checks(settings)
    return {"indexes": ixs, "prompts": plist, "eval": evals, "drift": drift, "quarantine": quarantine,
            "audit": audit, "status": status(settings, ixs, evals, drift)}
