"""Shared DAG arguments and the wrapper every task body goes through."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from ragops.airflow.alerting import remember_task_failure
from ragops.config import Settings, load_settings
from ragops.errors import RagopsError

WRITER_POOL = "ragops_chroma_writer"
T = TypeVar("T")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ragops",
    # keeps each failed task's exception for the run's single failure e-mail (no mail per task)
    "on_failure_callback": remember_task_failure,
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


RUN_TYPE_WHO = {"scheduled": "schedule", "asset_triggered": "asset event", "backfill": "backfill"}


def run_type(dag_run: Any) -> str:
    """``manual``, ``scheduled``, ``asset_triggered`` or ``backfill`` (``str()`` of Airflow's
    DagRunType enum would give ``DagRunType.MANUAL``)."""
    kind = getattr(dag_run, "run_type", None) or "manual"
    return str(getattr(kind, "value", kind)).lower()


def actor(dag_run: Any) -> str:
    """Who started this DAG run, for the audit log and the prompt history: the Airflow user who
    triggered it (UI, REST API, LLMOps page), else the schedule or the asset event, followed by
    the DAG run: ``alice (airflow check_drift manual__2026-12-06T10:00:00+00:00)``. The LLMOps page
    shows the two apart (ragops.overview.split_actor)."""
    user = getattr(dag_run, "triggering_user_name", None)
    who = user or RUN_TYPE_WHO.get(run_type(dag_run), "airflow")
    return f"{who} (airflow {getattr(dag_run, 'dag_id', '?')} {getattr(dag_run, 'run_id', '?')})"[:256]


def task_settings() -> Settings:
    """Settings inside a running task; in server mode the Chroma URL/token come from the Connection."""
    settings = load_settings()
    if settings.chroma.mode == "server" and not settings.chroma.url:
        from ragops.airflow.hooks import ChromaHook

        chroma = ChromaHook(settings.chroma.conn_id).settings_for(settings.chroma)
        settings = dataclasses.replace(settings, chroma=chroma)
    return settings


def run_library(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the library; errors a retry cannot fix fail the task at once (no retries)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return fn(*args, **kwargs)
    except RagopsError as exc:
        if exc.permanent:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise
