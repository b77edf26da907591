"""The LLMOps plugin's HTTP surface (issue 26), in-process against Airflow's own API server app
(``create_app``, which mounts the plugin at /ragops behind Airflow's middlewares) with a real
token from the SimpleAuthManager, and with that same app served on a loopback port so that the
page's trigger reaches a real Airflow REST API.

* request bodies over ``MAX_BODY`` are refused with 413 before they are read in full, whether
  the Content-Length says so or the body comes in chunks without one;
* a Param longer than ``MAX_PARAM`` is refused, and no error message quotes a long value back:
  not ours, not FastAPI's validation answer, not Airflow's relayed refusal;
* FastAPI's documentation routes are closed, the schema answers only a signed-in user;
* schemathesis reads that schema and throws generated (valid and invalid) requests at every
  route: no 500, no answer slower than ``SLOW_S``, none larger than ``MAX_ANSWER``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e
MARKER = "http-surface-marker-7f3a"  # a prompt text in the state store: never in a refusal
MAX_ANSWER = 512 * 1024  # bytes of any answer to a fuzzed request (the page itself is far smaller here)
SLOW_S = 15.0  # seconds a single answer may take (a loaded 2-core CI machine; they take well under 1 s)
LONG = "Z" * 5000


class Api:
    def __init__(self, client: Any, app: Any, token: str, base: str) -> None:
        self.client, self.app, self.token, self.base = client, app, token, base

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Ragops-Request": "1", **extra}


@pytest.fixture(scope="module")
def api(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import uvicorn
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from ragops import registry, state
    from ragops.config import load_settings

    tmp = tmp_path_factory.mktemp("http")
    prompts = tmp / "prompts" / "rag_answer"
    prompts.mkdir(parents=True)
    shipped = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text()
    (prompts / "v1.yaml").write_text(shipped.replace("message: First version.", f"message: {MARKER}"))
    port = free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("RAGOPS_DATA_DIR", str(tmp / "data"))
    mp.setenv("RAGOPS_PROMPTS_DIR", str(prompts.parent))
    mp.setenv("AIRFLOW__API__PORT", str(port))  # where the trigger finds Airflow's REST API
    mp.setenv("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{port}")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a" * 64)
    try:
        s = load_settings()
        state.upgrade(s.state_db_url)
        registry.sync(s, "test")
        serialize("check_drift")  # so that Airflow's REST API validates a run's Params (and refuses bad ones)
        app = create_app("all")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "the API server did not start"
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
        with TestClient(app, base_url=f"http://127.0.0.1:{port}") as client:
            yield Api(client, app, token, f"http://127.0.0.1:{port}")
        server.should_exit = True
        thread.join(timeout=30)
    finally:
        mp.undo()


def serialize(dag_id: str) -> None:
    """The DAG in Airflow's metadata DB as the dag-processor would write it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)


def small_and_quiet(resp: Any, *values: str) -> None:
    assert len(resp.content) < 2000, (resp.status_code, len(resp.content))
    for v in (MARKER, *values):
        assert v not in resp.text, (resp.status_code, resp.text[:300])


def test_documentation_routes_are_closed_and_the_schema_needs_sign_in(api: Api) -> None:
    for path in ("/ragops/docs", "/ragops/redoc", "/ragops/openapi.json", "/ragops/docs/oauth2-redirect"):
        r = api.client.get(path)
        assert r.status_code in (401, 404), (path, r.status_code)
        assert "/api/trigger" not in r.text and "swagger" not in r.text.lower(), path
    r = api.client.get("/ragops/api/openapi.json")
    assert r.status_code == 401
    small_and_quiet(r, "/api/trigger")
    r = api.client.get("/ragops/api/openapi.json", headers=api.headers())
    assert r.status_code == 200
    schema = r.json()
    assert "/api/trigger/{dag_id}" in schema["paths"] and schema["servers"] == [{"url": "/ragops"}]


def test_a_large_body_is_refused_from_its_content_length(api: Api) -> None:
    body = json.dumps({"index": "x" * (20 * 1024 * 1024)})
    t0 = time.monotonic()
    r = api.client.post("/ragops/api/trigger/check_drift", content=body,
                        headers=api.headers(**{"Content-Type": "application/json"}))
    assert r.status_code == 413
    assert "4096 bytes" in r.json()["detail"]
    small_and_quiet(r, "x" * 100)
    assert time.monotonic() - t0 < SLOW_S


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(api: Api) -> None:
    """Called as ASGI directly, so that what the app pulled from the client can be counted: a
    100 MB body in 64 KiB chunks without a Content-Length is refused after the first chunk."""
    from ragops.airflow.llmops import MAX_BODY, app

    chunk, pulled, sent = b"{" + b" " * (64 * 1024 - 1), [], []

    async def receive() -> dict[str, Any]:
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < 1600}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/trigger/check_drift", "raw_path": b"/api/trigger/check_drift", "root_path": "",
             "query_string": b"", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {api.token}".encode()),
                         (b"x-ragops-request", b"1"), (b"transfer-encoding", b"chunked")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413, sent[0]
    assert sum(pulled) <= MAX_BODY + 64 * 1024, f"read {sum(pulled)} bytes of a body it refuses"


def test_a_long_param_is_refused_without_quoting_it(api: Api) -> None:
    r = api.client.post("/ragops/api/trigger/check_drift", json={"index": "y" * 300}, headers=api.headers())
    assert r.status_code == 400
    assert "at most 200" in r.json()["detail"]
    small_and_quiet(r, "y" * 60)


def test_airflow_refusals_are_relayed_capped_without_the_value(api: Api) -> None:
    """Airflow's REST API (the real one, on the loopback port) refuses the run; the page relays
    why without the 190-character value Airflow's message quotes."""
    value = "w" * 190
    r = api.client.post("/ragops/api/trigger/check_drift", json={"index": value}, headers=api.headers())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["detail"].startswith("Airflow refused the run"), r.text[:300]
    assert "index" in r.json()["detail"] and "www" in r.json()["detail"], r.text[:300]  # names it, a preview
    small_and_quiet(r, value[:60])


@pytest.mark.parametrize("path", [f"/ragops/api/eval/{LONG}", f"/ragops/eval/{LONG}", f"/ragops/drift/{LONG}/report",
                                  f"/ragops/prompts/{LONG}/diff?a=1&b=2", f"/ragops/prompts/rag_answer/diff?a={LONG}",
                                  "/ragops/prompts/rag_answer/diff"])
def test_errors_name_the_problem_without_echoing_the_input(api: Api, path: str) -> None:
    r = api.client.get(path, headers=api.headers())
    assert 400 <= r.status_code < 500, (path, r.status_code)
    small_and_quiet(r, LONG[:100])


def test_nested_json_is_a_clear_400(api: Api) -> None:
    r = api.client.post("/ragops/api/trigger/check_drift", content="[" * 2000 + "]" * 2000,
                        headers=api.headers(**{"Content-Type": "application/json"}))
    assert r.status_code == 400 and "JSON object" in r.json()["detail"]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_every_route_of_the_plugin(api: Api, mode: str) -> None:
    """schemathesis generates requests from the plugin's own schema, valid ones (``positive``) and
    ones that break it (``negative``), for every route, and sends them with the admin's token."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/ragops/api/openapi.json", api.app, headers=api.headers())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7, [op.label for op in operations]
    seen: dict[str, set[int]] = {}

    for op in operations:
        @given(case=op.as_strategy(GenerationMode(mode)))
        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def one(case: Any) -> None:
            t0 = time.monotonic()
            resp = case.call(headers=api.headers())
            took = time.monotonic() - t0
            seen.setdefault(case.operation.label, set()).add(resp.status_code)
            what = (case.method, case.formatted_path, resp.status_code)
            assert resp.status_code < 500, (*what, resp.text[:500])
            assert took < SLOW_S, (*what, took)
            assert len(resp.content) < MAX_ANSWER, (*what, len(resp.content))
            if resp.status_code >= 400:
                assert MARKER not in resp.text, what

        try:
            one()
        except Unsatisfiable:  # a route without any input has no invalid request to generate
            assert mode == "negative" and "{" not in op.path and op.method != "post", op.label
    expected = {op.label for op in operations if mode == "positive" or "{" in op.path or op.method == "post"}
    assert expected <= set(seen), (expected, seen)
    assert len(expected) >= 4, expected
