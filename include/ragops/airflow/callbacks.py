"""Failure callbacks. A failed DAG run is recorded in the state store's audit log with the
failing tasks and the error, so `ragops` and the LLMOps page can show it; alert e-mail is added
on top of this record, not instead of it."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def record_failure(context: Any) -> None:
    """DAG-level ``on_failure_callback``: log and audit which tasks failed and why."""
    from ragops import state
    from ragops.config import load_settings

    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    run_id = getattr(dag_run, "run_id", "?")
    reason = str(context.get("reason") or context.get("exception") or "")
    failed: list[str] = []
    try:
        for ti in dag_run.get_task_instances(state=["failed", "upstream_failed"]) if dag_run else []:
            failed.append(f"{ti.task_id}" + (f"[{ti.map_index}]" if getattr(ti, "map_index", -1) >= 0 else ""))
    except Exception as exc:  # noqa: BLE001 - the list is a detail; the record below must still be written
        log.warning("could not list failed task instances of %s/%s: %s", dag_id, run_id, exc)
    log.error("ragops DAG %s run %s failed: tasks %s; %s", dag_id, run_id, failed or "?", reason)
    settings = load_settings()
    params = context.get("params") or {}
    with state.session_scope(settings.state_db_url) as s:
        state.audit(s, actor=f"airflow:{dag_id}", action="dag_failed", index_name=params.get("index"),
                    dag_id=dag_id, run_id=run_id, failed_tasks=failed, reason=reason[:2000])
