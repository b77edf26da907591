"""Shared fixtures. Airflow's environment is set here, before anything imports Airflow, so the
tests use a throw-away AIRFLOW_HOME with this project's dags/ and plugins/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_server import llm_server  # noqa: F401
from tests.local_llm import local_llm  # noqa: F401
from tests.topology import free_port

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ragops-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "RAGOPS_PROJECT_DIR": str(ROOT),
    "RAGOPS_DATA_DIR": str(_AIRFLOW_HOME / "ragops-default-data"),
    "RAGOPS_MODEL_CACHE": str(_AIRFLOW_HOME / "models"),  # the model is exported once per session, not per test
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "ANONYMIZED_TELEMETRY": "False",
})
for var in ("RAGOPS_CONFIG", "RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_MODE", "RAGOPS_CHROMA_URL", "RAGOPS_CHROMA_TOKEN"):
    os.environ.pop(var, None)
BIN = Path(sys.executable).parent


def _memoize_the_exported_model() -> None:
    """The real model's vectors, computed once per session for each batch of texts it is given.

    Dozens of tests ingest the same demo corpus into a fresh store, and embedding its 899 chunks
    took most of each one's set-up (37 s in CI). ``ExportedModel.encode`` (the onnx/openvino
    backends' forward pass, the default) is memoized in this process by (export folder, texts,
    batch size, normalisation): a repeated call returns a copy of the array the real model
    returned for the same call, bit for bit. Everything above it runs as before (``Embedder.encode``
    and its slicing, the counts of texts embedded that tests read, reuse of stored vectors); other
    processes (the scheduler's tasks, CLI runs in a subprocess) and the torch backend embed as usual."""
    from collections import OrderedDict

    from ragops.export import ExportedModel

    memo: OrderedDict[tuple, object] = OrderedDict()
    size = [0]
    real = ExportedModel.encode

    def encode(self, texts, batch_size=32, normalize_embeddings=False, **kw):
        key = (str(self.folder), tuple(texts), int(batch_size), bool(normalize_embeddings))
        got = memo.get(key)
        if got is None:
            got = memo[key] = real(self, texts, batch_size, normalize_embeddings, **kw)
            size[0] += len(got)
            while size[0] > 100_000:  # vectors kept: at most about 150 MB
                size[0] -= len(memo.popitem(last=False)[1])
        else:
            memo.move_to_end(key)
        return got.copy()

    ExportedModel.encode = encode


_memoize_the_exported_model()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(d))
    return d


@pytest.fixture
def settings(data_dir: Path):
    from ragops import state
    from ragops.config import load_settings

    s = load_settings()
    state.upgrade(s.state_db_url)
    return s


@pytest.fixture(scope="session")
def embedder():
    from ragops.config import EmbeddingSettings
    from ragops.embedding import Embedder

    return Embedder(EmbeddingSettings())


def write(root: Path, rel: str, content: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


PARA = ("Retrieval augmented generation pipelines need fresh indexes. {topic} is described here in enough "
        "detail that the chunker has real sentences to work with, and the embedding model sees varied text. ")


def doc(title: str, topic: str, sections: int = 2, paras: int = 2) -> str:
    out = [f"# {title}", ""]
    for s in range(sections):
        out += [f"## {topic} part {s + 1}", ""]
        out += [PARA.format(topic=f"{topic} ({s}.{p})") for p in range(paras)] + [""]
    return "\n".join(out)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root, "alpha.md", doc("Alpha guide", "Alpha scheduling"))
    write(root, "beta.md", doc("Beta guide", "Beta retries"))
    write(root, "sub/gamma.txt", "Gamma notes\n\n" + PARA.format(topic="Gamma pools") * 3)
    write(root, "sub/delta.html", "<html><head><title>Delta page</title><script>alert('x')</script>"
          "<style>p{color:red}</style></head><body><h1>Delta page</h1><p>" + PARA.format(topic="Delta assets") * 2
          + "</p><h2>Details</h2><ul><li>first point about delta</li><li>second point</li></ul></body></html>")
    return root


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on loopback."""
    exe = BIN / "chroma"
    if not exe.exists():
        pytest.skip("the chroma CLI is not installed in this environment")
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = open(path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited: {(path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("chroma run did not answer within 60s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server (skipped when none is reachable)."""
    psycopg2 = pytest.importorskip("psycopg2")
    base = os.environ.get("RAGOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    dsn = base.replace("postgresql+psycopg2://", "postgresql://")
    try:
        conn = psycopg2.connect(dsn, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {dsn}: {exc}")
    conn.autocommit = True
    name = f"ragops_test_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from ragops.state import get_engine

    get_engine(url).dispose()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def load_dag(dag_id: str):
    """The DAG of ``dags/<dag_id>.py`` as Airflow's DagBag parses it (no import errors allowed)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata DB migrated once per session (SQLite in the throw-away AIRFLOW_HOME)."""
    airflow = str(BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, timeout=600)
    subprocess.run([airflow, "pools", "set", "ragops_chroma_writer", "1", "ragops writer"], check=True,
                   capture_output=True, timeout=120)
    return _AIRFLOW_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


class Inbox:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], object]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        import email
        from email import policy

        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              email.message_from_bytes(envelope.original_content or envelope.content,
                                                       policy=policy.default)))
        return "250 OK"


class SmtpServer:
    """A real SMTP server on loopback that can be stopped and started again on the same port.
    With ``credentials`` (login, password) it requires AUTH LOGIN or PLAIN before MAIL (without
    TLS, loopback only) and counts the logins it refused in ``auth_failures``."""

    def __init__(self, port: int | None = None, credentials: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self.credentials = credentials
        self.logins: list[str] = []
        self.auth_failures = 0
        self._controller = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and self.credentials is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials)
        if ok:
            self.logins.append(f"{mechanism}:{auth_data.login.decode()}")
        else:
            self.auth_failures += 1
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        auth = {}
        if self.credentials:
            auth = {"auth_required": True, "auth_require_tls": False, "authenticator": self._authenticate}
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **auth)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self):
        return [m for _, _, m in self.inbox.messages]

    def connection(self) -> dict:
        """The Airflow Connection to this server (with its login and password when it requires them)."""
        conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 0}}
        if self.credentials:
            conn.update(login=self.credentials[0], password=self.credentials[1])
        return conn

    def connection_json(self) -> str:
        import json

        return json.dumps(self.connection())


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def smtplib_sender(port: int):
    import smtplib

    def send(msg) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.send_message(msg)

    return send


def parts(msg) -> tuple[str, str]:
    """(plain text, html) of a multipart/alternative message."""
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return text, html


def start_ui(env: dict[str, str], timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`make ui` as a person runs it: scripts/ui.sh in its own session with SIGINT at its default
    (as from a terminal, even when the test runner itself ignores SIGINT); returns the process
    and the admin password it prints. Stop it with os.killpg(proc.pid, signal.SIGINT)."""
    import signal

    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "ui.sh")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail("ui.sh exited early:\n" + "".join(lines))
        lines.append(line)
        if "password:" in line and "Airflow UI:" in line:
            return proc, line.rsplit("password:", 1)[1].strip()
    os.killpg(proc.pid, signal.SIGINT)
    pytest.fail("no password printed:\n" + "".join(lines))


class SecretScan:
    """Looks for secrets in what a run left behind: files, HTTP answers, e-mails, database rows.
    Each secret is searched as its bytes and as base64 (at each of the three alignments, so also
    inside a longer base64 text such as an e-mail body or a Basic/PLAIN credential); ``found``
    lists where each one appeared. The secrets must be long and random (a hit is never chance)."""

    def __init__(self, secrets: dict[str, str]) -> None:
        import base64

        short = [name for name, value in secrets.items() if len(value) < 12]
        assert not short, f"secrets too short to scan for without false hits: {short}"
        self.secrets = secrets
        self.needles: list[tuple[str, bytes]] = []
        for name, value in secrets.items():
            raw = value.encode()
            self.needles.append((name, raw))
            for k in range(3):  # the base64 characters that depend on the secret alone
                enc = base64.b64encode(b"\0" * k + raw)
                start, stop = (8 * k + 5) // 6, 8 * (k + len(raw)) // 6  # whole 6-bit groups of the secret
                self.needles.append((f"{name} (base64)", enc[start:stop]))
        self.found: list[str] = []
        self.places: dict[str, int] = {}  # kind of place -> how many were scanned
        self.bytes = 0

    def text(self, where: str, data: str | bytes, kind: str = "other") -> None:
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        self.bytes += len(blob)
        self.places[kind] = self.places.get(kind, 0) + 1
        for name, needle in self.needles:
            if needle in blob:
                self.found.append(f"{name} in {where}")

    def tree(self, root: Path, kind: str, skip: tuple[str, ...] = ()) -> None:
        """Every regular file under ``root`` except those whose path relative to root matches a
        glob in ``skip`` (the configuration that must hold a secret)."""
        import fnmatch

        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and not any(fnmatch.fnmatch(rel, g) for g in skip):
                self.text(str(path), path.read_bytes(), kind)

    def email(self, where: str, msg) -> None:
        """The message as sent and every part decoded (a base64 or quoted-printable body hides
        its text from a scan of the raw bytes)."""
        self.text(where, msg.as_bytes(), "e-mail")
        for part in msg.walk():
            payload = part.get_payload(decode=True)
            if payload:
                self.text(f"{where} part {part.get_content_type()}", payload, "e-mail part")

    def summary(self) -> str:
        return (f"{sum(self.places.values())} places ({', '.join(f'{k} {v}' for k, v in sorted(self.places.items()))}),"
                f" {self.bytes} bytes, secrets {sorted(self.secrets)}")
