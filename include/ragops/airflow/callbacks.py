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
    from ragops.airflow.alerting import _task_failures, run_identity
    from ragops.config import load_settings

    dag_id, run_id = run_identity(context)
    reason = str(context.get("reason") or context.get("exception") or "")
    failed = [t + (f"[{mi}]" if mi >= 0 else "") for t, mi in sorted(_task_failures(dag_id, run_id))]
    log.error("ragops DAG %s run %s failed: tasks %s; %s", dag_id, run_id, failed or "?", reason)
    settings = load_settings()
    params = context.get("params") or {}
    with state.session_scope(settings.state_db_url) as s:
        state.audit(s, actor=f"airflow:{dag_id}", action="dag_failed", index_name=params.get("index"),
                    dag_id=dag_id, run_id=run_id, failed_tasks=failed, reason=reason[:2000])
