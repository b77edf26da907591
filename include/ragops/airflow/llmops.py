"""The LLMOps page: a FastAPI app the Airflow API server mounts (plugins/ragops_llmops.py).

Everything it shows is read from the ragops state store; everything that changes something
(prompt promotion, index rebuild or rollback) is a DAG run triggered through Airflow's REST API
with the caller's own token, so the DAG's gate, audit entry, e-mail and Airflow's permissions
all apply. The one exception is a review of a production trace (``POST /api/review``): the API
server records it through ragops.production.review (golden line, review row, audit entry with the
signed-in user as reviewer), for users Airflow lets create nightly_eval runs. Every route needs
an authenticated Airflow user (Airflow does not protect plugin apps); all text from documents,
questions, prompts and models is escaped; the trend charts are uPlot, vendored in static/. The
tables filter and page on the server (``page_filters``: the same query parameters for the page and
``/api/overview``); every figure the page shows is also in the JSON API.

Access (tests/e2e/test_access.py): no token, or one that does not verify (forged, expired,
revoked), is 401; a user whom Airflow does not allow to create runs of the DAG (the Viewer role)
may read every page but gets 403 from the actions. An action authenticated by the UI's cookie is
refused unless it carries the page's custom header and comes from a page of this server (Origin or
Referer, and Sec-Fetch-Site when the browser sends it): the cookie alone is not proof that the
user asked for it (cross-site request forgery; the cookie is SameSite=Lax, which another port on
the same host still gets).

HTTP surface (tests/unit/test_llmops_http.py, tests/e2e/test_access.py): a request body is capped
at ``MAX_BODY`` bytes before it is read in full (413), each Param the page sends at ``MAX_PARAM``
characters; error messages, whether ours or relayed from Airflow, are capped and never quote a
long value back; FastAPI's documentation routes are off and the OpenAPI schema is served only to a
signed-in user (``/api/openapi.json``).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as FPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragops.errors import brief

log = logging.getLogger(__name__)

# what the page may start, and which conf keys each run may carry
ACTIONS: dict[str, set[str]] = {
    "promote_prompt": {"prompt", "candidate_version"},
    "rebuild_index": {"index", "action", "rollback_to"},
    "check_drift": {"index"},
}
ACTION_HEADER = "X-Ragops-Request"  # a custom header: a cross-site form cannot send it (CSRF)
MAX_BODY = 4096  # bytes of a request body: the trigger forms' Params are a few dozen bytes
MAX_PARAM = 200  # characters of one Param value (a prompt or index name, a version number)
MAX_DETAIL = 600  # characters of an error message the page answers with
REVIEW_MAX_ANSWER = 1500  # characters of a reviewer's answer: with the doc ids it fits in MAX_BODY (the CLI takes more)
REVIEW_MAX_DOCS = 10  # relevant document ids in one review from the page
PAGE_REVIEWS = 20  # review-queue entries on the page (the JSON API and the CLI list more)


def _cap(text: Any, limit: int = MAX_DETAIL) -> str:
    """An error message cut to ``limit`` characters: Airflow's validation messages quote the
    refused value (twice), and a value can be megabytes long."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 40] + f"... [{len(text) - limit + 40} characters cut]"


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before it is read in full: at once when
    Content-Length says so, else (chunked) as soon as the bytes received pass the limit."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is larger than {self.limit} bytes, the limit of the "
                                     "LLMOps page's routes (its actions send only a few small Params)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        try:
            declared = int(length) if length else None
        except ValueError:
            declared = self.limit + 1  # a Content-Length that is not a number: refuse like a large one
        if declared is not None and (declared > self.limit or declared < 0):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)


async def authenticated_user(request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None,
                                                                 Depends(bearer_scheme)]) -> Any:
    """Airflow's own authentication (a Bearer token, else the UI's JWT cookie). A token that does
    not verify is 401 like a missing one: Airflow's ``get_user`` answers it 403, which would tell a
    client that signing in again cannot help. ``get_user`` authorises nothing, so its only 403 is
    that one."""
    # the credential get_user goes by (a non-empty Bearer token wins over the cookie), for the trigger
    explicit = bearer is not None and bearer.scheme.lower() == "bearer" and bool(bearer.credentials)
    request.state.ragops_bearer = bearer.credentials if explicit else None  # type: ignore[union-attr]
    try:
        return await get_user(request, None, bearer)
    except HTTPException as exc:
        if exc.status_code == 403:
            raise HTTPException(status_code=401, detail="Not authenticated: the token is not valid",
                                headers={"WWW-Authenticate": "Bearer"}) from None
        raise


User = Annotated[Any, Depends(authenticated_user)]
app = FastAPI(title="ragops LLMOps", description="Indexes, prompts, evaluations, drift, quarantine and audit log "
                                                 "of the ragops state store.",
              docs_url=None, redoc_url=None, openapi_url=None)  # the schema only behind sign-in (below)
app.add_middleware(BodyLimit, limit=MAX_BODY)


def _problems(errors: Any) -> str:
    """FastAPI validation errors as ``where: what`` (at most five), without the refused ``input``."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                     for e in list(errors)[:5] if isinstance(e, dict))


def _preview(value: str) -> str:
    return value if len(value) <= 40 else f"{value[:37]}..."


def _scrub(text: Any, request: Request) -> str:
    """An error message without the long values the request carried (path and query parameters,
    the trigger's Params) — each replaced by a short preview — and capped."""
    text = str(text)
    values = [*request.path_params.values(), *request.query_params.values(),
              *(getattr(request.state, "ragops_conf", None) or {}).values()]
    for value in sorted((v for v in values if isinstance(v, str) and len(v) > 40), key=len, reverse=True):
        text = text.replace(value, _preview(value)).replace(repr(value)[1:-1], _preview(value))
    return _cap(text)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """Every refusal of the plugin goes out through here: scrubbed of long input, capped. A page
    a browser asked for (not the JSON API) that cannot be shown is a page that says why, with the
    way back to the LLMOps page."""
    detail = _scrub(exc.detail, request)
    root = request.scope.get("root_path") or ""
    page = not request.url.path[len(root):].startswith("/api/") and exc.status_code in (400, 404)
    if page and "text/html" in request.headers.get("accept", ""):
        from ragops.airflow.llmops_html import render_missing

        return HTMLResponse(render_missing(exc.status_code, detail, f"{root}/"), status_code=exc.status_code)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's default answer quotes every refused value back (``input``): name the field and
    the problem only."""
    return JSONResponse({"detail": _scrub("invalid request: " + _problems(exc.errors()), request)}, status_code=422)


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
        raise HTTPException(status_code=404 if missing else 400, detail=str(exc)) from exc  # scrubbed by _http_error


def _user_name(user: Any) -> str:
    return str(getattr(user, "get_name", lambda: "?")())


def _require_same_origin(request: Request) -> None:
    """An action authenticated by the UI's cookie must come from a page of this server: the
    browser's Origin (else Referer) names this host (the request's Host, which a browser sets to
    the server it talks to, or [api] base_url behind a proxy), and Sec-Fetch-Site, when sent, says
    same-origin. Requests with a Bearer token carry their own proof and skip this."""
    from urllib.parse import urlparse

    from airflow.configuration import conf

    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise HTTPException(status_code=403, detail=f"refused: a {site} request (actions come from the page)")
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    src = urlparse(source if source != "null" else "")
    own = {request.headers.get("host", "").lower()}
    own.add(urlparse(conf.get("api", "base_url", fallback="") or "").netloc.lower())
    if src.scheme not in ("http", "https") or not src.netloc or src.netloc.lower() not in own - {""}:
        raise HTTPException(status_code=403, detail=f"refused: the request comes from {source or 'no page'!r}, "
                                                    "not from this server's LLMOps page (cross-site request)")


async def _require_run_permission(user: Any, dag_id: str, doing: str | None = None) -> None:
    """The same check Airflow's REST API makes before it creates a run, made first so the page can
    say why (the REST API then checks again). ``doing``: what the refused user wanted, when it is
    not starting the run itself."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    team = await asyncio.to_thread(DagModel.get_team_name, dag_id)
    if not get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id, team_name=team), user=user):
        role = getattr(user, "role", None)
        raise HTTPException(status_code=403, detail=f"{_user_name(user)}{f' (role {role})' if role else ''} may "
                                                    f"not {doing or f'start runs of {dag_id}'}: Airflow does not give "
                                                    "this user the permission to create DAG runs (ask an admin)")


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


STATIC = {"uPlot.iife.min.js": "text/javascript; charset=utf-8", "uPlot.min.css": "text/css; charset=utf-8",
          "charts.js": "text/javascript; charset=utf-8"}


@app.get("/static/{name}", include_in_schema=False)
async def static(name: str, user: User) -> Any:
    """The page's vendored chart library (uPlot, MIT, include/ragops/airflow/static/) and its chart
    script: served from the package, so the page needs no network beyond this server."""
    from fastapi.responses import Response

    if name not in STATIC:
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    body = (Path(__file__).parent / "static" / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "private, max-age=3600",
                                                            "X-Content-Type-Options": "nosniff"})


@app.get("/api/openapi.json", include_in_schema=False)
async def openapi_schema(request: Request, user: User) -> JSONResponse:
    """The plugin's OpenAPI schema, for a signed-in user only (it lists every route and Param),
    with the path Airflow mounts the app at as its server."""
    return JSONResponse({**app.openapi(), "servers": [{"url": request.scope.get("root_path") or "/"}]})


MAX_OFFSET = 10 ** 6
MAX_ID = 2 ** 62  # an audit entry or history event id (a larger one would overflow the database's integer)


def page_filters(since: Annotated[str | None, Query(max_length=40)] = None,
                 until: Annotated[str | None, Query(max_length=40)] = None,
                 index: Annotated[str | None, Query(max_length=MAX_PARAM)] = None,
                 prompt: Annotated[str | None, Query(max_length=MAX_PARAM)] = None,
                 action: Annotated[str | None, Query(max_length=MAX_PARAM)] = None,
                 per_page: Annotated[int, Query(ge=1, le=200)] = 25,
                 evals: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 audit: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 drift: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 history: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 traces: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 bias: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Any:
    """The tables' filters and each table's offset, from the query (ragops.overview.Filters): a
    time range (a UTC date or ISO time), index, prompt (name or name@version), action."""
    from ragops.errors import RagopsError
    from ragops.overview import Filters, parse_time

    try:
        start, end = parse_time(since, "since"), parse_time(until, "until", end=True)
    except RagopsError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    if start and end and start >= end:
        raise HTTPException(status_code=400, detail="since must be before until (both in UTC)")
    return Filters(since=start, until=end, index=index or None, prompt=prompt or None, action=action or None,
                   per_page=per_page, offsets={"evals": evals, "audit": audit, "drift": drift, "history": history,
                                               "traces": traces, "bias": bias})


PageFilters = Annotated[Any, Depends(page_filters)]


def _json(data: Any) -> JSONResponse:
    return JSONResponse(json.loads(json.dumps(data, default=str)))


@app.get("/api/overview")
async def api_overview(user: User, f: PageFilters) -> JSONResponse:
    """Everything the page shows, with the same filters and pages (query parameters as the page's)."""
    from ragops.overview import overview

    return _json(await _read(lambda: overview(_settings(), f)))


@app.get("/api/eval/{run_id}")
async def api_eval_run(run_id: str, user: User) -> JSONResponse:
    """One run: its metrics, operations (latency, tokens, cost, refusals), per-tag table and every
    question; no server paths (``report_url`` is the page's relative link of its report.html)."""
    from ragops.overview import eval_run

    return _json(await _read(lambda: eval_run(_settings(), run_id)))


@app.get("/api/audit/{entry_id}")
async def api_audit_entry(entry_id: Annotated[int, FPath(ge=1, le=MAX_ID)], user: User) -> JSONResponse:
    from ragops.overview import audit_entry

    return _json(await _read(lambda: audit_entry(_settings(), entry_id)))


@app.get("/api/prompts/{name}/history/{event_id}")
async def api_prompt_event(name: Annotated[str, FPath(max_length=MAX_PARAM)],
                           event_id: Annotated[int, FPath(ge=1, le=MAX_ID)], user: User) -> JSONResponse:
    from ragops.overview import prompt_event

    return _json(await _read(lambda: prompt_event(_settings(), name, event_id)))


@app.get("/api/traces")
async def api_traces(user: User, f: PageFilters) -> JSONResponse:
    """Production traces, newest first, by time range, index and prompt (version), paged."""
    from ragops.overview import trace_list

    return _json(await _read(lambda: trace_list(_settings(), f)))


@app.get("/api/trace/{trace_id}")
async def api_trace(trace_id: Annotated[str, FPath(max_length=64)], user: User) -> JSONResponse:
    from ragops.overview import trace

    return _json(await _read(lambda: trace(_settings(), trace_id)))


BIAS_ID = Annotated[str, FPath(max_length=64)]  # then checked against bias_report.TEST_ID (404, not quoted back)


def _bias_test(test_id: str) -> dict[str, Any]:
    from ragops.evaluation.bias_report import load_test, valid_test_id

    if not valid_test_id(test_id):  # before anything is read; the refusal does not quote the id
        raise HTTPException(status_code=404, detail="unknown bias test: a test id looks like "
                                                    "bias-20261122T120000-0a1b2c; pick one from the page's Bias tests")
    return load_test(_settings(), test_id)


@app.get("/api/bias")
async def api_bias_tests(user: User, f: PageFilters) -> JSONResponse:
    """The kept bias tests (ragops eval bias), newest first, by time range, index and prompt, paged
    (offset ``bias``)."""
    from ragops.evaluation.bias_report import recent_tests

    return _json(await _read(lambda: recent_tests(_settings(), f)))


@app.get("/api/bias/{test_id}")
async def api_bias_test(test_id: BIAS_ID, user: User) -> JSONResponse:
    """One kept bias test: its whole result (per attribute the rows of every metric and group,
    examples, the gate with ``--against``), its audit entry; no server paths."""
    return _json(await _read(_bias_test, test_id))


@app.get("/bias/{test_id}", response_class=HTMLResponse)
async def bias_page(test_id: BIAS_ID, user: User) -> HTMLResponse:
    """One kept bias test as tables: per attribute, a row per group, a column per metric."""
    from ragops.airflow.llmops_html import render_bias

    return HTMLResponse(render_bias(await _read(_bias_test, test_id)))


@app.get("/audit/{entry_id}", response_class=HTMLResponse)
async def audit_page(entry_id: Annotated[int, FPath(ge=1, le=MAX_ID)], user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_audit_entry
    from ragops.overview import audit_entry

    return HTMLResponse(render_audit_entry(await _read(lambda: audit_entry(_settings(), entry_id))))


@app.get("/prompts/{name}/history/{event_id}", response_class=HTMLResponse)
async def prompt_event_page(name: Annotated[str, FPath(max_length=MAX_PARAM)],
                            event_id: Annotated[int, FPath(ge=1, le=MAX_ID)], user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_prompt_event
    from ragops.overview import prompt_event

    return HTMLResponse(render_prompt_event(await _read(lambda: prompt_event(_settings(), name, event_id))))


@app.get("/traces", response_class=HTMLResponse)
async def traces_page(user: User, f: PageFilters) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_traces
    from ragops.overview import trace_list

    return HTMLResponse(render_traces(await _read(lambda: trace_list(_settings(), f))))


@app.get("/trace/{trace_id}", response_class=HTMLResponse)
async def trace_page(trace_id: Annotated[str, FPath(max_length=64)], user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_trace
    from ragops.overview import trace

    return HTMLResponse(render_trace(await _read(lambda: trace(_settings(), trace_id))))


@app.get("/api/compare")
async def api_compare(user: User, a: Annotated[str, Query(max_length=MAX_PARAM)],
                      b: Annotated[str, Query(max_length=MAX_PARAM)]) -> JSONResponse:
    """Run ``b`` against run ``a`` (ragops.evaluation.compare): every metric with its difference and
    paired interval, every paired question worst first with both answers and contexts."""
    from ragops.evaluation.compare import compare_runs

    data = await _read(lambda: compare_runs(_settings(), a, b))
    return JSONResponse(json.loads(json.dumps(data, default=str)))


@app.get("/api/review")
async def api_review_queue(user: User, index: Annotated[str | None, Query(max_length=MAX_PARAM)] = None,
                           limit: Annotated[int, Query(ge=1, le=100)] = 50) -> JSONResponse:
    """Production traces waiting for review (ragops.production.review), newest first."""
    from ragops.production import review

    def read() -> dict[str, Any]:
        s = _settings()
        return {"pending": review.pending_count(s, index), "items": review.queue(s, index, limit)}

    return JSONResponse(json.loads(json.dumps(await _read(read), default=str)))


@app.get("/api/production")
async def api_production(user: User, days: Annotated[int, Query(ge=1, le=90)] = 7,
                         prompt: Annotated[str | None, Query(max_length=MAX_PARAM)] = None) -> JSONResponse:
    """Production figures per prompt version, per version and UTC day (volume, hallucination and
    refusal rates, latency, tokens, cost, feedback), and the effects of production-alias moves."""
    from ragops.overview import Filters, production_daily
    from ragops.production.versions import production_view

    def read() -> dict[str, Any]:
        s = _settings()
        return {**production_view(s, days=days), "daily": production_daily(s, days, Filters(prompt=prompt))}

    return _json(await _read(read))


@app.get("/", response_class=HTMLResponse)
async def page(user: User, f: PageFilters) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_page
    from ragops.evaluation.bias_report import recent_tests
    from ragops.overview import overview, production_daily
    from ragops.production import review
    from ragops.production.versions import production_view

    def read() -> tuple[Any, ...]:
        s = _settings()
        production = production_view(s)
        production["daily"] = production_daily(s, production["days"], f)
        return (overview(s, f), {"pending": review.pending_count(s, f.index),
                                 "items": review.queue(s, f.index, limit=PAGE_REVIEWS)}, production,
                recent_tests(s, f))

    data, queue, production, bias = await _read(read)
    dags = await asyncio.to_thread(_dag_states)
    return HTMLResponse(render_page(data, getattr(user, "get_name", lambda: "")(), dags, review=queue,
                                    production=production, bias=bias))


def _dag_states() -> dict[str, dict[str, Any]]:
    """Paused or not, and the schedule, of the DAGs the page starts or reads from (Airflow's DB)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    ids = [*ACTIONS, "nightly_eval", "ingest_documents"]
    try:
        with create_session() as session:
            rows = session.scalars(select(DagModel).where(DagModel.dag_id.in_(ids))).all()
            return {r.dag_id: {"is_paused": bool(r.is_paused),
                               "schedule": None if str(r.timetable_summary or "None") == "None" else r.timetable_summary}
                    for r in rows}
    except Exception as exc:  # noqa: BLE001 - the page still shows the state store without it
        log.warning("LLMOps page: could not read the DAGs' paused state: %s", exc)
        return {}


@app.get("/eval/{run_id}", response_class=HTMLResponse)
async def eval_page(run_id: str, user: User) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_eval
    from ragops.overview import eval_run

    return HTMLResponse(render_eval(await _read(lambda: eval_run(_settings(), run_id))))


def _with_back(html: str, bar: str) -> str:
    """A report written by ragops (eval or drift) with a bar of links back to the page on top."""
    import re

    bar = f"<div style='padding:6px;border-bottom:1px solid #eaecf0;margin-bottom:8px'>{bar}</div>"
    m = re.search(r"<body[^>]*>", html, flags=re.IGNORECASE)
    return html[:m.end()] + bar + html[m.end():] if m else bar + html


@app.get("/eval/{run_id}/report", response_class=HTMLResponse)
async def eval_report(run_id: str, user: User) -> HTMLResponse:
    """The run's own report.html (written by run_eval into its run folder), with the way back to
    its drill-down."""
    from ragops.evaluation.reports import esc
    from ragops.overview import eval_report_html

    html = await _read(lambda: eval_report_html(_settings(), run_id))
    return HTMLResponse(_with_back(html, f"<a href='../{esc(quote(run_id, safe=''))}' class='back-to-run'>← the "
                                         f"drill-down of {esc(run_id)}</a> · <a href='../../'>LLMOps</a>"))


@app.get("/compare", response_class=HTMLResponse)
async def compare_page(user: User, a: Annotated[str, Query(max_length=MAX_PARAM)],
                       b: Annotated[str, Query(max_length=MAX_PARAM)]) -> HTMLResponse:
    from ragops.airflow.llmops_html import render_compare
    from ragops.evaluation.compare import compare_runs

    return HTMLResponse(render_compare(await _read(lambda: compare_runs(_settings(), a, b))))


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
        raise HTTPException(status_code=404, detail=f"the report of {check_id} is not on this server (its file was "
                                                    "removed or is on another machine)")
    from ragops.evaluation.reports import esc

    back = (f"<a href='../../?{esc(urlencode({'index': r['index']}))}#drift-{esc(check_id)}' class='back-to-check'>← "
            f"drift check {esc(check_id)} of {esc(r['index'])} ({esc(r['status'])})</a> · <a href='../../?"
            f"{esc(urlencode({'index': r['index'], 'action': 'drift_breach'}))}#audit'>its index's breach entries</a>")
    return HTMLResponse(_with_back(path.read_text(encoding="utf-8"), back))  # ragops.drift.report escapes its data


TRIGGER_OPENAPI = {  # the body and header the route reads itself, so that the schema (and a fuzzer) knows them
    "parameters": [{"in": "header", "name": ACTION_HEADER, "required": True,
                    "schema": {"type": "string", "enum": ["1"]}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "maxProperties": 3,
        "additionalProperties": {"type": ["string", "integer", "boolean", "null"], "maxLength": MAX_PARAM}}}}},
}


def _require_page_action(request: Request) -> str | None:
    """An action needs the page's header and, when the UI's cookie authenticated it, the page's
    origin; returns the Bearer token the caller sent (None: the cookie)."""
    bearer = getattr(request.state, "ragops_bearer", None)  # set by authenticated_user
    if request.headers.get(ACTION_HEADER) != "1":
        raise HTTPException(status_code=403, detail=f"missing {ACTION_HEADER} header (actions come from the page)")
    if bearer is None:  # authenticated by the UI's cookie, which a browser also sends on a forged request
        _require_same_origin(request)
    return bearer


@app.post("/api/trigger/{dag_id}", openapi_extra=TRIGGER_OPENAPI)
async def trigger(dag_id: str, request: Request, user: User) -> JSONResponse:
    """Start a DAG run through Airflow's REST API as the calling user (their permissions apply)."""
    import httpx

    bearer = _require_page_action(request)
    if dag_id not in ACTIONS:
        raise HTTPException(status_code=400, detail=f"the page cannot start {dag_id}; it starts {', '.join(ACTIONS)}")
    await _require_run_permission(user, dag_id)
    try:
        conf = await request.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested a thousand levels deep
        raise HTTPException(status_code=400, detail="the body must be a JSON object of the run's Params") from exc
    if not isinstance(conf, dict) or set(conf) - ACTIONS[dag_id]:
        got = sorted(conf)[:10] if isinstance(conf, dict) else f"a JSON {type(conf).__name__}"
        raise HTTPException(status_code=400, detail=f"{dag_id} accepts {sorted(ACTIONS[dag_id])} from this page, "
                                                    f"got {brief(got, 200)}")
    request.state.ragops_conf = conf  # for _scrub: no refusal quotes a long value back
    for key, value in conf.items():
        if value is not None and not isinstance(value, (str, int, bool)):
            raise HTTPException(status_code=400, detail=f"{key} must be a string or a number, got a JSON "
                                                        f"{type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_PARAM:
            raise HTTPException(status_code=400, detail=f"{key} is {len(value)} characters long; the page's Params "
                                                        f"are at most {MAX_PARAM} (value {brief(value, 40)})")
    token = bearer or request.cookies.get("_token", "")
    base = _api_base()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(f"{base}/api/v2/dags/{quote(dag_id)}/dagRuns",
                                     json={"logical_date": None, "conf": conf, "note": "started from the LLMOps page"},
                                     headers={"Authorization": f"Bearer {token}"})
            if resp.status_code >= 300:
                raise HTTPException(status_code=resp.status_code if resp.status_code < 500 else 502,
                                    detail=f"Airflow refused the run: {_airflow_detail(resp)}")
            run = resp.json()
            dag = await client.get(f"{base}/api/v2/dags/{quote(dag_id)}", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise HTTPException(status_code=503, detail=f"Airflow's REST API at {base} did not answer "
                                                    f"({type(exc).__name__}): is the API server running on that "
                                                    "port ([api] port, [api] base_url)?") from exc
    warning = None
    if dag.status_code == 200 and dag.json().get("is_paused"):
        warning = (f"{dag_id} is paused: the run waits until you unpause it, and unpausing also starts the "
                   "run of its latest scheduled interval, if it has a schedule")
    log.info("LLMOps page: %s started %s %s with %s", _user_name(user), dag_id,
             run.get("dag_run_id"), brief(conf, 400))
    return JSONResponse({"dag_id": dag_id, "dag_run_id": run.get("dag_run_id"), "state": run.get("state"), "warning": warning,
                         "url": f"dags/{quote(dag_id)}/runs/{quote(str(run.get('dag_run_id')), safe='')}"})


def _airflow_detail(resp: Any) -> str:
    """Airflow's refusal without the refused values: its validation messages quote the whole value
    (twice), and a 422 lists each refused ``input``."""
    try:
        detail = resp.json().get("detail", "")
    except (ValueError, AttributeError):
        return f"HTTP {resp.status_code}"
    if isinstance(detail, list):  # FastAPI validation errors: keep where and what, drop the input
        detail = _problems(detail)
    elif isinstance(detail, dict):
        detail = detail.get("reason") or detail.get("message") or brief(detail, 200)
    return str(detail)  # _http_error replaces the long values we sent by previews and caps it


class ReviewBody(BaseModel):
    """A reviewer's verdict on one trace of the review queue, as the page's form sends it."""

    model_config = ConfigDict(extra="forbid")
    trace_id: str = Field(min_length=1, max_length=64)
    verdict: Literal["answer", "unanswerable", "not_a_problem"]
    reference_answer: str | None = Field(default=None, max_length=REVIEW_MAX_ANSWER)
    relevant: list[Annotated[str, Field(min_length=1, max_length=MAX_PARAM)]] = Field(default_factory=list,
                                                                                     max_length=REVIEW_MAX_DOCS)


REVIEW_OPENAPI = {"parameters": TRIGGER_OPENAPI["parameters"], "requestBody": {
    "required": True, "content": {"application/json": {"schema": ReviewBody.model_json_schema()}}}}


@app.post("/api/review", openapi_extra=REVIEW_OPENAPI)
async def submit_review(request: Request, user: User) -> JSONResponse:
    """Record the signed-in user's verdict on a production trace (ragops.production.review.submit):
    with an answer or as unanswerable, its question joins the index's reviewed golden set, which
    nightly_eval evaluates; so it takes the permission to create nightly_eval runs."""
    from pydantic import ValidationError

    from ragops.production.review import ReviewError, submit

    _require_page_action(request)
    await _require_run_permission(user, "nightly_eval", "review production traces (a reviewed question joins what "
                                                        "nightly_eval evaluates)")
    try:
        raw = await request.json()
    except (ValueError, RecursionError) as exc:
        raise HTTPException(status_code=400, detail="the body must be a JSON object: trace_id, verdict, "
                                                    "reference_answer, relevant") from exc
    if isinstance(raw, dict):  # for _scrub: no refusal quotes a long value back
        request.state.ragops_conf = {k: v for k, v in raw.items() if isinstance(v, str)}
    try:
        body = ReviewBody.model_validate(raw)
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail="invalid review: " + _problems(exc.errors())) from exc
    reviewer = _user_name(user)
    try:
        result = await asyncio.to_thread(lambda: submit(_settings(), body.trace_id, body.verdict,
                                                        reference_answer=body.reference_answer,
                                                        relevant=body.relevant, reviewer=reviewer))
    except ReviewError as exc:
        text = str(exc)
        code = 404 if text.startswith("unknown trace") else 409 if "already reviewed" in text else 400
        raise HTTPException(status_code=code, detail=text) from exc
    log.info("LLMOps page: %s reviewed trace %s: %s", reviewer, body.trace_id, body.verdict)
    return JSONResponse(json.loads(json.dumps(result, default=str)))
