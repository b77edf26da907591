"""Faults injected into real runs (issue 10): the SMTP server goes away while an alert fires, the
state store's PostgreSQL restarts in the middle of an ingest, the disk under the embedded Chroma
store fills up. Real parts only: Airflow (dag.test()), Chroma, aiosmtpd on loopback, PostgreSQL.
Each test checks that nothing is lost or duplicated and that the end state equals a clean run."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ragops import alerts, state
from ragops.alerts import Alert
from ragops.config import load_settings
from ragops.indexing import self_check
from ragops.vectorstore import VectorStore
from tests.conftest import Inbox, SmtpServer, doc, free_port, load_dag, parts, smtplib_sender, write
from tests.e2e.test_ingest_dag import expected_chunks, index_ids, run_dag

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_documents: int = 1, migrate: bool = True):
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text(f"""
ingest:
  batch_documents: {batch_documents}
alerts:
  from_email: ragops@test.local
  base_url: http://airflow.example:8080
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
    if migrate:
        state.upgrade(s.state_db_url)
    return s


def audit_actions(settings, action: str) -> list[dict]:
    with state.session_scope(settings.state_db_url) as s:
        return [r.detail for r in s.execute(select(state.AuditEntry).where(state.AuditEntry.action == action)
                                            .order_by(state.AuditEntry.id)).scalars()]


# ----------------------------------------------------------------------------------------------
# 1. SMTP down while an alert fires


@pytest.mark.timeout(600)
def test_smtp_down_during_quarantine_alert(airflow_db, data_dir: Path, tmp_path: Path, corpus: Path, embedder,
                                           monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture,
                                           caplog: pytest.LogCaptureFixture) -> None:
    settings = configure(tmp_path, monkeypatch)
    server = SmtpServer(free_port())  # not started: nothing listens on the port
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", server.connection_json())
    want = expected_chunks(settings, corpus, embedder)
    write(corpus, "empty.md", "")  # quarantined: the commit sends a `quality` e-mail
    dag = load_dag("ingest_documents")

    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success", "the mail outage does not change the run's outcome"
    assert index_ids(settings) == (want, want), "the data was committed in full"
    [row] = alerts.outbox(settings)
    assert row["status"] == "failed" and row["attempts"] == 2 and "refused" in row["error"].lower()
    # the task's log: on stdout/stderr when Airflow's logging owns the process (the file alone), or
    # through the logging module when an earlier test has configured it (the whole suite)
    log = capfd.readouterr()
    assert "ALERT NOT DELIVERED" in log.out + log.err + caplog.text, "the task log says the e-mail did not go out"
    [entry] = audit_actions(settings, "alert_not_delivered")  # and so does the audit log
    assert entry["alert_id"] == row["id"] and "smtp_default" in entry["fix"]

    server.start()
    try:
        dr = run_dag(dag, source=str(corpus))  # the next run quarantines the same document again
        assert dr.state == "success"
        flushed = subprocess.run([str(BIN / "ragops"), "alerts", "flush"], capture_output=True, text=True,
                                 env=dict(os.environ), timeout=300)
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr[-3000:]
        assert len(server.inbox.messages) == 1, [m["Subject"] for m in server.messages]
        _, rcpts, msg = server.inbox.messages[0]
        assert rcpts == ["data-owners@test.local"]
        assert msg["Subject"] == "[ragops][QUARANTINED] ingest_documents.commit — 1 document(s) quarantined in index docs"
        text, _ = parts(msg)
        assert "empty.md" in text and "1 identical alert(s) since" in text
        new, old = alerts.outbox(settings)
        assert (new["status"], old["status"], old["folded_into"]) == ("sent", "folded", new["id"])
    finally:
        server.stop()


class SlowInbox(Inbox):
    """A mail server that takes its time per message, so that two senders overlap."""

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        await asyncio.sleep(0.5)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.timeout(300)
def test_smtp_back_two_flushes_at_once_send_each_alert_once(data_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Several undelivered alerts, then two processes flush the outbox at the same moment (two
    tasks finishing together): every alert arrives once."""
    settings = configure(tmp_path, monkeypatch)
    port = free_port()
    wheres = ("ingest_documents.plan", "rebuild_index.swap", "nightly_eval.gate")
    for where in wheres:
        res = alerts.send(settings, Alert("failure", "FAILED", where, f"RagopsError: broken {where}"),
                          smtplib_sender(port), sleep=lambda _: None)
        assert res["status"] == "failed"
    server = SmtpServer(port)
    server.inbox = SlowInbox()
    server.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: alerts.flush(settings, smtplib_sender(port)), range(2)))
    finally:
        server.stop()
    assert sorted(m["Subject"] for m in server.messages) == sorted(
        f"[ragops][FAILED] {w} — RagopsError: broken {w}" for w in wheres)
    assert sum(r["sent"] for r in results) == 3 and all(r["failed"] == 0 for r in results)
    assert {r["status"] for r in alerts.outbox(settings)} == {"sent"}
    late = audit_actions(settings, "alert_delivered_late")
    assert sorted(d["subject"] for d in late) == sorted(m["Subject"] for m in server.messages)


@pytest.mark.timeout(300)
def test_retried_task_sends_its_decision_once(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision alert (never folded) from a task whose first try could not mail it: the retry
    of the same task sends it again after the server is back, and one e-mail arrives."""
    settings = configure(tmp_path, monkeypatch)
    port = free_port()
    swap = Alert("index", "SWAPPED", "rebuild_index.swap", "docs v3 -> v4", severity="info", dedupe=False,
                 key="rebuild_index/manual__1/swap/-1")
    assert alerts.send(settings, swap, smtplib_sender(port), sleep=lambda _: None)["status"] == "failed"
    server = SmtpServer(port).start()
    try:
        again = Alert.from_json(swap.to_json())  # the retry builds the same alert again
        assert alerts.send(settings, again, smtplib_sender(port))["status"] == "sent"
        assert alerts.flush(settings, smtplib_sender(port)) == {"retried": 0, "sent": 0, "failed": 0}
    finally:
        server.stop()
    assert [m["Subject"] for m in server.messages] == ["[ragops][SWAPPED] rebuild_index.swap — docs v3 -> v4"]
    assert [r["status"] for r in alerts.outbox(settings)] == ["sent"]


# ----------------------------------------------------------------------------------------------
# 2. the state store's PostgreSQL restarts in the middle of an ingest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on its own port (never the shared server on 5432)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="ragops-pg-fault-"))
        self.data = self.base / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/ragops"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/ragops"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)

    def pg_ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.base / "server.log", "-w", "-o", opts, *args)

    def start(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.pg_ctl("start")
        import psycopg2

        conn = psycopg2.connect(self.dsn.rsplit("/", 1)[0] + "/postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE ragops")
        conn.close()
        return self

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pytest.importorskip("psycopg2")
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL 15 server binaries at {PG_BIN} (apt-get install postgresql-15)")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("initdb refuses to run as root and there is no `postgres` user to run it as (runuser)")
    cluster = PrivatePostgres()
    try:
        try:
            cluster.start()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot start a private PostgreSQL cluster: {exc.stderr or exc.stdout}")
        yield cluster
        from ragops.state import get_engine

        get_engine(cluster.url).dispose()
    finally:
        cluster.stop()


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class RestartDuringIngest(threading.Thread):
    """Restarts the cluster twice while the DAG runs: first while an ingest query is in flight
    (it waits on a table lock taken just for this), then again after some batches (usually between queries)."""

    def __init__(self, cluster: PrivatePostgres, runs_dir: Path, after_batches: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.runs_dir, self.after_batches = cluster, runs_dir, after_batches
        self.events: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg2

        try:
            watch = psycopg2.connect(self.cluster.dsn)
            watch.autocommit = True
            cur = watch.cursor()

            def count(sql: str) -> int:
                cur.execute(sql)
                return cur.fetchone()[0]

            self._wait(lambda: count("SELECT count(*) FROM sync_runs WHERE status = 'planned'") > 0,
                       "the plan to be staged")
            locker = psycopg2.connect(self.cluster.dsn)
            locker.cursor().execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")  # held: autocommit is off
            self._wait(lambda: count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") > 0,
                       "an ingest query to wait on the lock")
            self.cluster.restart()  # kills the waiting query, the lock holder and every pooled connection
            self.events.append("restart with a query in flight")
            self._wait(lambda: len(list(self.runs_dir.glob("*/batch-*.docs.json"))) >= self.after_batches,
                       f"{self.after_batches} batches to finish")
            self.cluster.restart()
            self.events.append("restart later in the run")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _wait(self, ready, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"gave up waiting for {what}")


@pytest.mark.timeout(900)
def test_postgres_restart_mid_ingest(airflow_db, data_dir: Path, tmp_path: Path, private_pg: PrivatePostgres,
                                     embedder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("RAGOPS_STATE_DB_URL", private_pg.url)
    settings = configure(tmp_path, monkeypatch, migrate=False)
    up = subprocess.run([str(BIN / "ragops"), "db", "upgrade"], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ))
    assert up.returncode == 0 and f"127.0.0.1:{private_pg.port}/ragops is at migration" in up.stdout, up.stderr
    source = tmp_path / "src"
    n_docs = 6
    for i in range(n_docs):
        write(source, f"guide/doc{i}.md", doc(f"Guide {i}", f"Topic {i}"))
    dag = load_dag("ingest_documents")
    for t in dag.tasks:  # a retry after 2 s instead of 30 s: the run is the same, the test is shorter
        t.retry_delay, t.retry_exponential_backoff = dt.timedelta(seconds=2), 0
    faults = RestartDuringIngest(private_pg, settings.runs_dir, after_batches=n_docs // 2)
    faults.start()
    dr = run_dag(dag, source=str(source))
    faults.join(timeout=60)
    assert faults.error is None, faults.error
    assert faults.events == ["restart with a query in flight", "restart later in the run"]
    log = capfd.readouterr()
    out = log.out + log.err
    (tmp_path / "run.log").write_text(out)  # the whole task log, for a look after a failure
    assert dr.state == "success", out[-5000:]
    # the query that was in flight failed its task with an error that says what happened ...
    assert f"lost the connection to the state store at postgresql+psycopg2://postgres@127.0.0.1:{private_pg.port}" \
           f"/ragops" in out, out[-5000:]
    retried = [ti for ti in dr.get_task_instances() if ti.try_number > 1]
    assert retried, "the task whose query was cut off was retried by Airflow"
    # ... and the end state is the one of a clean run
    want = expected_chunks(settings, source, embedder)
    assert index_ids(settings) == (want, want)
    with state.session_scope(settings.state_db_url) as s:
        n_rows = s.execute(select(func.count()).select_from(state.Chunk)).scalar()
        docs = set(s.execute(select(state.Document.doc_id)).scalars())
        run = s.get(state.SyncRun, dr.run_id)
    assert n_rows == len(want) and docs == {f"guide/doc{i}.md" for i in range(n_docs)}
    assert run.status == "committed" and run.stats["chunks"]["upserted"] == len(want)
    assert VectorStore(settings).count(index_collection(settings)) == len(want)
    assert self_check(settings, "docs")["ok"]
    # a server that is down for a moment is waited for (bounded), not failed on at once
    private_pg.pg_ctl("stop", "-m", "fast")
    threading.Timer(1.5, private_pg.pg_ctl, args=("start",)).start()
    t0 = time.monotonic()
    assert index_ids(settings) == (want, want)
    assert time.monotonic() - t0 >= 1.0


def index_collection(settings) -> str:
    with state.session_scope(settings.state_db_url) as s:
        return state.live_version(s, "docs").collection


# ----------------------------------------------------------------------------------------------
# 3. the disk under the embedded Chroma store fills up


@pytest.fixture
def small_disk(data_dir: Path) -> Iterator[Path]:
    """A 24 MB tmpfs mounted where the embedded Chroma store lives (<data dir>/chroma)."""
    mnt = data_dir / "chroma"
    mnt.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    yield mnt
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # closes the store's files
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(path: Path, leave: int) -> None:
    """Another program's data fills the disk until only ``leave`` bytes are free."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free - leave))


@pytest.mark.timeout(900)
def test_disk_full_under_embedded_chroma(airflow_db, data_dir: Path, tmp_path: Path, small_disk: Path, corpus: Path,
                                         embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragops.retrieval import search
    from ragops.vectorstore import MIB

    settings = configure(tmp_path, monkeypatch, batch_documents=12)
    assert settings.chroma_path == small_disk
    dag = load_dag("ingest_documents")
    assert run_dag(dag, source=str(corpus)).state == "success"
    live = expected_chunks(settings, corpus, embedder)
    assert index_ids(settings) == (live, live)

    for i in range(48):  # 4 batches of 12 documents, 192 chunks: about 2.5 MB in Chroma
        write(corpus, f"big/doc{i:02d}.md", doc(f"Big {i}", f"Bulk topic {i}", sections=4, paras=4))
    ballast = small_disk / "other-program.bin"
    fill(ballast, leave=int(1.8 * MIB))  # room for one batch (plus Chroma's reserve), not for four
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "failed"
    commit = next(ti for ti in dr.get_task_instances() if ti.task_id == "commit")
    assert commit.try_number == 1, "a full disk needs a person: the task is not retried"
    with state.session_scope(settings.state_db_url) as s:
        failure = s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "task_failed")
                            .order_by(state.AuditEntry.id.desc())).scalars().first().detail
    assert failure["task_id"] == "commit" and failure["error_type"] == "VectorStoreFullError"
    error = failure["error"]
    (tmp_path / "error.txt").write_text(error)
    assert error.startswith(f"no space left on device for the embedded Chroma store at {small_disk}: writing ")
    assert "were removed again; the live index is unchanged" in error
    assert "Fix: free space on that disk (or move the data directory, RAGOPS_DATA_DIR" in error

    # the live index is intact: what was indexed before is in both stores and answers queries
    assert index_ids(settings) == (live, live)
    assert self_check(settings, "docs")["ok"]
    hits = search(settings, "Beta retries", k=3, index="docs", embedder=embedder, mode="dense")
    assert hits and hits[0].doc_id == "beta.md"
    with state.session_scope(settings.state_db_url) as s:
        assert not s.execute(select(state.Document.doc_id).where(state.Document.doc_id.like("big/%"))).first()

    ballast.unlink()  # space is freed: the next run completes
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success"
    want = expected_chunks(settings, corpus, embedder)
    assert index_ids(settings) == (want, want) and len(want) > len(live) + 50
    assert self_check(settings, "docs")["ok"]
    assert search(settings, "Bulk topic 7", k=1, index="docs", embedder=embedder, mode="dense")[0].doc_id \
        == "big/doc07.md"
