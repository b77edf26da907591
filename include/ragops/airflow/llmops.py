"""The LLMOps page: a FastAPI app the Airflow API server mounts (plugins/ragops_llmops.py).

Everything it shows is read from the ragops state store; everything that changes something
(prompt promotion, index rebuild or rollback) is a DAG run triggered through Airflow's REST API
with the caller's own token, so the DAG's gate, audit entry, e-mail and Airflow's permissions
all apply. Every route needs an authenticated Airflow user (Airflow does not protect plugin
apps); all text from documents, questions, prompts and models is escaped; charts are inline SVG.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

log = logging.getLogger(__name__)

# what the page may start, and which conf keys each run may carry
ACTIONS: dict[str, set[str]] = {
    "promote_prompt": {"prompt", "candidate_version"},
    "rebuild_index": {"index", "action", "rollback_to"},
    "check_drift": {"index"},
}
ACTION_HEADER = "X-Ragops-Request"  # a custom header: a cross-site form cannot send it (CSRF)


# Airflow's own dependency: a Bearer token, else the UI's JWT cookie; 401 without either
User = Annotated[Any, Depends(get_user)]
app = FastAPI(title="ragops LLMOps", description="Indexes, prompts, evaluations, drift, quarantine and audit log "
                                                 "of the ragops state store.")


def _settings() -> Any:
    from ragops.airflow.common import task_settings

    return task_settings()


async def _read(fn: Any, *args: Any) -> Any:
    """State-store reads are synchronous: keep them off the API server's event loop."""
    from ragops.errors import RagopsError

    try:
        return await asyncio.to_thread(fn, *args)
    except RagopsError as exc:
        missing = str(exc).startswith(("unknown ", "no "))  # an id that is not in the state store
        raise HTTPException(status_code=404 if missing else 400, detail=str(exc)) from exc


def _api_base() -> str:
    """Airflow's REST API as this process serves it: loopback on the API server's port (plus the
    path of [api] base_url behind a proxy). Never the request's Host header, which a caller chooses."""
    from urllib.parse import urlparse

    from airflow.configuration import conf

    path = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}{path}"


ICON = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='currentColor' "
        "stroke-width='2'><path d='M3 3v18h18'/><path d='M7 15l4-4 3 3 5-6'/></svg>")


@app.get("/icon.svg")
async def icon() -> Any:
    from fastapi.responses import Response

    return Response(ICON, media_type="image/svg+xml")  # the nav icon (no data in it, no login needed)


@app.get("/api/overview")
async def api_overview(user: User) -> JSONResponse:
    from ragops.overview import overview

    data = await _read(lambda: overview(_settings()))
    return JSONResponse(json.loads(json.dumps(data, default=str)))


@app.get("/api/eval/{run_id}")
async def api_eval_run(run_id: str, user: User) -> JSONResponse:
    from ragops.overview import eval_run

    data = await _read(lambda: eval_run(_settings(), run_id))
    return JSONResponse(json.loads(json.dumps(data, default=str)))


@app.get("/", response_class=HTMLResponse)
async def page(user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_page
    from ragops.overview import overview

    data = await _read(lambda: overview(_settings()))
    return HTMLResponse(render_page(data, getattr(user, "get_name", lambda: "")()))


@app.get("/eval/{run_id}", response_class=HTMLResponse)
async def eval_page(run_id: str, user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_eval
    from ragops.overview import eval_run

    return HTMLResponse(render_eval(await _read(lambda: eval_run(_settings(), run_id))))


@app.get("/prompts/{name}/diff", response_class=HTMLResponse)
async def diff_page(name: str, a: str, b: str, user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_diff
    from ragops.registry import version_texts

    va, vb, left, right = await _read(lambda: version_texts(_settings(), name, a, b))
    table = difflib.HtmlDiff(wrapcolumn=80).make_table(left.splitlines(), right.splitlines(), f"{name}@{va}",
                                                       f"{name}@{vb}", context=False)  # escapes <, > and &
    return HTMLResponse(render_diff(name, va, vb, table))


@app.get("/drift/{check_id}/report", response_class=HTMLResponse)
async def drift_report(check_id: str, user: User) -> HTMLResponse:
    from pathlib import Path

    from ragops.drift.checks import show

    r = await _read(lambda: show(_settings(), check_id))
    path = Path(r.get("report") or "")
    if not r.get("report") or not path.exists():
        raise HTTPException(status_code=404, detail=f"the report of {check_id} is not on this machine ({path})")
    return HTMLResponse(path.read_text(encoding="utf-8"))  # written by ragops.drift.report, everything escaped


@app.post("/api/trigger/{dag_id}")
async def trigger(dag_id: str, request: Request, user: User) -> JSONResponse:
    """Start a DAG run through Airflow's REST API as the calling user (their permissions apply)."""
    import httpx

    if request.headers.get(ACTION_HEADER) != "1":
        raise HTTPException(status_code=403, detail=f"missing {ACTION_HEADER} header (actions come from the page)")
    if dag_id not in ACTIONS:
        raise HTTPException(status_code=400, detail=f"the page cannot start {dag_id}; it starts {', '.join(ACTIONS)}")
    try:
        conf = await request.json()
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="the body must be a JSON object of the run's Params") from exc
    if not isinstance(conf, dict) or set(conf) - ACTIONS[dag_id]:
        raise HTTPException(status_code=400, detail=f"{dag_id} accepts {sorted(ACTIONS[dag_id])} from this page, "
                                                    f"got {sorted(conf) if isinstance(conf, dict) else conf!r}")
    auth = request.headers.get("authorization", "")
    token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else request.cookies.get("_token", "")
    base = _api_base()
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(f"{base}/api/v2/dags/{quote(dag_id)}/dagRuns",
                                 json={"logical_date": None, "conf": conf, "note": "started from the LLMOps page"},
                                 headers={"Authorization": f"Bearer {token}"})
    if resp.status_code >= 300:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise HTTPException(status_code=resp.status_code, detail=f"Airflow refused the run: {detail}")
    run = resp.json()
    warning = None
    async with httpx.AsyncClient(timeout=30) as client:
        dag = await client.get(f"{base}/api/v2/dags/{quote(dag_id)}", headers={"Authorization": f"Bearer {token}"})
    if dag.status_code == 200 and dag.json().get("is_paused"):
        warning = f"{dag_id} is paused: the run waits until you unpause it"
    log.info("LLMOps page: %s started %s %s with %s", getattr(user, "get_name", lambda: "?")(), dag_id,
             run.get("dag_run_id"), conf)
    return JSONResponse({"dag_id": dag_id, "dag_run_id": run.get("dag_run_id"), "state": run.get("state"), "warning": warning,
                         "url": f"dags/{quote(dag_id)}/runs/{quote(str(run.get('dag_run_id')), safe='')}"})
