"""Alert content, escaping, redaction, folding and delivery against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from ragops import alerts, state
from ragops.alerts import Alert, Figure
from ragops.config import load_settings
from tests.conftest import SmtpServer, free_port, parts, smtplib_sender

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def gate_alert(title: str = "prompt answer v4 vs v3") -> Alert:
    return Alert(
        event="gate", status="GATE FAILED", where="promote_prompt.gate", headline=title, severity="warning",
        summary="The candidate is significantly worse than production on faithfulness.",
        figures=[Figure("hit_rate@5", 0.78, ">= 0.80", 0.83, -0.05, "[-0.081, -0.019]", False),
                 Figure("faithfulness", 0.91, ">= 0.85", 0.90, 0.01, "[-0.012, 0.033]", True)],
        facts=[("dataset", "golden-v1 (48 questions)")],
        items=[{"title": f"q-17 {EVIL}", "detail": "answer dropped the citation", "log": [EVIL]}],
        links=[("Open the run", "http://airflow.local:8080/dags/promote_prompt/runs/r1"),
               ("bad link", "javascript:alert(1)")],
    )


@pytest.fixture
def alert_settings(tmp_path: Path, data_dir: Path):
    cfg = tmp_path / "alerts.yaml"
    cfg.write_text("alerts:\n  from_email: ragops@test.local\n  send_attempts: 3\n  retry_backoff_seconds: 0.5\n"
                   "  recipients:\n    default: [oncall@test.local]\n    gate: [prompt-owners@test.local]\n"
                   "indexes:\n  docs: {}\n")
    s = load_settings(cfg)
    state.upgrade(s.state_db_url)
    return s


def test_subject_parts_table_and_escaping() -> None:
    a = gate_alert()
    assert alerts.subject(a) == "[ragops][GATE FAILED] promote_prompt.gate — prompt answer v4 vs v3"
    msg = alerts.build_message(a, "ragops@test.local", ["a@test.local"])
    text, html = parts(msg)
    assert "hit_rate@5" in text and "[-0.081, -0.019]" in text and "FAIL" in text
    assert "<td" in html and "-0.05" in html and "[-0.081, -0.019]" in html
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and 'href="http://airflow.local:8080/dags/promote_prompt/runs/r1"' in html
    assert msg["X-Ragops-Event"] == "gate"


def test_redaction_of_secrets() -> None:
    text = ("connect postgresql://ragops:hunter22@db:5432/x failed; password=hunter22 token: abcdef123456 "
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc and api_key='sk-live-999999'")
    red = alerts.redact(text, ["sk-live-999999"])
    for secret in ("hunter22", "abcdef123456", "eyJhbGciOiJIUzI1NiJ9", "sk-live-999999"):
        assert secret not in red
    assert "postgresql://ragops:***@db" in red


def test_fingerprint_ignores_numbers_but_not_kind() -> None:
    a = Alert("failure", "FAILED", "ingest_documents.process_batch[3]", "RagopsError: batch 3 of run abc123ef failed")
    b = Alert("failure", "FAILED", "ingest_documents.process_batch[7]", "RagopsError: batch 9 of run 77aa88bbcc failed")
    c = Alert("failure", "FAILED", "ingest_documents.commit", "SyncMismatchError: self-check failed")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_send_routes_by_event_and_folds_repeats(alert_settings, smtp_server: SmtpServer) -> None:
    send = smtplib_sender(smtp_server.port)
    r1 = alerts.send(alert_settings, gate_alert(), send)
    r2 = alerts.send(alert_settings, gate_alert(), send)
    assert (r1["status"], r2["status"]) == ("sent", "folded")
    assert len(smtp_server.inbox.messages) == 1
    sender, rcpts, msg = smtp_server.inbox.messages[0]
    assert sender == "ragops@test.local" and rcpts == ["prompt-owners@test.local"]
    # the window passes: the next identical alert is sent and reports the folded one
    with state.session_scope(alert_settings.state_db_url) as s:
        for row in s.query(state.AlertRecord).all():
            row.created_at = row.created_at - dt.timedelta(hours=2)
    r3 = alerts.send(alert_settings, gate_alert(), send)
    assert r3["status"] == "sent"
    text, html = parts(smtp_server.messages[-1])
    assert "1 identical alert(s)" in text and "folded" in html
    other = Alert("failure", "FAILED", "ingest_documents.plan", "SourceError: gone")
    alerts.send(alert_settings, other, send)
    assert smtp_server.inbox.messages[-1][1] == ["oncall@test.local"]


def test_smtp_down_retries_records_and_resends_later(alert_settings, caplog) -> None:
    port = free_port()
    waits: list[float] = []
    caplog.set_level(logging.WARNING)
    res = alerts.send(alert_settings, gate_alert(), smtplib_sender(port), sleep=waits.append)
    assert res["status"] == "failed" and res["attempts"] == 3 and "ConnectionRefusedError" in res["error"]
    assert waits == [0.5, 1.0], "exponential backoff between attempts"
    assert "ALERT NOT DELIVERED" in caplog.text
    assert alerts.outbox(alert_settings)[0]["status"] == "failed"
    server = SmtpServer(port).start()
    try:
        other = Alert("index", "SWAPPED", "rebuild_index.swap", "docs v3 -> v4")
        assert alerts.send(alert_settings, other, smtplib_sender(port))["status"] == "sent"
        subjects = sorted(m["Subject"] for m in server.messages)
        assert subjects == ["[ragops][GATE FAILED] promote_prompt.gate — prompt answer v4 vs v3",
                            "[ragops][SWAPPED] rebuild_index.swap — docs v3 -> v4"], "the failed alert was re-sent"
    finally:
        server.stop()
    assert {r["status"] for r in alerts.outbox(alert_settings)} == {"sent"}


def test_no_recipients_is_recorded_as_undeliverable(alert_settings, smtp_server: SmtpServer, caplog) -> None:
    res = alerts.send(alert_settings, gate_alert(), smtplib_sender(smtp_server.port), recipients=[])
    assert res["status"] == "undeliverable" and smtp_server.messages == []
    assert "no recipients" in caplog.text


def test_bad_alert_config_is_rejected(tmp_path: Path) -> None:
    from ragops.errors import ConfigError

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("alerts:\n  recipients:\n    gates: [a@b.c]\n")
    with pytest.raises(ConfigError, match="alerts.recipients.gates: unknown event type"):
        load_settings(cfg)
    cfg.write_text("alerts:\n  recipients:\n    gate: [not-an-address]\n")
    with pytest.raises(ConfigError, match="list of e-mail addresses"):
        load_settings(cfg)


def test_cli_lists_and_flushes_the_outbox(alert_settings, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    port = free_port()
    alerts.send(alert_settings, gate_alert(), smtplib_sender(port), sleep=lambda _: None)  # server down
    ragops = str(Path(sys.executable).parent / "ragops")
    env = dict(os.environ, RAGOPS_CONFIG=str(alert_settings.source_file), RAGOPS_DATA_DIR=str(alert_settings.data_dir))
    listed = subprocess.run([ragops, "alerts", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0 and "failed" in listed.stdout and "GATE FAILED" in listed.stdout
    server = SmtpServer(port).start()
    try:
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = server.connection_json()
        flushed = subprocess.run([ragops, "alerts", "flush"], capture_output=True, text=True, env=env, timeout=300)
        assert flushed.returncode == 0, flushed.stderr[-2000:]
        assert "re-sent 1 of 1" in flushed.stdout
        assert [m["Subject"] for m in server.messages] == [alerts.subject(gate_alert())]
    finally:
        server.stop()
