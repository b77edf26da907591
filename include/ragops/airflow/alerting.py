"""Alerting for the DAGs: a notifier built on the SMTP provider's ``SmtpNotifier`` and a way for
tasks to send event e-mails. Content, escaping, folding and the outbox live in ``ragops.alerts``.

* ``RagopsSmtpNotifier`` is every DAG's ``on_failure_callback``: one e-mail per failed run that
  lists every failed task (ten failed mapped batches = one e-mail), with the error, the last log
  lines and links into the Airflow UI.
* ``remember_task_failure`` is every task's ``on_failure_callback`` (via ``DEFAULT_ARGS``): it
  records the exception and traceback in the audit log, where the DAG-level notifier finds them.
* ``send_event`` lets a task send gate / promotion / index / drift / quality e-mails.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

if TYPE_CHECKING:  # ragops.alerts pulls in the state store; DAG files must parse without it
    from ragops.alerts import Alert, Sender

log = logging.getLogger(__name__)
STATUS_BY_ERROR = {"DataIncidentError": ("DATA INCIDENT", "quality"), "SyncMismatchError": ("SELF-CHECK FAILED", "failure"),
                   "MassDeleteError": ("MASS DELETE REFUSED", "failure")}


def smtp_sender(conn_id: str) -> Sender:
    """Send a ready MIME message through the provider's hook (connection, TLS and login from the
    Airflow Connection). The hook's own send_email_smtp builds HTML-only mail; ours carries a
    plain-text part too, so the message goes through the hook's authenticated client."""

    def send(msg: Any) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook._smtp_client.send_message(msg)  # noqa: SLF001 - no public accessor for the client

    return send


def known_secrets(conn_ids: tuple[str, ...] = ("smtp_default", "chroma_default", "llm_default")) -> list[str]:
    """Values that must never appear in an e-mail: Connection passwords and ragops tokens."""
    from airflow.sdk import BaseHook

    out = [os.environ.get("RAGOPS_CHROMA_TOKEN", "")]
    for conn_id in conn_ids:
        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception:  # noqa: BLE001 - a Connection that does not exist has no secret
            continue
        out += [conn.password or ""]
        extra = conn.extra_dejson or {}
        out += [str(v) for k, v in extra.items() if any(w in k.lower() for w in ("key", "token", "secret", "pass"))]
    try:
        from sqlalchemy.engine import make_url

        from ragops.config import load_settings

        out.append(make_url(load_settings().state_db_url).password or "")
    except Exception:  # noqa: BLE001 - no URL, no password
        pass
    return [s for s in out if s]


def base_url() -> str:
    from ragops.config import load_settings

    configured = load_settings().alerts.base_url
    if configured:
        return configured.rstrip("/")
    try:
        from airflow.configuration import conf

        return (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")
    except Exception:  # noqa: BLE001 - links are a convenience
        return "http://localhost:8080"


def run_link(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def task_link(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    link = f"{run_link(dag_id, run_id)}/tasks/{quote(task_id)}"
    return f"{link}/mapped/{map_index}" if map_index >= 0 else link


def send_event(alert: Alert, recipients: list[str] | None = None) -> dict[str, Any]:
    """Record and send an event e-mail from a task. Never fails the task: delivery problems are
    retried, recorded in the outbox and logged at ERROR."""
    from ragops import alerts
    from ragops.config import load_settings

    settings = load_settings()
    if alert.key is None:
        alert.key = task_key()
    return alerts.send(settings, alert, smtp_sender(settings.alerts.smtp_conn_id), secrets=known_secrets(),
                       recipients=recipients)


def task_key() -> str | None:
    """dag/run/task/map index of the running task: the same alert sent again by a retry of that
    task is then recorded and e-mailed once (``Alert.key``)."""
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # noqa: BLE001 - outside a task (tests, CLI) there is no key
        return None
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{_map_index(ti)}"


# ----------------------------------------------------------------------------------------------
# task failures


def remember_task_failure(context: Any) -> None:
    """Task-level ``on_failure_callback``: keep the exception for the run's failure e-mail."""
    from ragops import state
    from ragops.config import load_settings

    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    tb = "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else str(exc or "")
    detail = {
        "dag_id": getattr(ti, "dag_id", "?"), "run_id": getattr(ti, "run_id", "?"),
        "task_id": getattr(ti, "task_id", "?"), "map_index": _map_index(ti),
        "try_number": getattr(ti, "try_number", None),
        "error_type": type(_root(exc)).__name__ if isinstance(exc, BaseException) else "Error",
        "error": str(_root(exc)) if isinstance(exc, BaseException) else str(exc or ""),
        "traceback": tb.strip().splitlines()[-40:],
    }
    try:
        settings = load_settings()
        with state.session_scope(settings.state_db_url) as s:
            state.audit(s, actor=f"airflow:{detail['dag_id']}", action="task_failed", index_name=None, **detail)
    except Exception:  # noqa: BLE001 - the DAG-level e-mail still goes out, with less detail
        log.exception("could not record the failure of %s.%s", detail["dag_id"], detail["task_id"])


def _map_index(ti: Any) -> int:
    mi = getattr(ti, "map_index", -1)
    return -1 if mi is None else int(mi)  # 0 is a real map index


def _root(exc: BaseException) -> BaseException:
    """AirflowFailException wraps our library error: report the library error."""
    cause = exc.__cause__
    return cause if cause is not None and type(exc).__name__ == "AirflowFailException" else exc


def run_identity(context: Any) -> tuple[str, str]:
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or "?"
    return dag_id, getattr(dag_run, "run_id", None) or context.get("run_id") or "?"


def _task_failures(dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    from sqlalchemy import select

    from ragops import state
    from ragops.config import load_settings

    settings = load_settings()
    out: dict[tuple[str, int], dict[str, Any]] = {}
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "task_failed",
                                                        state.AuditEntry.actor == f"airflow:{dag_id}")
                         .order_by(state.AuditEntry.id.desc()).limit(500)).scalars()
        for row in rows:
            d = row.detail
            if d.get("run_id") == run_id:
                out.setdefault((d.get("task_id"), int(d.get("map_index", -1))), d)
    return out


def _log_tail(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int | None, n: int) -> list[str]:
    """Last lines of the task log file, when this machine has it (local log folder)."""
    try:
        from airflow.configuration import conf

        folder = Path(conf.get("logging", "base_log_folder"))
    except Exception:  # noqa: BLE001
        return []
    task_dir = folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        task_dir = task_dir / f"map_index={map_index}"
    candidates = sorted(task_dir.glob("attempt=*.log")) if task_dir.exists() else []
    if try_number:
        candidates = [c for c in candidates if c.name == f"attempt={try_number}.log"] or candidates
    if not candidates:
        return []
    lines = []
    for raw in candidates[-1].read_text(errors="replace").splitlines()[-n:]:
        try:
            rec = json.loads(raw)
            lines.append(f"{rec.get('timestamp', '')[11:19]} {rec.get('level', '').upper():7} {rec.get('event', '')}")
        except (ValueError, AttributeError):
            lines.append(raw)
    return lines


def failure_alert(context: Any) -> Alert:
    """One alert for a failed DAG run, listing every failed task."""
    from ragops.alerts import Alert
    from ragops.config import load_settings

    settings = load_settings()
    dag_id, run_id = run_identity(context)
    # the failed tasks as their own on_failure_callback recorded them: the DAG-level callback runs
    # in the dag processor, where the run's task instances are not queryable
    errors = _task_failures(dag_id, run_id)
    items, kinds = [], []
    for (task_id, mi), err in sorted(errors.items()):
        name = task_id + (f"[{mi}]" if mi >= 0 else "")
        kinds.append(err.get("error_type", "Error"))
        log_lines = _log_tail(dag_id, run_id, task_id, mi, err.get("try_number"), settings.alerts.log_lines)
        items.append({
            "title": f"{name} (attempt {err.get('try_number')})",
            "detail": f"{err.get('error_type', 'Error')}: {err.get('error', 'see the task log')}",
            "log": log_lines or err.get("traceback", [])[-settings.alerts.log_lines:],
            "link": task_link(dag_id, run_id, task_id, mi),
        })
    first = errors[min(errors)] if errors else {}
    dag_run = context.get("dag_run")
    status, event = next((STATUS_BY_ERROR[k] for k in kinds if k in STATUS_BY_ERROR), ("FAILED", "failure"))
    if len(items) == 1:
        where = f"{dag_id}.{items[0]['title'].split(' (')[0]}"
    else:
        where = f"{dag_id}: {len(items) or 'no'} tasks failed"
    headline = f"{first.get('error_type', 'Error')}: {first.get('error', context.get('reason') or 'run failed')}"
    params = context.get("params") or {}
    facts = [("DAG", dag_id), ("run", run_id), ("run type", str(getattr(dag_run, "run_type", "")))]
    facts += [(f"param {k}", str(v)) for k, v in params.items() if k in ("index", "source", "dataset", "prompt")]
    return Alert(event=event, status=status, where=where, headline=" ".join(headline.split())[:300],
                 severity="critical",
                 summary=f"The DAG run failed: {len(items)} task(s) failed ({context.get('reason') or 'task failure'}).",
                 items=items, facts=facts,
                 links=[("Open the run in Airflow", run_link(dag_id, run_id))])


class RagopsSmtpNotifier(SmtpNotifier):
    """DAG-level failure notifier: recipients, sender and connection from the ragops settings;
    content from :func:`failure_alert`; delivery through the outbox (retries, folding)."""

    def __init__(self, event: str = "failure", **kwargs: Any) -> None:
        from ragops.config import load_settings

        alerts = load_settings().alerts
        super().__init__(to=list(alerts.recipients_for(event)) or ["ragops-oncall@localhost"],
                         from_email=alerts.from_email, smtp_conn_id=alerts.smtp_conn_id, **kwargs)
        self.event = event

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Our content is built in notify(). A DAG callback's context may carry a serialized DAG
        without a template environment (dag.test()), so the provider's fields get a sandbox."""
        if jinja_env is None:
            from jinja2.sandbox import SandboxedEnvironment

            jinja_env = SandboxedEnvironment()
        super().render_template_fields(context, jinja_env)

    def notify(self, context: Any) -> None:
        from ragops import alerts
        from ragops.config import load_settings

        settings = load_settings()
        alert = failure_alert(context)
        to = list(settings.alerts.recipients_for(alert.event))
        if alert.event != "failure":
            to = list(dict.fromkeys(list(settings.alerts.recipients_for("failure")) + to))
        result = alerts.send(settings, alert, smtp_sender(self.smtp_conn_id), secrets=known_secrets(),
                             recipients=to)
        log.info("failure alert for %s: %s", alert.where, result)
