"""Who may read and who may act on the LLMOps plugin, over real HTTP against `airflow standalone`
on this project (scripts/ui.sh through conftest.start_ui) with the SimpleAuthManager configured as
an operator would: two users, ``admin`` (ADMIN) and ``viewer`` (VIEWER), their passwords in a file,
and a JWT secret of our own (so an expired token can be signed with the real key).

* every route of the plugin app without credentials, with a garbage, foreign-signed, expired or
  revoked (logged-out) token, or with a garbage ``_token`` cookie: 401 and no state-store data in
  the answer (the state store holds a prompt whose text carries a marker);
* the viewer reads the page and the JSON API; the viewer's actions are 403 with a message that
  says why, and Airflow's REST API confirms no DAG run was created (the REST API refuses the
  viewer on its own too);
* cross-site request forgery: an action authenticated only by the UI's ``_token`` cookie is
  refused from a foreign origin, from another port of the same host (same-site, so a SameSite=Lax
  cookie is sent), without the page's header, without any Origin/Referer and with
  ``Sec-Fetch-Site: cross-site``; from the page's own origin it starts the run;
* what the server wrote while this happened holds none of the secrets (passwords, JWT secret,
  API secret key, the admin's token).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.conftest import ROOT, SecretScan, free_port, start_ui

pytestmark = pytest.mark.e2e
SHIPPED = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text()
MARKER = f"access-marker-{uuid.uuid4().hex[:12]}"  # in the state store; must never be in a refusal
ACTION = "/ragops/api/trigger/check_drift"
CONF = {"index": "docs"}


def http(base: str, path: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, method=method, headers=h, data=data)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def as_json(raw: bytes) -> Any:
    return json.loads(raw or b"{}")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory):
    """A prompt registered in the state store, then standalone with an admin and a viewer."""
    from ragops import registry, state
    from ragops.config import load_settings

    tmp = tmp_path_factory.mktemp("access")
    home = tmp / "airflow"
    home.mkdir()
    prompts = tmp / "prompts" / "rag_answer"
    prompts.mkdir(parents=True)
    (prompts / "v1.yaml").write_text(SHIPPED.replace("message: First version.", f"message: {MARKER}"))
    passwords = {"admin": secrets.token_hex(12), "viewer": secrets.token_hex(12)}
    pwfile = home / "simple_auth_manager_passwords.json.generated"  # where scripts/ui.sh reads the admin's
    pwfile.write_text(json.dumps(passwords))
    keys = {"jwt": secrets.token_hex(32), "api": secrets.token_hex(32)}
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(home), RAGOPS_DATA_DIR=str(tmp / "data"),
               RAGOPS_PROMPTS_DIR=str(prompts.parent), RAGOPS_UI_PORT=str(port),
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(pwfile),
               AIRFLOW__API_AUTH__JWT_SECRET=keys["jwt"], AIRFLOW__API__SECRET_KEY=keys["api"])
    saved = {k: os.environ.get(k) for k in ("RAGOPS_DATA_DIR", "RAGOPS_PROMPTS_DIR")}
    os.environ.update({k: env[k] for k in saved})
    try:
        settings = load_settings()
        state.upgrade(settings.state_db_url)
        registry.sync(settings, "test")
        proc, password = start_ui(env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        assert password == passwords["admin"]
        base = f"http://127.0.0.1:{port}"
        tokens = {}
        for user, pw in passwords.items():
            status, _, raw = http(base, "/auth/token", "POST", {"username": user, "password": pw})
            assert status == 201, (user, status, raw)
            tokens[user] = as_json(raw)["access_token"]
        for _ in range(180):  # the dag-processor parses dags/ shortly after start
            status, _, raw = http(base, "/api/v2/dags?limit=100", token=tokens["admin"])
            if status == 200 and "check_drift" in {d["dag_id"] for d in as_json(raw)["dags"]}:
                break
            time.sleep(1)
        else:
            pytest.fail(f"check_drift was not parsed: {raw[:500]!r}")
        yield {"base": base, "port": port, "tokens": tokens, "passwords": passwords, "keys": keys,
               "home": home, "data": tmp / "data"}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def runs(airflow: dict, dag_id: str = "check_drift") -> dict[str, dict]:
    status, _, raw = http(airflow["base"], f"/api/v2/dags/{dag_id}/dagRuns?limit=100", token=airflow["tokens"]["admin"])
    assert status == 200, raw
    return {r["dag_run_id"]: r for r in as_json(raw)["dag_runs"]}


def plugin_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the plugin app, path parameters filled in."""
    from fastapi.routing import APIRoute

    from ragops.airflow.llmops import app

    fill = {"test_id": "bias-x", "run_id": "eval-x", "check_id": "drift-x", "name": "rag_answer", "dag_id": "check_drift",
            "entry_id": "1", "event_id": "1", "trace_id": "trace-x"}  # audit entry, prompt event, trace pages
    out = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        path = "/ragops" + route.path.format(**fill)
        if "{" in path:
            pytest.fail(f"a new path parameter in {route.path}: give it a value in plugin_routes()")
        if route.path.endswith("/diff"):
            path += "?a=1&b=1"
        out += [(m, path) for m in sorted(route.methods)]
    assert len(out) >= 8, out
    return out


PUBLIC = {("GET", "/ragops/icon.svg")}  # the navigation icon: a constant SVG, no data


def forge(airflow: dict, key: str, **changes: Any) -> str:
    """The admin's real token with claims changed, signed with ``key``."""
    import jwt

    real = airflow["tokens"]["admin"]
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    claims.update(changes, jti=uuid.uuid4().hex)
    return jwt.encode(claims, key, algorithm=header["alg"], headers={k: v for k, v in header.items() if k == "kid"})


def test_every_route_refuses_missing_and_bad_credentials(airflow) -> None:
    base, now = airflow["base"], int(time.time())
    # controls: with the real key and a valid lifetime a forged token is accepted, so the 401s
    # below are caused by what each token lacks, not by the way it was made
    status, _, _ = http(base, "/ragops/api/overview", token=forge(airflow, airflow["keys"]["jwt"]))
    assert status == 200
    status, _, raw = http(base, "/ragops/api/overview", token=airflow["tokens"]["admin"])
    assert status == 200 and MARKER.encode() in raw  # the data the refusals below must not carry
    # a token the admin logged out with is revoked
    revoked = http(base, "/auth/token", "POST", {"username": "admin", "password": airflow["passwords"]["admin"]})
    revoked_token = as_json(revoked[2])["access_token"]
    status, _, _ = http(base, "/api/v2/auth/logout", token=revoked_token)
    assert status in (302, 307), status
    bad: dict[str, dict[str, str]] = {
        "no credentials": {},
        "garbage bearer": {"Authorization": "Bearer not-a-jwt"},
        "empty bearer": {"Authorization": "Bearer "},
        "foreign key": {"Authorization": "Bearer " + forge(airflow, secrets.token_hex(32))},
        "expired": {"Authorization": "Bearer " + forge(airflow, airflow["keys"]["jwt"], iat=now - 7200,
                                                         nbf=now - 7200, exp=now - 3600)},
        "revoked": {"Authorization": f"Bearer {revoked_token}"},
        "garbage cookie": {"Cookie": "_token=not-a-jwt"},
        "expired cookie": {"Cookie": "_token=" + forge(airflow, airflow["keys"]["jwt"], iat=now - 7200,
                                                       nbf=now - 7200, exp=now - 3600)},
    }
    before = set(runs(airflow))
    seen: dict[str, set[int]] = {}
    for method, path in plugin_routes():
        for what, headers in bad.items():
            h = {"X-Ragops-Request": "1", "Origin": base, **headers} if method == "POST" else headers
            status, _, raw = http(base, path, method, CONF if method == "POST" else None, h)
            seen.setdefault(what, set()).add(status)
            if (method, path) in PUBLIC:
                assert status == 200 and raw.startswith(b"<svg") and MARKER.encode() not in raw
                continue
            assert status == 401, (what, method, path, status, raw)
            body = as_json(raw)
            assert set(body) == {"detail"} and MARKER not in raw.decode() and "rag_answer" not in raw.decode(), body
    assert seen == {k: {200, 401} for k in bad}, seen
    assert set(runs(airflow)) == before  # not one run was started


def test_the_viewer_reads_but_cannot_act(airflow) -> None:
    base, viewer = airflow["base"], airflow["tokens"]["viewer"]
    status, _, raw = http(base, "/ragops/", token=viewer)
    assert status == 200 and MARKER.encode() in raw
    status, _, raw = http(base, "/ragops/api/overview", token=viewer)
    assert status == 200 and as_json(raw)["prompts"][0]["name"] == "rag_answer"
    # Airflow's REST API refuses the viewer a run on its own ...
    before = set(runs(airflow))
    status, _, raw = http(base, "/api/v2/dags/check_drift/dagRuns", "POST", {"logical_date": None, "conf": CONF},
                          token=viewer)
    assert status == 403, raw
    # ... and the page's action says why, with a Bearer token and with the UI's cookie
    for headers in ({"Authorization": f"Bearer {viewer}"}, {"Cookie": f"_token={viewer}", "Origin": base}):
        for dag_id, conf in (("check_drift", CONF), ("promote_prompt", {"prompt": "rag_answer", "candidate_version": 1}),
                             ("rebuild_index", {"index": "docs", "action": "rebuild"})):
            status, _, raw = http(base, f"/ragops/api/trigger/{dag_id}", "POST", conf,
                                  {"X-Ragops-Request": "1", **headers})
            detail = as_json(raw)["detail"]
            assert status == 403 and f"viewer (role viewer) may not start runs of {dag_id}" in detail.lower(), raw
    assert set(runs(airflow)) == before, "the viewer's attempts created a DAG run"
    # the admin's action creates the run, with the page's note and exactly the conf it was given
    status, _, raw = http(base, ACTION, "POST", CONF, {"X-Ragops-Request": "1"}, token=airflow["tokens"]["admin"])
    assert status == 200, raw
    run_id = as_json(raw)["dag_run_id"]
    run = runs(airflow)[run_id]
    assert set(runs(airflow)) == before | {run_id}
    assert run["conf"] == CONF and "LLMOps" in (run.get("note") or "")


def test_cookie_actions_need_the_pages_origin_and_header(airflow) -> None:
    base, port, admin = airflow["base"], airflow["port"], airflow["tokens"]["admin"]
    cookie = {"Cookie": f"_token={admin}"}
    header = {"X-Ragops-Request": "1"}
    forged = {
        "foreign origin": {**cookie, **header, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        "foreign origin, no fetch metadata": {**cookie, **header, "Origin": "http://evil.example"},
        "foreign referer": {**cookie, **header, "Referer": "http://evil.example/page.html"},
        "same host, other port": {**cookie, **header, "Origin": f"http://127.0.0.1:{free_port()}",
                                  "Sec-Fetch-Site": "same-site"},
        "null origin": {**cookie, **header, "Origin": "null"},
        "no origin, no referer": {**cookie, **header},
        "cross-site fetch metadata": {**cookie, **header, "Origin": base, "Sec-Fetch-Site": "cross-site"},
        "no page header (an HTML form)": {**cookie, "Origin": base, "Content-Type": "text/plain"},
    }
    before = set(runs(airflow))
    for what, headers in forged.items():
        status, _, raw = http(base, ACTION, "POST", CONF, headers)
        assert status == 403, (what, status, raw)
        detail = as_json(raw)["detail"]
        assert "refused" in detail or "X-Ragops-Request" in detail, (what, detail)
    assert set(runs(airflow)) == before, "a forged request started a DAG run"
    # what the page's own fetch sends: the cookie, its header, its origin
    accepted = []
    for what, headers in {"page origin": {"Origin": base, "Sec-Fetch-Site": "same-origin"},
                          "page referer": {"Referer": f"{base}/ragops/"},
                          # [api] base_url (scripts/ui.sh: http://localhost:<port>) is this server too
                          "base_url origin": {"Origin": f"http://localhost:{port}"}}.items():
        status, _, raw = http(base, ACTION, "POST", CONF, {**cookie, **header, **headers})
        assert status == 200, (what, status, raw)
        accepted.append(as_json(raw)["dag_run_id"])
    assert set(runs(airflow)) == before | set(accepted)


def test_no_secret_in_what_the_server_wrote(airflow) -> None:
    """Runs after the others: their logins, refusals and runs are in these logs."""
    base, admin = airflow["base"], airflow["tokens"]["admin"]
    scan = SecretScan({"admin password": airflow["passwords"]["admin"],
                       "viewer password": airflow["passwords"]["viewer"],
                       "JWT secret": airflow["keys"]["jwt"], "API secret key": airflow["keys"]["api"],
                       "admin token": admin})
    for path in ("/ragops/", "/ragops/api/overview", "/api/v2/connections?limit=100", "/api/v2/config",
                 "/api/v2/eventLogs?limit=1000", "/api/v2/dags/~/dagRuns?limit=100"):
        status, _, raw = http(base, path, token=admin)
        assert status in (200, 403), (path, status)  # /config: 403 unless [api] expose_config
        scan.text(path, raw, "HTTP answer")
    # the data dir holds standalone.log (api-server, scheduler, dag-processor, triggerer), the
    # state store and the CLI logs; AIRFLOW_HOME/logs the task and dag-processor logs
    scan.tree(airflow["data"], "data-dir file")
    if (airflow["home"] / "logs").exists():
        scan.tree(airflow["home"] / "logs", "Airflow log file")
    assert scan.places["data-dir file"] >= 2 and scan.bytes > 10_000, scan.summary()
    print(scan.summary())
    assert not scan.found, scan.found
