"""Alert e-mails from real DAG runs (dag.test) through the SMTP provider to a real SMTP server
on loopback (aiosmtpd); the tests read the captured MIME messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import alerts, state
from ragops.config import load_settings
from tests.conftest import SmtpServer, free_port, load_dag, parts, write
from tests.e2e.test_ingest_dag import run_dag

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BASE = "http://airflow.example:8080"


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("ingest_documents")


@pytest.fixture
def alert_env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text(f"""
ingest:
  batch_documents: 1
alerts:
  from_email: ragops@test.local
  base_url: {BASE}
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    quality: [data-owners@test.local]
indexes:
  docs: {{}}
""")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    return s


def use_smtp(monkeypatch: pytest.MonkeyPatch, server: SmtpServer) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", server.connection_json())


def test_failed_run_sends_one_actionable_email(dag, alert_env, smtp_server: SmtpServer, monkeypatch,
                                               tmp_path: Path) -> None:
    use_smtp(monkeypatch, smtp_server)
    dr = run_dag(dag, source=str(tmp_path / "no-such-folder"))
    assert dr.state == "failed"
    assert len(smtp_server.inbox.messages) == 1
    sender, rcpts, msg = smtp_server.inbox.messages[0]
    assert sender == "ragops@test.local" and rcpts == ["oncall@test.local"]
    assert msg["Subject"].startswith("[ragops][FAILED] ingest_documents.plan — SourceError: source ")
    text, html = parts(msg)
    assert "does not exist" in text and "does not exist" in html
    assert f"{BASE}/dags/ingest_documents/runs/" in html and "/tasks/plan" in html
    assert "Traceback" in text or "SourceError" in text
    with state.session_scope(alert_env.state_db_url) as s:  # the run's own result is recorded too
        actions = set(s.execute(select(state.AuditEntry.action)).scalars())
    assert {"task_failed", "dag_failed"} <= actions


def test_ten_failed_mapped_tasks_send_one_email_without_secrets(dag, alert_env, smtp_server: SmtpServer,
                                                                 monkeypatch, corpus: Path) -> None:
    use_smtp(monkeypatch, smtp_server)
    secret = "s3cr3t-chroma-token-value"
    monkeypatch.setenv("AIRFLOW_CONN_CHROMA_DEFAULT", f"http://user:{secret}@127.0.0.1:1")
    for i in range(6):
        write(corpus, f"extra/doc{i}.md", f"# Extra {i}\n\nSome real text number {i} for the batch.")
    import ragops.indexing

    def broken(settings, run_id, batch_no, **kwargs):
        raise ragops.indexing.RagopsError(f"injected failure in batch {batch_no}, token={secret}, {secret}")

    monkeypatch.setattr(ragops.indexing, "process_batch", broken)
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "failed"
    assert len(smtp_server.inbox.messages) == 1, "one e-mail for the whole run"
    msg = smtp_server.messages[0]
    assert msg["Subject"].startswith("[ragops][FAILED] ingest_documents: 10 tasks failed — RagopsError: injected")
    text, html = parts(msg)
    for i in range(10):
        assert f"process_batch[{i}]" in text and f"/tasks/process_batch/mapped/{i}" in html
    raw = msg.as_string()
    assert secret not in raw and "token=***" in text


def test_repeated_failure_is_folded(dag, alert_env, smtp_server: SmtpServer, monkeypatch, tmp_path: Path) -> None:
    use_smtp(monkeypatch, smtp_server)
    for _ in range(2):
        assert run_dag(dag, source=str(tmp_path / "missing")).state == "failed"
    assert len(smtp_server.messages) == 1
    assert [r["status"] for r in alerts.outbox(alert_env)] == ["folded", "sent"]


def test_smtp_down_keeps_the_result_and_the_alert(dag, alert_env, monkeypatch, tmp_path: Path) -> None:
    server = SmtpServer(free_port())  # not started: nothing listens on the port
    use_smtp(monkeypatch, server)
    dr = run_dag(dag, source=str(tmp_path / "missing"))
    assert dr.state == "failed", "the run's outcome does not depend on the mail server"
    [row] = alerts.outbox(alert_env)
    assert row["status"] == "failed" and row["attempts"] == 2 and "refused" in row["error"].lower()
    server.start()
    try:
        from ragops.airflow.alerting import smtp_sender

        assert alerts.flush(alert_env, smtp_sender("smtp_default"))["sent"] == 1
        assert server.messages[0]["Subject"].startswith("[ragops][FAILED] ingest_documents.plan")
    finally:
        server.stop()


def test_quarantine_email_escapes_hostile_names(dag, alert_env, smtp_server: SmtpServer, monkeypatch,
                                                corpus: Path) -> None:
    use_smtp(monkeypatch, smtp_server)
    evil = "<img src=x onerror=alert(1)>.md"
    write(corpus, evil, "")
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success"
    [(_, rcpts, msg)] = smtp_server.inbox.messages
    assert rcpts == ["data-owners@test.local"]
    assert msg["Subject"] == "[ragops][QUARANTINED] ingest_documents.commit — 1 document(s) quarantined in index docs"
    text, html = parts(msg)
    assert evil in text, "the plain-text part shows the name as it is"
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.md" in html


def test_data_incident_goes_to_failure_and_quality_owners(dag, alert_env, smtp_server: SmtpServer, monkeypatch,
                                                          corpus: Path) -> None:
    use_smtp(monkeypatch, smtp_server)
    for i in range(4):
        write(corpus, f"bad{i}.txt", b"\x00\x01binary")
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "failed"
    [(_, rcpts, msg)] = smtp_server.inbox.messages
    assert msg["Subject"].startswith("[ragops][DATA INCIDENT] ingest_documents.commit — DataIncidentError")
    assert sorted(rcpts) == ["data-owners@test.local", "oncall@test.local"]
