"""The production topology of docker-compose.yaml, run natively on one machine (no Docker).

Airflow with PostgreSQL as metadata database and CeleryExecutor on Redis, one api-server,
scheduler, dag-processor and triggerer, N Celery workers, a `chroma run` server behind the same
nginx token proxy the compose file uses (deploy/chroma-proxy/default.conf.template), the ragops
state store in its own PostgreSQL database, and an SMTP catcher. Used by
tests/e2e/test_topology.py and bench/scaleout_scifact.py; `python -m tests.topology` starts it by
hand and prints where everything is (Ctrl-C stops it).

Each worker is told its own name through ``[core] hostname_callable`` (`worker_hostname` below),
as separate containers or hosts would have, so a task instance's ``hostname`` says which worker
ran it.

Faults for tests/e2e/test_faults_topology.py: :meth:`Topology.kill_worker` (SIGKILL a worker with
its task processes), :meth:`Topology.start_worker` (a replacement under the same name),
:meth:`Topology.stop_chroma` / :meth:`Topology.start_chroma` (the server behind the proxy, same
path and port), and waits on task instances through the REST API (:meth:`Topology.wait_ti`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_BASE = os.environ.get("RAGOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RAGOPS_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("RAGOPS_TEST_REDIS_DB", "13"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ADMIN_PASSWORD = "topology-admin"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test workers: the name given to this worker process."""
    return os.environ.get("RAGOPS_TOPOLOGY_WORKER") or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROXY_TEMPLATE = ROOT / "deploy" / "chroma-proxy" / "default.conf.template"


def render_proxy(token: str, upstream: str, listen: str) -> str:
    """The compose file's Chroma proxy site, rendered as the nginx image does: only the template's
    own variables are substituted, so nginx's $variables stay."""
    values = {"CHROMA_TOKEN": token, "CHROMA_UPSTREAM": upstream, "CHROMA_PROXY_PORT": listen}
    return subprocess.run([shutil.which("envsubst") or "envsubst", " ".join(f"${{{k}}}" for k in values)],
                          input=PROXY_TEMPLATE.read_text(), text=True, capture_output=True, check=True,
                          env={"PATH": os.environ.get("PATH", ""), **values}).stdout


def nginx_conf(prefix: Path, site: str) -> Path:
    """A self-contained nginx.conf under ``prefix`` (pid, logs, temp files there) serving ``site``."""
    (prefix / "conf.d").mkdir(parents=True, exist_ok=True)
    (prefix / "conf.d" / "chroma.conf").write_text(site)
    temp = "".join(f"{k}_temp_path {prefix}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(
        # as root, nginx's workers would run as nobody and could not buffer request bodies here
        f"{'user root root;' + chr(10) if os.geteuid() == 0 else ''}"
        f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        f"events {{ worker_connections 512; }}\nhttp {{\naccess_log {prefix}/access.log;\n{temp}"
        f"include {prefix}/conf.d/*.conf;\n}}\n")
    return conf


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (a killed test run
    leaves no Airflow, Chroma or nginx behind)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class TopologyError(RuntimeError):
    pass


def _wait(what: str, probe: Any, timeout: float, procs: dict[str, subprocess.Popen] | None = None,
          logs: Path | None = None, every: float = 1.0) -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a probe that fails is retried until the deadline
            last = exc
        for name, p in (procs or {}).items():
            if p.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:] if logs else ""
                raise TopologyError(f"{name} exited with {p.returncode} while waiting for {what}:\n{tail}")
        time.sleep(every)
    raise TopologyError(f"timed out after {timeout:.0f}s waiting for {what} (last probe: {last!r})")


class Topology:
    """Start with :meth:`start` (or as a context manager), stop with :meth:`stop`."""

    def __init__(self, workdir: Path, *, workers: int = 2, concurrency: int = 2, config_yaml: str = "",
                 smtp_port: int | None = None, prompts_dir: Path | None = None,
                 extra_env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None,
                 local_settings: str = "") -> None:
        self.workdir = workdir
        self.workers = workers
        self.concurrency = concurrency
        self.config_yaml = config_yaml
        self.smtp_port = smtp_port
        self.prompts_dir = prompts_dir
        self.extra_env = extra_env or {}
        self.worker_env = worker_env or {}
        self.local_settings = local_settings  # airflow_local_settings.py (e.g. a cluster policy), if any
        self.logs = workdir / "logs"
        self.data_dir = workdir / "data"
        self.airflow_home = workdir / "airflow"
        tag = uuid.uuid4().hex[:8]
        self.af_db = f"ragops_topo_af_{tag}"
        self.state_db = f"ragops_topo_state_{tag}"
        self.chroma_token = secrets.token_hex(16)
        self.secret = secrets.token_hex(32)
        self.api_port = free_port()
        self.chroma_port = free_port()
        self.proxy_port = free_port()
        self.log_port = free_port()  # the same in every process's configuration
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        self._token_at = 0.0

    # ---- URLs -------------------------------------------------------------------------------
    @property
    def pg_server(self) -> str:
        return PG_BASE.rsplit("/", 1)[0]

    @property
    def af_url(self) -> str:
        return f"{self.pg_server}/{self.af_db}"

    @property
    def state_url(self) -> str:
        return f"{self.pg_server}/{self.state_db}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def chroma_url(self) -> str:
        """The proxy: the only way in, token required."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def broker_url(self) -> str:
        return f"{REDIS_URL}/{REDIS_DB}"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "RAGOPS_", "PYTEST")) and k not in ("PYTHONPATH",)}
        conn_chroma = {"conn_type": "http", "host": "127.0.0.1", "port": self.proxy_port, "password": self.chroma_token}
        env = {
            **keep,
            "PATH": f"{BIN}:{keep.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.topology.worker_hostname",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.airflow_home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.af_url,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.af_url,  # db+postgresql+psycopg2: SQLAlchemy 2.1 defaults to psycopg 3
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secret,
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW_CONN_CHROMA_DEFAULT": json.dumps(conn_chroma),
            "RAGOPS_PROJECT_DIR": str(ROOT),
            "RAGOPS_DATA_DIR": str(self.data_dir),
            "RAGOPS_STATE_DB_URL": self.state_url,
            "RAGOPS_CHROMA_MODE": "server",
            "RAGOPS_CONFIG": str(self.workdir / "ragops.yaml"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
            "ANONYMIZED_TELEMETRY": "False",
            "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
        }
        if self.smtp_port:
            env["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps({
                "conn_type": "smtp", "host": "127.0.0.1", "port": self.smtp_port,
                "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 0}})
        if self.prompts_dir:
            env["RAGOPS_PROMPTS_DIR"] = str(self.prompts_dir)
        env.update(self.extra_env)
        return env

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen(argv, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                             start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.procs[name] = p
        return p

    def _run(self, what: str, argv: list[str], timeout: float = 900) -> None:
        out = subprocess.run(argv, env=self.env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        (self.logs / f"{what}.log").write_text(out.stdout + out.stderr)
        if out.returncode:
            raise TopologyError(f"{' '.join(argv)} failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")

    def _pg(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(PG_BASE.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def _flush_broker(self) -> None:
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()

    def start(self) -> Topology:
        for d in (self.logs, self.data_dir, self.airflow_home):
            d.mkdir(parents=True, exist_ok=True)
        (self.workdir / "ragops.yaml").write_text(self.config_yaml or "{}\n")
        (self.airflow_home / "passwords.json").write_text(json.dumps({"admin": ADMIN_PASSWORD, "viewer": "viewer"}))
        if self.local_settings:  # Airflow imports it from $AIRFLOW_HOME/config in every process
            (self.airflow_home / "config").mkdir(exist_ok=True)
            (self.airflow_home / "config" / "airflow_local_settings.py").write_text(self.local_settings)
        self._pg(f'CREATE DATABASE "{self.af_db}"')
        self._pg(f'CREATE DATABASE "{self.state_db}"')
        self._flush_broker()
        self._start_chroma()
        self._run("airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"])
        self._run("ragops-db-upgrade", [str(BIN / "ragops"), "db", "upgrade"])
        self._run("airflow-pools", [str(BIN / "airflow"), "pools", "set", "ragops_chroma_writer", "1", "ragops writer"])
        af = str(BIN / "airflow")
        self._spawn("api-server", [af, "api-server"])
        self._spawn("scheduler", [af, "scheduler"])
        self._spawn("dag-processor", [af, "dag-processor"])
        self._spawn("triggerer", [af, "triggerer"])
        for i in range(1, self.workers + 1):
            self._spawn_worker(f"worker{i}")
        _wait("the api-server's health endpoint", self._healthy, 300, self.procs, self.logs, every=2)
        for i in range(1, self.workers + 1):
            self._wait_worker_ready(f"worker{i}", 0)
        want = {p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_")}
        _wait("every DAG to be parsed", lambda: want <= {d["dag_id"] for d in self.api("/api/v2/dags?limit=100")[1]
                                                         .get("dags", [])}, 300, self.procs, self.logs, every=2)
        return self

    def _start_chroma(self) -> None:
        self._spawn_chroma()
        ngx = self.workdir / "nginx"
        site = render_proxy(self.chroma_token, f"127.0.0.1:{self.chroma_port}", f"127.0.0.1:{self.proxy_port}")
        nginx_conf(ngx, site)
        self._spawn("chroma-proxy", [NGINX, "-p", str(ngx), "-c", str(ngx / "nginx.conf")], env={**os.environ})
        self._wait_chroma_up()

    def _spawn_chroma(self) -> None:
        self._spawn("chroma", [str(BIN / "chroma"), "run", "--path", str(self.workdir / "chroma"), "--host",
                               "127.0.0.1", "--port", str(self.chroma_port)], env={**os.environ})

    def chroma_up(self) -> bool:
        """The Chroma server answers its heartbeat through the token proxy."""
        req = urllib.request.Request(f"{self.chroma_url}/api/v2/heartbeat", headers={"X-Chroma-Token": self.chroma_token})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def _wait_chroma_up(self, timeout: float = 120) -> None:
        _wait("the Chroma server behind its token proxy", self.chroma_up, timeout, self.procs, self.logs, every=0.5)

    def _spawn_worker(self, name: str) -> subprocess.Popen:
        env = {**self.env(), "RAGOPS_TOPOLOGY_WORKER": name, **self.worker_env}
        return self._spawn(name, [str(BIN / "airflow"), "celery", "worker", "--concurrency", str(self.concurrency),
                                  "--celery-hostname", f"{name}@%h", "--skip-serve-logs", "--queues", "default"], env)

    def _wait_worker_ready(self, name: str, offset: int, timeout: float = 300) -> None:
        """Celery logs `<name>@host ready.` once it consumes; only the log after ``offset`` counts (a
        restarted worker appends to its predecessor's log)."""
        log = self.logs / f"{name}.log"
        _wait(f"{name} to be ready", lambda: b" ready." in log.read_bytes()[offset:], timeout, self.procs, self.logs,
              every=1)

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
            h = json.loads(r.read())
        return all((h.get(k) or {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer")) \
            and (h.get("dag_processor") or {"status": "healthy"}).get("status") == "healthy"

    def stop(self) -> None:
        # workers first (warm shutdown), then the rest; each in its own session, so its children go too
        order = sorted(self.procs, key=lambda n: (not n.startswith("worker"), n))
        for name in order:
            p = self.procs[name]
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 60
        for name in order:
            p = self.procs[name]
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()
        for db in (self.af_db, self.state_db):
            try:
                self._pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception:  # noqa: BLE001 - best effort clean-up of a throw-away database
                pass
        try:
            self._flush_broker()
        except Exception:  # noqa: BLE001
            pass

    # ---- faults ---------------------------------------------------------------------------------
    def kill_worker(self, name: str) -> list[str]:
        """SIGKILL a Celery worker as a lost host or OOM-killed container dies: the Celery main
        process, its pool processes, their task supervisors and the task processes (each task runs
        in a process group of its own), frozen first so none can fork or report, then killed at
        once. No warm shutdown, nothing reaches the API server. Returns what was killed."""
        import psutil

        p = self.procs.pop(name)
        root = psutil.Process(p.pid)
        seen: dict[int, psutil.Process] = {}
        for _ in range(3):  # freeze the tree; a process forked meanwhile is found on the next pass
            for proc in [root, *root.children(recursive=True)]:
                if proc.pid not in seen:
                    seen[proc.pid] = proc
                    try:
                        proc.send_signal(signal.SIGSTOP)
                    except psutil.NoSuchProcess:
                        pass
        killed = []
        for proc in seen.values():
            try:
                killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        p.wait(timeout=30)
        psutil.wait_procs(list(seen.values()), timeout=30)
        return killed

    def start_worker(self, name: str, timeout: float = 300) -> None:
        """Start a Celery worker under ``name`` (a replacement for a killed one keeps its name, as a
        restarted container would) and wait until it consumes tasks."""
        log = self.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        self._spawn_worker(name)
        self._wait_worker_ready(name, offset, timeout)

    def stop_chroma(self) -> None:
        """SIGKILL the `chroma run` server (its token proxy stays up, as in the compose file when
        the chroma container dies): clients get 502 from the proxy until it is back."""
        p = self.procs.pop("chroma")
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)
        _wait("the Chroma server to be down", lambda: not self.chroma_up(), 30, every=0.2)

    def start_chroma(self, timeout: float = 120) -> None:
        """Start `chroma run` again on the same path and port, and wait until it answers."""
        self._spawn_chroma()
        self._wait_chroma_up(timeout)

    def state_counts(self, index: str) -> dict[str, Any]:
        """What the state store holds for an index: documents, chunks, the live collection."""
        from sqlalchemy import func, select

        from ragops import state

        with state.session_scope(self.state_url) as s:
            live = state.live_version(s, index)
            docs = s.scalar(select(func.count()).select_from(state.Document).where(state.Document.index_name == index))
            chunks = s.scalar(select(func.count()).select_from(state.Chunk).where(state.Chunk.index_name == index))
            return {"documents": docs, "chunks": chunks, "live": live.collection if live else None}

    # ---- REST API -----------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None or time.time() - self._token_at > 600:
            req = urllib.request.Request(f"{self.base}/auth/token", method="POST",
                                         headers={"Content-Type": "application/json"},
                                         data=json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode())
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.loads(r.read())["access_token"]
            self._token_at = time.time()
        return self._token

    def api(self, path: str, method: str = "GET", body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"{}")
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def unpause(self, *dag_ids: str) -> None:
        for dag_id in dag_ids:
            code, body = self.api(f"/api/v2/dags/{dag_id}", "PATCH", {"is_paused": False})
            if code != 200:
                raise TopologyError(f"unpausing {dag_id}: HTTP {code} {body}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        code, body = self.api(f"/api/v2/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf or {}})
        if code != 200:
            raise TopologyError(f"triggering {dag_id}: HTTP {code} {body}")
        return str(body["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        code, body = self.api(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after")
        if code != 200:
            raise TopologyError(f"listing runs of {dag_id}: HTTP {code} {body}")
        return list(body["dag_runs"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            code, run = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            return run if code == 200 and run["state"] in ("success", "failed") else None

        run = _wait(f"{dag_id} run {run_id}", done, timeout, self.procs, self.logs, every=3)
        if run["state"] != "success":
            raise TopologyError(f"{dag_id} run {run_id} ended {run['state']}:\n{self.failure_report(dag_id, run_id)}")
        return run

    def wait_new_run(self, dag_id: str, after: set[str], timeout: float = 900) -> dict[str, Any]:
        """The next run of a DAG not in ``after`` (one the scheduler created from an Asset event)."""
        run = _wait(f"a new {dag_id} run", lambda: next((r for r in self.runs(dag_id) if r["dag_run_id"] not in after),
                                                       None), timeout, self.procs, self.logs, every=3)
        return self.wait_run(dag_id, run["dag_run_id"], timeout)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        code, body = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        if code != 200:
            raise TopologyError(f"task instances of {dag_id}/{run_id}: HTTP {code} {body}")
        return list(body["task_instances"])

    def wait_ti(self, dag_id: str, run_id: str, task_id: str, states: str | tuple[str, ...], *,
                map_index: int | None = None, hostname: str | None = None, try_number: int | None = None,
                timeout: float = 600, every: float = 0.5) -> dict[str, Any]:
        """The first task instance of ``task_id`` (any map index unless one is given) in one of
        ``states``, on worker ``hostname`` and at ``try_number`` when given."""
        want = (states,) if isinstance(states, str) else states

        def probe() -> dict[str, Any] | None:
            for ti in self.task_instances(dag_id, run_id):
                if ti["task_id"] == task_id and ti["state"] in want \
                        and (map_index is None or ti.get("map_index", -1) == map_index) \
                        and (hostname is None or ti.get("hostname") == hostname) \
                        and (try_number is None or ti.get("try_number") == try_number):
                    return ti
            return None

        where = f" on {hostname}" if hostname else ""
        return _wait(f"{dag_id}.{task_id}[{'*' if map_index is None else map_index}] {'/'.join(want)}{where}", probe,
                     timeout, self.procs, self.logs, every=every)

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of a task instance (worker, state, start and end) from the REST API."""
        code, body = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries")
        if code != 200:
            raise TopologyError(f"tries of {dag_id}/{run_id}/{task_id}[{map_index}]: HTTP {code} {body}")
        return sorted(body["task_instances"], key=lambda t: t["try_number"])

    def event_logs(self, dag_id: str, event: str) -> list[dict[str, Any]]:
        """Audit-log entries of a DAG (e.g. the scheduler's ``heartbeat timeout``)."""
        q = urllib.parse.urlencode({"dag_id": dag_id, "event": event, "limit": 100})
        code, body = self.api(f"/api/v2/eventLogs?{q}")
        if code != 200:
            raise TopologyError(f"event logs of {dag_id}: HTTP {code} {body}")
        return list(body["event_logs"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's log as a person reads it in the UI: each line, and each exception as `Type: message`."""
        code, log = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                             f"{try_number}?map_index={map_index}")
        if code != 200:
            return f"(no log: HTTP {code})"
        lines = []
        for e in log.get("content") or []:
            if not isinstance(e, dict):
                lines.append(str(e))
                continue
            lines.append(str(e.get("event", e)))
            for exc in e.get("error_detail") or []:
                lines.append(f"{exc.get('exc_type')}: {exc.get('exc_value')}")
        return "\n".join(lines)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        lines = []
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] not in ("success", "skipped"):
                lines.append(f"{ti['task_id']}[{ti.get('map_index')}] {ti['state']} on {ti.get('hostname')}")
                code, log = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
                                     f"{max(1, ti.get('try_number') or 1)}?map_index={ti.get('map_index', -1)}")
                if code == 200:
                    text = "\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e)
                                     for e in (log.get("content") or []))
                    lines.append(text[-2500:])
        return "\n".join(lines) or "(no failed task instance)"


def main() -> None:
    """Start the topology by hand: `python -m tests.topology [--workers N]`; Ctrl-C stops it."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="ragops-topology-"))
    topo = Topology(work, workers=a.workers, concurrency=a.concurrency,
                    config_yaml="chroma: {mode: server}\ningest: {schedule: null}\n")
    # SIGINT may arrive ignored (a background job); SIGINT and SIGTERM both stop everything
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    with topo:
        print(f"Airflow UI   {topo.base}  (admin / {ADMIN_PASSWORD})\nChroma       {topo.chroma_url}  "
              f"token {topo.chroma_token}\nstate store  {topo.state_url}\nlogs         {topo.logs}\nCtrl-C stops it")
        try:
            while all(p.poll() is None for p in topo.procs.values()):
                time.sleep(2)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
