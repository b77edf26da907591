"""Alert e-mails people act on: content, escaping, redaction, folding, and a delivery outbox.

Pure library code: the Airflow layer (``ragops.airflow.alerting``) turns a DAG run into an
:class:`Alert` and hands :func:`send` an SMTP sender built on the SMTP provider's hook.

Every alert is written to the state store's ``alerts`` table *before* it is sent. An identical
alert (same fingerprint) inside ``alerts.dedupe_window_minutes`` of a sent one is folded: not
sent, but counted in the next e-mail of that kind. Delivery is retried with exponential
backoff; an alert that still cannot be delivered is marked ``failed``, logged at ERROR, and
re-sent by the next delivery attempt of any alert (or ``ragops alerts flush``).
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

from sqlalchemy import select

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
    """Write the alert to the outbox. Returns (id, status): ``pending`` or ``folded``."""
    now = now or state.utcnow()
    fp = alert.fingerprint()
    window = now - dt.timedelta(minutes=settings.alerts.dedupe_window_minutes)
    with state.session_scope(settings.state_db_url) as s:
        recent = s.execute(
            select(state.AlertRecord.id).where(state.AlertRecord.fingerprint == fp,
                                               state.AlertRecord.status.in_(("sent", "pending")),
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


def deliver(settings: Settings, alert_id: int, send: Sender, *,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Send one outbox alert with retries and backoff; fold earlier identical alerts into it."""
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.AlertRecord, alert_id)
        if row is None or row.status in ("sent", "folded"):
            return row is not None and row.status == "sent"
        alert = Alert.from_json(row.payload)
        folded_rows = s.execute(select(state.AlertRecord).where(
            state.AlertRecord.fingerprint == row.fingerprint, state.AlertRecord.status == "folded",
            state.AlertRecord.folded_into.is_(None), state.AlertRecord.id != row.id)
            .order_by(state.AlertRecord.created_at)).scalars().all()
        folded_ids = [r.id for r in folded_rows]
        since = folded_rows[0].created_at.isoformat(timespec="seconds") if folded_rows else None
        recipients = list(row.recipients)
    if not recipients:
        log.error("ALERT NOT SENT: no recipients configured for event %r (alerts.recipients): %s", alert.event,
                  subject(alert))
        _finish(settings, alert_id, "undeliverable", 0, "no recipients configured", [])
        return False
    msg = build_message(alert, settings.alerts.from_email, recipients, len(folded_ids), since)
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
        _finish(settings, alert_id, "sent", attempt, None, folded_ids)
        log.info("alert sent to %s: %s", ", ".join(recipients), msg["Subject"])
        return True
    _finish(settings, alert_id, "failed", attempts, error, [])
    log.error("ALERT NOT DELIVERED after %d attempts (%s): %s. It stays in the outbox (status failed) and is "
              "re-sent with the next alert or by `ragops alerts flush`.", attempts, error, msg["Subject"])
    return False


def _finish(settings: Settings, alert_id: int, status: str, attempts: int, error: str | None,
            folded_ids: list[int]) -> None:
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.AlertRecord, alert_id)
        row.status, row.error = status, error
        row.attempts = (row.attempts or 0) + attempts
        if status == "sent":
            row.sent_at = state.utcnow()
            for fid in folded_ids:
                s.get(state.AlertRecord, fid).folded_into = alert_id


def flush(settings: Settings, send: Sender, *, sleep: Callable[[float], None] = time.sleep,
          max_age_hours: int = 72) -> dict[str, int]:
    """Re-send every pending or failed alert of the last ``max_age_hours`` (oldest first)."""
    cutoff = state.utcnow() - dt.timedelta(hours=max_age_hours)
    with state.session_scope(settings.state_db_url) as s:
        ids = list(s.execute(select(state.AlertRecord.id).where(
            state.AlertRecord.status.in_(("pending", "failed")), state.AlertRecord.created_at >= cutoff)
            .order_by(state.AlertRecord.id)).scalars())
    sent = 0
    for i in ids:
        if not deliver(settings, i, send, sleep=sleep):
            break  # the server is down: the rest stay queued instead of each waiting out its retries
        sent += 1
    return {"retried": len(ids), "sent": sent, "failed": len(ids) - sent}


def send(settings: Settings, alert: Alert, sender: Sender, *, secrets: Iterable[str] = (),
         recipients: Iterable[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Record, then deliver (after older undelivered alerts). Never raises on delivery failure."""
    alert = redact_alert(alert, secrets)
    to = list(recipients if recipients is not None else settings.alerts.recipients_for(alert.event))
    alert_id, status = record(settings, alert, to)
    if status == "folded":
        return {"id": alert_id, "status": "folded"}
    try:
        if deliver(settings, alert_id, sender, sleep=sleep):
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
