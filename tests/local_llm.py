"""The bundled local model served by a real ``ragops llm serve`` subprocess, once per test session.

The converted model folder (``<data_dir>/models/``, written on the first load from the GGUF file)
is kept between sessions in ``<tmp>/ragops-test-local-llm`` (override: RAGOPS_TEST_LLM_DATA_DIR),
so only the first session pays the de-quantization (20-100 s); later sessions load in seconds.
The server runs with one torch thread (RAGOPS_TEST_LLM_THREADS to change).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.topology import free_port

BIN = Path(sys.executable).parent
MODEL_DATA_DIR = Path(os.environ.get("RAGOPS_TEST_LLM_DATA_DIR")
                      or Path(tempfile.gettempdir()) / "ragops-test-local-llm")


@dataclass
class LocalLlm:
    proc: subprocess.Popen
    base_url: str  # http://127.0.0.1:PORT/v1
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


def start_local_llm(log_path: Path, *, threads: int | None = None, timeout: float = 300) -> LocalLlm:
    """Start ``ragops llm serve`` on a free loopback port; return once it printed its URL and /health answers."""
    exe = BIN / "ragops"
    port = free_port()
    env = {**os.environ, "RAGOPS_DATA_DIR": str(MODEL_DATA_DIR)}
    env.pop("RAGOPS_LOCAL_MODEL_FILE", None)
    cmd = [str(exe), "llm", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it; closed when the child is gone
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = LocalLlm(proc, f"http://127.0.0.1:{port}/v1", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ragops llm serve exited with {proc.returncode}:\n{server.log()}")
        if "ragops llm serving" in log_path.read_text(errors="replace"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                return server
            except OSError:
                pass
        time.sleep(0.3)
    server.stop()
    pytest.fail(f"ragops llm serve did not become ready within {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLlm]:
    """One real local-model server for the whole session (the model loads once)."""
    # one torch thread: when the cores are shared (the test run itself, other suites), 2 threads
    # generated 2-3x slower than 1 here (docs/llm.md, "Threads under load")
    server = start_local_llm(tmp_path_factory.mktemp("local-llm") / "serve.log",
                             threads=int(os.environ.get("RAGOPS_TEST_LLM_THREADS", "1")))
    yield server
    server.stop()
