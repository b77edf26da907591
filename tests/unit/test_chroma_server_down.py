"""A Chroma server that does not answer is a clear, retryable VectorStoreUnavailableError, not the
proxy's HTML page in a ValueError (tests/e2e/test_faults_topology.py shows the retry end to end).

Real parts: a real `chroma run` server, stopped; and a real HTTP server on loopback answering
every request the way nginx does when its upstream is down (502 with an HTML page)."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ragops.config import ChromaSettings
from ragops.errors import VectorStoreUnavailableError
from ragops.vectorstore import VectorStore
from tests.conftest import BIN
from tests.topology import free_port


class _BadGateway(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's hook names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_without_upstream() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _BadGateway)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _store(settings, url: str) -> VectorStore:
    return VectorStore(dataclasses.replace(settings, chroma=ChromaSettings(mode="server", url=url)))


def test_a_proxy_whose_chroma_is_down_is_a_retryable_error(settings, proxy_without_upstream: str) -> None:
    with pytest.raises(VectorStoreUnavailableError) as err:
        _store(settings, proxy_without_upstream).count("docs__v1")
    msg = str(err.value)
    assert "HTTP 502" in msg and proxy_without_upstream in msg and "retried" in msg
    assert "<html>" not in msg
    assert err.value.permanent is False


def test_a_refused_connection_is_a_retryable_error(settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(VectorStoreUnavailableError) as err:
        _store(settings, url).has_collection("docs__v1")
    assert url in str(err.value) and "did not answer" in str(err.value)


def test_a_chroma_server_stopped_between_requests(settings, tmp_path: Path) -> None:
    """Connected and working, then the server dies: the next request is the same clear error, and
    once the server is back on the same path and port everything is still there."""
    port = free_port()
    argv = [str(BIN / "chroma"), "run", "--path", str(tmp_path / "db"), "--host", "127.0.0.1", "--port", str(port)]

    def start() -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
                return p
            except OSError:
                assert p.poll() is None, "chroma run exited"
                time.sleep(0.25)
        p.kill()
        pytest.fail("chroma run did not answer within 60 s")

    proc = start()
    try:
        store = _store(settings, f"http://127.0.0.1:{port}")
        store.upsert("docs__v1", ["a", "b"], np.eye(2, 4, dtype=np.float32), ["alpha", "beta"], [{"k": 1}, {"k": 2}])
        assert store.count("docs__v1") == 2
        proc.kill()
        proc.wait(timeout=30)
        with pytest.raises(VectorStoreUnavailableError):
            store.count("docs__v1")
        with pytest.raises(VectorStoreUnavailableError):
            store.query("docs__v1", np.eye(1, 4, dtype=np.float32)[0], 1)
        proc = start()
        assert store.count("docs__v1") == 2
        assert set(store.get_chunks("docs__v1", ["a", "b"])) == {"a", "b"}
    finally:
        proc.kill()
        proc.wait(timeout=30)
