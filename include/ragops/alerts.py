"""Alert e-mails people act on: content, escaping, redaction, folding, and a delivery outbox.

Pure library code: the Airflow layer (``ragops.airflow.alerting``) turns a DAG run into an
:class:`Alert` and hands :func:`send` an SMTP sender built on the SMTP provider's hook.

Every alert is written to the state store's ``alerts`` table *before* it is sent. An identical
alert (same fingerprint) inside ``alerts.dedupe_window_minutes`` of a sent one is folded: not
sent, but counted in the next e-mail of that kind. Delivery is retried with exponential
backoff; an alert that still cannot be delivered is marked ``failed``, logged at ERROR and in
the audit log (``alert_not_delivered``), and re-sent by the next successful delivery of any alert
(or ``ragops alerts flush``).

Exactly once, also across a mail outage: a row is claimed (status ``sending``) before it is
sent, so two processes flushing at once never both send it; identical undelivered alerts go out
as one e-mail that counts the others; and an alert with a ``key`` (set per task by the Airflow
layer) is recorded once however often its task is retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from ragops import state
from ragops.config import Settings

log = logging.getLogger(__name__)

SEVERITY_COLOUR = {"critical": "#b42318", "warning": "#b54708", "info": "#027a48"}
SECRET_KEY_RE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|authorization|x-chroma-token)"
    r"(\s*[\"']?\s*[:=]\s*[\"']?\s*)(bearer\s+)?([^\s\"',;&}]+)")
URL_CRED_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)")
BEARER_RE = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})")
Sender = Callable[[EmailMessage], None]
CLAIM_LEASE = dt.timedelta(minutes=15)  # longer than any delivery with its retries takes
KEY_MEMORY = dt.timedelta(days=3)  # how long a task retry finds the alert its earlier try recorded


@dataclass
class Figure:
    """One row of the key-figures table. ``ci`` is the confidence interval of the difference."""

    metric: str
    value: float | str | None = None  # the candidate / observed value
    threshold: str | None = None  # e.g. ">= 0.80"
    production: float | str | None = None
    difference: float | str | None = None
    ci: str | None = None  # e.g. "[-0.041, -0.006]"
    passed: bool | None = None


@dataclass
class Alert:
    event: str  # failure | gate | prompt | index | drift | quality
    status: str  # FAILED, GATE FAILED, GATE PASSED, PROMOTED, REJECTED, ROLLED BACK, SWAPPED, DRIFT, ...
    where: str  # e.g. "ingest_documents.process_batch[3]"
    headline: str  # the one line that says what happened
    severity: str = "critical"
    summary: str = ""
    figures: list[Figure] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # {"title", "detail", "log": [..], "link"}
    facts: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    figure_headers: list[str] | None = None  # None = FIGURE_HEADERS (candidate vs production)
    dedupe: bool = True  # False for decisions (a swap, a promotion): each one is news, never folded
    # idempotency key, e.g. dag/run/task/map index: a retried task that sends the same alert again
    # finds the outbox row of its earlier try instead of recording (and e-mailing) a second one
    key: str | None = None

    def fingerprint(self) -> str:
        """Same event, place and kind of error = same alert (numbers and ids do not count)."""
        norm = re.sub(r"[0-9a-f]{8,}|\d+", "#", self.headline.lower())
        key = "|".join((self.event, self.status, re.sub(r"\[\d+\]", "[#]", self.where), norm))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        data = dict(data)
        data["figures"] = [Figure(**f) for f in data.get("figures", [])]
        data["facts"] = [tuple(f) for f in data.get("facts", [])]
        data["links"] = [tuple(link) for link in data.get("links", [])]
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# secrets


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secret values and anything that looks like a credential."""
    if not text:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = URL_CRED_RE.sub(r"\1***\3", text)
    text = BEARER_RE.sub(r"\1***", text)
    return SECRET_KEY_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}***", text)


def redact_alert(alert: Alert, secrets: Iterable[str] = ()) -> Alert:
    secrets = list(secrets)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, secrets)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return Alert.from_json(clean(alert.to_json()))


# ----------------------------------------------------------------------------------------------
# rendering


def one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def subject(alert: Alert) -> str:
    return one_line(f"[ragops][{alert.status}] {alert.where} — {alert.headline}", 200)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _figure_cells(f: Figure) -> list[str]:
    verdict = "" if f.passed is None else ("pass" if f.passed else "FAIL")
    return [f.metric, _fmt(f.threshold), _fmt(f.value), _fmt(f.production), _fmt(f.difference), _fmt(f.ci), verdict]


FIGURE_HEADERS = ["metric", "threshold", "candidate", "production", "difference", "95% CI", ""]


def render_text(alert: Alert, folded: int = 0, folded_since: str | None = None) -> str:
    out = [subject(alert), ""]
    if alert.summary:
        out += [alert.summary, ""]
    for k, v in alert.facts:
        out.append(f"{k}: {v}")
    if alert.facts:
        out.append("")
    if alert.figures:
        rows = [alert.figure_headers or FIGURE_HEADERS] + [_figure_cells(f) for f in alert.figures]
        widths = [max(len(r[i]) for r in rows) for i in range(len(FIGURE_HEADERS))]
        for r in rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        out.append("")
    for item in alert.items:
        out.append(f"* {item.get('title', '')}")
        if item.get("detail"):
            out.append(f"  {item['detail']}")
        if item.get("link"):
            out.append(f"  {item['link']}")
        for line in item.get("log") or []:
            out.append(f"  | {line}")
        out.append("")
    if folded:
        out += [f"{folded} identical alert(s) since {folded_since} were folded into this one.", ""]
    for label, url in alert.links:
        out.append(f"{label}: {url}")
    return "\n".join(out).rstrip() + "\n"


def _link(url: str, label: str) -> str:
    if not re.match(r"^https?://", url or ""):
        return html.escape(label)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'


def render_html(alert: Alert, folded: int = 0, folded_since: str | None = None) -> str:
    """Everything that came from outside (text, names, errors, logs) is escaped."""
    e = html.escape
    colour = SEVERITY_COLOUR.get(alert.severity, "#344054")
    parts = [
        "<!doctype html><html><body style=\"font-family:Arial,Helvetica,sans-serif;color:#101828\">",
        f'<p style="margin:0;color:{colour};font-weight:bold">{e(alert.status)} · {e(alert.severity)}</p>',
        f"<h2 style=\"margin:4px 0 12px 0\">{e(alert.where)} — {e(alert.headline)}</h2>",
    ]
    if alert.summary:
        parts.append(f"<p>{e(alert.summary)}</p>")
    if alert.facts:
        parts.append('<table style="border-collapse:collapse;margin-bottom:12px">')
        for k, v in alert.facts:
            parts.append(f'<tr><td style="padding:2px 12px 2px 0;color:#475467">{e(k)}</td><td>{e(str(v))}</td></tr>')
        parts.append("</table>")
    if alert.figures:
        cell = 'style="border:1px solid #d0d5dd;padding:4px 8px;text-align:right"'
        parts.append('<table style="border-collapse:collapse;margin-bottom:12px"><tr>')
        parts += [f"<th {cell}>{e(h)}</th>" for h in alert.figure_headers or FIGURE_HEADERS] + ["</tr>"]
        for f in alert.figures:
            bad = f.passed is False
            row = "".join(f"<td {cell}>{e(c)}</td>" for c in _figure_cells(f))
            parts.append(f'<tr style="{"background:#fef3f2" if bad else ""}">{row}</tr>')
        parts.append("</table>")
    if alert.items:
        parts.append("<ul>")
        for item in alert.items:
            li = [f"<li><b>{e(str(item.get('title', '')))}</b>"]
            if item.get("detail"):
                li.append(f"<div>{e(str(item['detail']))}</div>")
            if item.get("link"):
                li.append(f"<div>{_link(item['link'], 'open the task log')}</div>")
            if item.get("log"):
                li.append('<pre style="background:#f2f4f7;padding:8px;font-size:12px;white-space:pre-wrap">'
                          + e("\n".join(item["log"])) + "</pre>")
            parts.append("".join(li) + "</li>")
        parts.append("</ul>")
    if folded:
        parts.append(f"<p><i>{folded} identical alert(s) since {e(str(folded_since))} were folded into this one.</i></p>")
    if alert.links:
        parts.append("<p>" + " · ".join(_link(url, label) for label, url in alert.links) + "</p>")
    parts.append("</body></html>")
    return "".join(parts)


def build_message(alert: Alert, sender: str, recipients: Iterable[str], folded: int = 0,
                  folded_since: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(alert)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Message-ID"] = make_msgid(domain="ragops")
    msg["X-Ragops-Event"] = alert.event
    msg["X-Ragops-Fingerprint"] = alert.fingerprint()
    msg.set_content(render_text(alert, folded, folded_since))
    msg.add_alternative(render_html(alert, folded, folded_since), subtype="html")
    return msg


# ----------------------------------------------------------------------------------------------
# outbox


def record(settings: Settings, alert: Alert, recipients: Iterable[str], *,
           now: dt.datetime | None = None) -> tuple[int, str]:
    """Write the alert to the outbox. Returns (id, status): ``pending`` or ``folded`` for a new
    row; an alert with a ``key`` that is already in the outbox (a retried task sending the same
    alert again) returns that row and its status instead of recording it twice."""
    now = now or state.utcnow()
    fp = alert.fingerprint()
    window = now - dt.timedelta(minutes=settings.alerts.dedupe_window_minutes)
    with state.session_scope(settings.state_db_url) as s:
        if alert.key:
            same = s.execute(select(state.AlertRecord).where(
                state.AlertRecord.fingerprint == fp, state.AlertRecord.created_at >= now - KEY_MEMORY)
                .order_by(state.AlertRecord.id.desc())).scalars()
            for old in same:
                if (old.payload or {}).get("key") == alert.key:
                    log.info("alert already in the outbox as #%d (%s), not recorded again: %s", old.id, old.status,
                             old.subject)
                    return old.id, old.status
        recent = s.execute(
            select(state.AlertRecord.id).where(state.AlertRecord.fingerprint == fp,
                                               state.AlertRecord.status.in_(("sent", "pending", "sending")),
                                               state.AlertRecord.created_at >= window).limit(1)
        ).scalar_one_or_none()
        status = "folded" if recent is not None and alert.dedupe else "pending"
        row = state.AlertRecord(fingerprint=fp, event=alert.event, subject=subject(alert),
                                recipients=list(recipients), payload=alert.to_json(), status=status,
                                attempts=0, created_at=now)
        s.add(row)
        s.flush()
        if status == "folded":
            log.warning("alert folded (an identical one was sent in the last %d min): %s",
                        settings.alerts.dedupe_window_minutes, row.subject)
        return row.id, status


def _claim(s: Any, ids: Iterable[int], now: dt.datetime) -> list[int]:
    """Mark outbox rows as being sent by this process (status ``sending``, ``sent_at`` = claim
    time) in one conditional UPDATE each, so two processes flushing at once never both send a row.
    A claim older than ``CLAIM_LEASE`` (a process killed while sending) can be taken over."""
    rec = state.AlertRecord
    claimed = []
    for i in ids:
        res = s.execute(update(rec).where(
            rec.id == i, or_(rec.status.in_(("pending", "failed")),
                             and_(rec.status == "sending", rec.sent_at < now - CLAIM_LEASE)))
            .values(status="sending", sent_at=now).execution_options(synchronize_session=False))
        if res.rowcount:
            claimed.append(i)
    return claimed


def deliver(settings: Settings, alert_id: int, send: Sender, *,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Send one outbox alert with retries and backoff; fold identical alerts into it. True if sent."""
    return _deliver(settings, alert_id, send, sleep) == "sent"


def _deliver(settings: Settings, alert_id: int, send: Sender, sleep: Callable[[float], None]) -> str:
    """Returns sent | failed | undeliverable | busy (another process is sending it) | done (it
    was already sent or folded)."""
    now = state.utcnow()
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.AlertRecord, alert_id)
        if row is None or row.status in ("sent", "folded", "undeliverable"):
            return "done"
        if not _claim(s, [alert_id], now):
            log.info("alert #%d is being sent by another process", alert_id)
            return "busy"
        alert = Alert.from_json(row.payload)
        late = bool(row.attempts)
        others = s.execute(select(state.AlertRecord).where(
            state.AlertRecord.fingerprint == row.fingerprint, state.AlertRecord.id != row.id,
            or_(and_(state.AlertRecord.status == "folded", state.AlertRecord.folded_into.is_(None)),
                state.AlertRecord.status.in_(("pending", "failed") if alert.dedupe else ())))
            .order_by(state.AlertRecord.created_at)).scalars().all()
        folded_ids = [r.id for r in others if r.status == "folded"]
        # identical alerts that were never delivered (the SMTP server was down) go out in this
        # e-mail, not as one more copy each: claimed here so that no other process sends them
        undelivered = _claim(s, [r.id for r in others if r.status != "folded"], now)
        included = [r for r in others if r.id in set(folded_ids) | set(undelivered)]
        since = included[0].created_at.isoformat(timespec="seconds") if included else None
        recipients = list(row.recipients)
    if not recipients:
        log.error("ALERT NOT SENT: no recipients configured for event %r (alerts.recipients): %s", alert.event,
                  subject(alert))
        _finish(settings, alert_id, "undeliverable", 0, "no recipients configured", [], undelivered)
        return "undeliverable"
    msg = build_message(alert, settings.alerts.from_email, recipients, len(included), since)
    attempts = max(1, settings.alerts.send_attempts)
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            send(msg)
        except Exception as exc:  # noqa: BLE001 - every delivery failure is retried, then recorded
            error = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                delay = settings.alerts.retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning("alert delivery attempt %d/%d failed (%s); retrying in %.1fs", attempt, attempts, error,
                            delay)
                sleep(delay)
            continue
        _finish(settings, alert_id, "sent", attempt, None, folded_ids, undelivered, late=late)
        log.info("alert sent to %s: %s", ", ".join(recipients), msg["Subject"])
        return "sent"
    _finish(settings, alert_id, "failed", attempts, error, [], undelivered)
    log.error("ALERT NOT DELIVERED after %d attempts (%s): %s. It stays in the outbox (status failed, #%d) and is "
              "re-sent with the next alert or by `ragops alerts flush`; check the SMTP server and the Airflow "
              "Connection %s.", attempts, error, msg["Subject"], alert_id, settings.alerts.smtp_conn_id)
    return "failed"


def _finish(settings: Settings, alert_id: int, status: str, attempts: int, error: str | None,
            folded_ids: list[int], undelivered: list[int], *, late: bool = False) -> None:
    """Record the outcome. ``undelivered``: identical rows claimed for this e-mail, folded into it
    when it was sent, back to ``failed`` when it was not."""
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.AlertRecord, alert_id)
        row.status, row.error = status, error
        row.attempts = (row.attempts or 0) + attempts
        row.sent_at = state.utcnow() if status == "sent" else None
        for uid in undelivered:
            other = s.get(state.AlertRecord, uid)
            other.status = "folded" if status == "sent" else "failed"
            other.sent_at = None
        if status == "sent":
            for fid in folded_ids + undelivered:
                s.get(state.AlertRecord, fid).folded_into = alert_id
        if status == "failed":
            state.audit(s, actor="ragops:alerts", action="alert_not_delivered", index_name=None, alert_id=alert_id,
                        subject=row.subject, recipients=row.recipients, attempts=row.attempts, error=error,
                        fix=f"check the SMTP server and the Airflow Connection {settings.alerts.smtp_conn_id}; "
                            "the alert is re-sent with the next alert or by `ragops alerts flush`")
        elif late and status == "sent":
            state.audit(s, actor="ragops:alerts", action="alert_delivered_late", index_name=None, alert_id=alert_id,
                        subject=row.subject, attempts=row.attempts, folded=folded_ids + undelivered)


def flush(settings: Settings, send: Sender, *, sleep: Callable[[float], None] = time.sleep,
          max_age_hours: int = 72) -> dict[str, int]:
    """Re-send every pending or failed alert of the last ``max_age_hours`` (oldest first), and
    any whose sender was killed while sending. Identical undelivered alerts go out as one e-mail."""
    now = state.utcnow()
    cutoff = now - dt.timedelta(hours=max_age_hours)
    rec = state.AlertRecord
    with state.session_scope(settings.state_db_url) as s:
        ids = list(s.execute(select(rec.id).where(
            or_(rec.status.in_(("pending", "failed")), and_(rec.status == "sending", rec.sent_at < now - CLAIM_LEASE)),
            rec.created_at >= cutoff).order_by(rec.id)).scalars())
    sent = 0
    for i in ids:
        outcome = _deliver(settings, i, send, sleep)
        if outcome == "failed":
            break  # the server is down: the rest stay queued instead of each waiting out its retries
        sent += outcome == "sent"
    with state.session_scope(settings.state_db_url) as s:
        left = s.execute(select(func.count()).select_from(rec).where(
            rec.id.in_(ids or [-1]), rec.status.in_(("pending", "failed")))).scalar() or 0
    return {"retried": len(ids), "sent": sent, "failed": left}


def send(settings: Settings, alert: Alert, sender: Sender, *, secrets: Iterable[str] = (),
         recipients: Iterable[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Record, then deliver (after older undelivered alerts). Never raises on delivery failure."""
    alert = redact_alert(alert, secrets)
    to = list(recipients if recipients is not None else settings.alerts.recipients_for(alert.event))
    alert_id, status = record(settings, alert, to)
    if status == "folded":
        return {"id": alert_id, "status": "folded"}
    try:
        if status in ("pending", "failed") and _deliver(settings, alert_id, sender, sleep) == "sent":
            flush(settings, sender, sleep=sleep)  # the server is back: older undelivered alerts follow
    except Exception:  # noqa: BLE001 - the alert is recorded; a broken outbox must not fail the caller
        log.exception("ALERT DELIVERY CRASHED for outbox id %s; it stays recorded", alert_id)
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.AlertRecord, alert_id)
        return {"id": alert_id, "status": row.status, "attempts": row.attempts, "error": row.error}


def outbox(settings: Settings, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.AlertRecord).order_by(state.AlertRecord.id.desc()).limit(limit)
        if status:
            q = q.where(state.AlertRecord.status == status)
        return [{"id": r.id, "status": r.status, "event": r.event, "subject": r.subject, "recipients": r.recipients,
                 "attempts": r.attempts, "error": r.error, "created_at": r.created_at.isoformat(),
                 "sent_at": r.sent_at.isoformat() if r.sent_at else None, "folded_into": r.folded_into}
                for r in s.execute(q).scalars()]
