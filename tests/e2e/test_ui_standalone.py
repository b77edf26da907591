"""`make ui` as a person uses it: Airflow standalone on this project, the admin password
printed, the API answering with it, our DAG listed, and Ctrl-C leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, start_ui

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def processes_with(marker: str) -> list[int]:
    out = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                out.append(int(env.parent.name))
        except OSError:
            continue
    return out


def test_make_ui_starts_logs_in_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "airflow-home"
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(home), RAGOPS_DATA_DIR=str(tmp_path / "data"),
               RAGOPS_UI_PORT=str(port))
    # as from a terminal: SIGINT at its default even when the test runner itself was started as a
    # background job (which ignores SIGINT, and a shell cannot trap a signal ignored on entry)
    proc, password = start_ui(env)
    try:
        assert password
        req = urllib.request.Request(f"http://127.0.0.1:{port}/auth/token", method="POST",
                                     data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        token = json.loads(urllib.request.urlopen(req, timeout=30).read())["access_token"]
        dag_ids: list[str] = []
        for _ in range(120):  # the dag-processor parses dags/ shortly after start
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/dags",
                                         headers={"Authorization": f"Bearer {token}"})
            dag_ids = [d["dag_id"] for d in json.loads(urllib.request.urlopen(req, timeout=30).read())["dags"]]
            if "ingest_documents" in dag_ids:
                break
            time.sleep(1)
        assert "ingest_documents" in dag_ids
        assert processes_with(f"AIRFLOW_HOME={home}"), "standalone runs under the project-local AIRFLOW_HOME"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            rest, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            log = tmp_path / "data" / "logs" / "standalone.log"
            tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
            left = processes_with(f"AIRFLOW_HOME={home}")
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"ui.sh did not stop within 120 s of Ctrl-C; processes left {left}; standalone.log:\n"
                        + "\n".join(tail))
    assert "==> stopped" in rest
    time.sleep(2)
    assert processes_with(f"AIRFLOW_HOME={home}") == [], "Ctrl-C left Airflow processes behind"
