"""Read models for the LLMOps page (and anything else that wants one view of the state store):
indexes and their versions, prompts with aliases and history, eval runs and per-question results,
drift checks, quarantine, the audit log. Read-only; no Airflow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ragops import state
from ragops.config import Settings
from ragops.errors import EvalError

CHART_METRICS = ["hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1", "refusal_accuracy"]


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
    return {"runs": runs, "series": series, "metrics": CHART_METRICS}


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


def overview(settings: Settings) -> dict[str, Any]:
    """Everything the LLMOps page shows, in one read."""
    from ragops.retrieval import quarantine_entries

    state.require_schema(settings.state_db_url)
    ixs = indexes(settings)
    quarantine = [q for ix in ixs for q in quarantine_entries(settings, ix["name"], limit=200)]  # latest sync each
    return {"indexes": ixs, "prompts": prompts(settings), "eval": eval_runs(settings),
            "drift": drift_checks(settings), "quarantine": quarantine, "audit": audit_log(settings)}
