"""The LLMOps page and the trigger forms in a real browser (Debian chromium driven by Playwright)
against `airflow standalone` on this project (scripts/ui.sh), with the state store, embedded
Chroma and the bundled model prepared by the real library calls, and a real SMTP catcher. Last, the
review queue: a planted failing production trace is reviewed through the page's form into the
reviewed golden set and the audit log."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select

from tests.conftest import ROOT, SmtpServer, free_port, start_ui

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RAGOPS_TEST_ARTIFACTS", ROOT / "test-artifacts"))  # screenshots
SHIPPED = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text()
CONFIG = """
alerts:
  from_email: ragops@test.local
  send_attempts: 1
  recipients:
    default: [oncall@test.local]
eval:
  semantic_metrics: false
  bootstrap_samples: 500
gates:
  default:
    thresholds: {hit_rate@5: 0.8, faithfulness: 0.8}
    non_regression: {metrics: [answer_f1, refusal_accuracy, hit_rate@5], margin: 0.02}
    budget: {latency_p95_ms: 60000, cost_per_1k_usd: 1.0}
drift:
  sample_size: 200
indexes:
  docs:
    golden: include/eval/golden/docs.jsonl
"""


def api(base: str, path: str, token: str | None = None, method: str = "GET", body: dict | None = None,
        headers: dict | None = None) -> tuple[int, dict]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, method=method, headers=h,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, embedder):
    """State prepared with the library (ingest, prompts, an eval run, a drift check), then
    `airflow standalone` through scripts/ui.sh on a free port, stopped with SIGINT at the end."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs it with apt-get (Debian package chromium)")
    from ragops import registry, state
    from ragops.config import load_settings
    from ragops.drift.checks import run_check
    from ragops.evaluation.runner import run_eval
    from ragops.indexing import sync

    tmp = tmp_path_factory.mktemp("llmops")
    prompts = tmp / "prompts" / "rag_answer"
    prompts.mkdir(parents=True)
    (prompts / "v1.yaml").write_text(SHIPPED)
    v2 = (SHIPPED.replace("version: 1", "version: 2").replace(
        "message: First version.", "message: Top chunk only <b>bold</b>.").replace("top_k: 5", "top_k: 1"))
    (tmp / "ragops.yaml").write_text(CONFIG)
    smtp = SmtpServer().start()
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(tmp / "airflow"), RAGOPS_DATA_DIR=str(tmp / "data"),
               RAGOPS_CONFIG=str(tmp / "ragops.yaml"), RAGOPS_PROMPTS_DIR=str(prompts.parent),
               RAGOPS_UI_PORT=str(port), AIRFLOW_CONN_SMTP_DEFAULT=smtp.connection_json())
    saved = {k: os.environ.get(k) for k in ("RAGOPS_DATA_DIR", "RAGOPS_CONFIG", "RAGOPS_PROMPTS_DIR")}
    os.environ.update({k: env[k] for k in saved})
    settings = load_settings()
    state.upgrade(settings.state_db_url)
    sync(settings, str(ROOT / "include" / "corpus"), "docs", trigger="test", embedder=embedder)
    registry.sync(settings, "test")  # v1 is production
    (prompts / "v2.yaml").write_text(v2)
    registry.sync(settings, "test")  # v2 waits for a gate
    run_eval(settings, None, "rag_answer@production", "docs", trigger="test", purpose="nightly")
    run_check(settings, "docs", checks=["corpus", "documents"], check_id="ui-drift-1", embedder=embedder)
    proc, password = start_ui(env)
    try:
        base = f"http://127.0.0.1:{port}"
        _, tok = api(base, "/auth/token", method="POST", body={"username": "admin", "password": password})
        for _ in range(180):  # the dag-processor parses dags/ shortly after start
            status, body = api(base, "/api/v2/dags?limit=50", tok["access_token"])
            if status == 200 and {"promote_prompt", "check_drift"} <= {d["dag_id"] for d in body["dags"]}:
                break
            time.sleep(1)
        yield {"base": base, "password": password, "token": tok["access_token"], "settings": settings, "smtp": smtp}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        smtp.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def browser(airflow):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{airflow['base']}/auth/login?next=%2F")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", airflow["password"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{airflow['base']}/")
        yield page
        b.close()


def test_the_plugin_refuses_anonymous_and_cross_site_requests(airflow) -> None:
    base = airflow["base"]
    for path in ("/ragops/", "/ragops/api/overview", "/ragops/eval/x", "/ragops/drift/ui-drift-1/report"):
        status, body = api(base, path)
        assert status == 401, (path, status, body)
    status, _ = api(base, "/ragops/api/trigger/check_drift", method="POST", body={"index": "docs"})
    assert status == 401
    # signed in, but without the page's header (what a forged cross-site form would send)
    status, body = api(base, "/ragops/api/trigger/check_drift", airflow["token"], method="POST", body={"index": "docs"})
    assert status == 403 and "X-Ragops-Request" in body["detail"]
    # only the page's own actions and Params
    status, body = api(base, "/ragops/api/trigger/ingest_documents", airflow["token"], method="POST",
                       body={"source": "/etc"}, headers={"X-Ragops-Request": "1"})
    assert status == 400 and "cannot start ingest_documents" in body["detail"]
    status, body = api(base, "/ragops/api/trigger/rebuild_index", airflow["token"], method="POST",
                       body={"index": "docs", "force": True}, headers={"X-Ragops-Request": "1"})
    assert status == 400 and "force" in body["detail"]


def test_page_shows_the_state_store(airflow, browser) -> None:
    from ragops.overview import overview

    data = overview(airflow["settings"])
    status, api_data = api(airflow["base"], "/ragops/api/overview", airflow["token"])
    assert status == 200 and api_data["indexes"][0]["live"] == data["indexes"][0]["live"] == "docs__v1"
    page = browser
    page.goto(f"{airflow['base']}/plugin/llmops")
    page.get_by_role("link", name="LLMOps").first.wait_for()  # the nav entry the plugin adds
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="ragops LLMOps").wait_for(timeout=60000)
    text = frame.locator("body").inner_text()
    assert "serving docs__v1" in text and f"{data['indexes'][0]['chunks']} chunks" in text
    # the live version the first sync created: who built it and its chunks (they were empty cells)
    live_row = frame.locator("tr", has_text="docs__v1").first.inner_text()
    assert "ingest (first sync)" in live_row and str(data["indexes"][0]["chunks"]) in live_row, live_row
    strip = frame.locator(".strip").inner_text()  # status at a glance
    assert "last ingest: docs" in strip and "last nightly: success" in strip and "paused DAGs: " in strip, strip
    assert data["status"]["last_nightly"]["run_id"] == data["eval"]["runs"][0]["run_id"]
    # the prompts table: every column has a heading, the status is shown once
    assert "version\taliases\tstatus\tauthor\tmessage\tregistered" in text
    # DAGs are paused at creation here: the page says so, and what unpausing would start
    paused = frame.locator(".paused").inner_text()
    assert "check_drift is paused" in paused and "latest interval" in paused, paused
    assert "production → v1" in text
    assert data["eval"]["runs"][0]["run_id"] in text
    assert "ui-drift-1" in text and "corpus: baseline" in text
    for a in data["audit"][:5]:
        assert a["action"] in text
    assert "Top chunk only <b>bold</b>." in text  # shown as text: the markup was escaped
    assert frame.locator("b", has_text="bold").count() == 0
    frame.locator(".chart canvas").first.wait_for()  # the trend charts (vendored uPlot, served by the plugin)
    assert frame.locator(".chart").count() == 2 * len(data["eval"]["charts"])  # retrieval and answer metrics
    # drill-down: one run, its questions, their retrieved contexts
    run_id = data["eval"]["runs"][0]["run_id"]
    frame.get_by_role("link", name=run_id).click()
    frame.get_by_role("heading", name=f"Evaluation {run_id}").wait_for()
    frame.locator("details").first.click()
    assert frame.locator("div.ctx").first.inner_text().strip()
    # an eval run that is not there: a page that says so and leads back, not raw JSON
    resp = page.goto(f"{airflow['base']}/ragops/eval/no-such-run")
    assert resp is not None and resp.status == 404
    assert "unknown eval run 'no-such-run'" in page.locator("body").inner_text()
    page.get_by_role("link", name="LLMOps page").click()
    page.get_by_role("heading", name="ragops LLMOps").wait_for()
    # side-by-side diff of the two prompt versions
    page.goto(f"{airflow['base']}/ragops/prompts/rag_answer/diff?a=1&b=2")
    body = page.locator("body").inner_text().replace("\xa0", " ")  # HtmlDiff keeps spaces as nbsp
    assert "rag_answer@1" in body and "rag_answer@2" in body and "top_k: 1" in body


def test_every_trigger_form_opens_valid(airflow, browser) -> None:
    page = browser
    for dag in ("ingest_documents", "nightly_eval", "rebuild_index", "promote_prompt", "check_drift", "sync_prompts"):
        page.goto(f"{airflow['base']}/dags/{dag}")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        button = dialog.get_by_role("button", name="Trigger")
        button.wait_for()
        if dag != "sync_prompts":  # the only DAG without Params
            dialog.get_by_text("Run Parameters").wait_for()
        page.wait_for_timeout(500)  # the form validates as it renders
        assert button.is_enabled(), f"{dag}: the trigger form opens invalid"
        page.keyboard.press("Escape")


def wait_for_run(airflow, dag_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, body = api(airflow["base"], f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1", airflow["token"])
        runs = body.get("dag_runs") or []
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(3)
    pytest.fail(f"no finished {dag_id} run after {timeout}s: {body}")


def test_promote_through_the_trigger_form_then_the_page_shows_it(airflow, browser) -> None:
    from ragops import registry

    page = browser
    page.goto(f"{airflow['base']}/dags/promote_prompt")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=element_candidate_version]").fill("2")
    dialog.get_by_role("button", name="Trigger").click()
    run = wait_for_run(airflow, "promote_prompt")
    assert run["state"] == "success" and run["conf"]["candidate_version"] == 2
    assert registry.resolve(airflow["settings"], "rag_answer", "production") == 2
    page.goto(f"{airflow['base']}/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="ragops LLMOps").wait_for(timeout=60000)
    text = frame.locator("body").inner_text()
    assert "production → v2" in text
    assert "prompt_promoted" in text and "prompt_gate_evaluated" in text  # the audit log
    # who: the person who started the run in Airflow's trigger form, and the run it came from
    promoted = frame.locator("tr", has_text="prompt_promoted").first.inner_text()
    assert promoted.split("\t")[1].startswith("admin"), promoted
    assert f"promote_prompt · {run['dag_run_id']}" in promoted, promoted
    assert "DagRunType" not in text
    assert any("[PROMOTED]" in m["Subject"] for m in airflow["smtp"].messages)


def test_a_page_action_starts_a_dag_run_from_inside_airflows_frame(airflow, browser) -> None:
    """Through Airflow's navigation item, as a user gets there: the page runs in Airflow's sandboxed
    frame, where confirm() is ignored and links to the top window need care."""
    page = browser
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    before = set(run["dag_run_id"] for run in api(airflow["base"], "/api/v2/dags/check_drift/dagRuns?limit=100",
                                                     airflow["token"])[1]["dag_runs"])
    page.goto(f"{airflow['base']}/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="ragops LLMOps").wait_for(timeout=60000)
    # cancel: nothing is sent
    frame.get_by_role("button", name="Check drift of docs now").click()
    confirm = frame.get_by_role("dialog", name="confirm")
    assert "This starts a run of check_drift" in confirm.inner_text()
    confirm.get_by_role("button", name="Cancel").click()
    assert not confirm.is_visible()
    # confirm: the run starts
    frame.get_by_role("button", name="Check drift of docs now").click()
    confirm.get_by_role("button", name="Start the run").click()
    frame.locator("#msg a").wait_for(timeout=60000)
    msg = frame.locator("#msg").inner_text()
    assert "started check_drift run" in msg and "paused" in msg, msg
    run_id = msg.split("run ", 1)[1].split(" ")[0].rstrip(":")
    runs = api(airflow["base"], "/api/v2/dags/check_drift/dagRuns?limit=100", airflow["token"])[1]["dag_runs"]
    assert {r["dag_run_id"] for r in runs} - before == {run_id}  # exactly one run, from the confirmation
    status, run = api(airflow["base"], f"/api/v2/dags/check_drift/dagRuns/{quote(run_id, safe='')}", airflow["token"])
    assert status == 200 and run["conf"] == {"index": "docs"} and "LLMOps" in (run.get("note") or "")
    # "open the run" leaves the frame: the whole window shows Airflow's page of that run
    frame.get_by_role("link", name="open the run").click()
    page.wait_for_url(f"**/dags/check_drift/runs/{quote(run_id, safe='')}**", timeout=60000)
    assert dialogs == [], dialogs  # no browser dialog was needed (the frame would ignore it)


# ---- the review queue (shares this module's Airflow and browser: one Airflow start for the page tests)

def plant_failing_trace(settings) -> tuple[str, str, list[str]]:
    """A disliked production trace whose answer has a claim its chunks do not support."""
    from ragops import state

    tid = uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, "docs")
        docs = list(s.execute(select(state.Document.doc_id).where(state.Document.index_name == "docs")
                              .order_by(state.Document.doc_id).limit(2)).scalars())
        chunks = [{"id": f"c{i}", "doc_id": d, "score": 0.5 - i / 10, "n": i + 1, "title": d,
                   "text": f"Passage {i + 1} of {d} <b>as stored</b>."} for i, d in enumerate(docs)]
        question = f"How does ragops swap an index version? ({tid[:6]})"
        s.add(state.Trace(trace_id=tid, ts=now, hour=now.replace(minute=0, second=0, microsecond=0),
                          index_name="docs", index_version=live.version, prompt_name="rag_answer", prompt_version=1,
                          question=question, answer="It moves an alias [1]. It also emails the CEO [2].",
                          chunks=chunks, feedback=-1.0, feedback_comment="nobody e-mails the CEO <script>x</script>"))
        s.add(state.TraceEval(trace_id=tid, hallucinated=1, faithfulness=0.5, detail={"unsupported_claims": [
            {"claim": "It also emails the CEO [2].", "reason": "no passage supports it"}]}))
    return tid, question, docs


def test_a_reviewer_turns_a_failing_trace_into_a_golden_question(airflow, browser) -> None:
    from ragops import state
    from ragops.evaluation.datasets import load_dataset

    settings, base = airflow["settings"], airflow["base"]
    tid, question, docs = plant_failing_trace(settings)
    # the route needs sign-in and the page's header, like the page's other actions
    body = {"trace_id": tid, "verdict": "not_a_problem"}
    assert api(base, "/ragops/api/review", method="POST", body=body)[0] == 401
    status, refused = api(base, "/ragops/api/review", airflow["token"], method="POST", body=body)
    assert status == 403 and "X-Ragops-Request" in refused["detail"]
    status, queue = api(base, "/ragops/api/review?index=docs", airflow["token"])
    assert status == 200 and tid in [i["trace_id"] for i in queue["items"]]

    page = browser
    page.goto(f"{base}/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="Review queue").wait_for(timeout=60000)
    item = frame.locator(f"#review-{tid}")
    text = item.inner_text()
    assert question in text and "nobody e-mails the CEO <script>x</script>" in text  # shown as text
    assert item.locator("mark.bad").inner_text() == "It also emails the CEO [2]."  # the unsupported claim
    item.get_by_text("retrieved contexts (2)").click()
    assert "as stored" in item.locator("div.ctx").first.inner_text()
    assert "rag_answer@1" in frame.locator("#production ~ div.scroll table").first.inner_text()  # production by version

    item.locator("textarea[name=reference_answer]").fill("It moves the index alias in one transaction.")
    item.locator("input[name=relevant]").fill(docs[0])
    item.get_by_role("button", name="Save the correct answer").click()
    confirm = frame.get_by_role("dialog", name="confirm")
    assert "reviewed golden set of docs" in confirm.inner_text()
    confirm.get_by_role("button", name="Save the review").click()
    frame.locator("#msg", has_text="reviewed").wait_for(timeout=30000)
    msg = frame.locator("#msg").inner_text()
    qid = f"prod-{tid[:12]}"
    assert f"question {qid} is in" in msg, msg
    assert "reviewed: answer by admin" in item.inner_text()

    path = settings.reviewed_dir / "docs.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [ln for ln in lines if ln["id"] == qid] == [{
        "id": qid, "question": question, "reference_answer": "It moves the index alias in one transaction.",
        "relevant_doc_ids": [docs[0]], "answerable": True, "tags": ["production"]}]
    with state.session_scope(settings.state_db_url) as s:
        known = set(s.execute(select(state.Document.doc_id).where(state.Document.index_name == "docs")).scalars())
        entries = [a for a in s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "trace_reviewed"))
                   .scalars() if a.detail.get("trace_id") == tid]
        review = s.get(state.TraceReview, tid)
    load_dataset(path, known_doc_ids=known)  # what `ragops eval validate` accepts
    assert len(entries) == 1 and entries[0].actor == "admin" and entries[0].index_name == "docs"
    assert entries[0].detail["question_id"] == qid and entries[0].detail["relevant"] == [docs[0]]
    assert review.reviewer == "admin" and review.verdict == "answer"
    # the same review again (a retried request) adds nothing
    status, again = api(base, "/ragops/api/review", airflow["token"], method="POST",
                        body={"trace_id": tid, "verdict": "answer", "relevant": [docs[0]],
                              "reference_answer": "It moves the index alias in one transaction."},
                        headers={"X-Ragops-Request": "1"})
    assert status == 200 and again["already_reviewed"], again
    assert len(path.read_text().splitlines()) == len(lines)
    status, queue = api(base, "/ragops/api/review?index=docs", airflow["token"])
    assert tid not in [i["trace_id"] for i in queue["items"]]


def test_the_trend_charts_filter_hover_and_open_a_run(airflow, browser) -> None:
    """After the promotion: nightly and gate runs on one time axis. Nightly runs by default, every
    run after the filter changes, values on hover, a click opens the run; no script errors."""
    status, data = api(airflow["base"], "/ragops/api/overview", airflow["token"])
    assert status == 200
    points = data["eval"]["charts"]["docs · docs.jsonl"]["points"]
    nightly = [p for p in points if p["purpose"] == "nightly"]
    assert nightly and len(points) > len(nightly)  # the gate's runs are there too
    assert any(e["kind"] == "promotion" for e in data["eval"]["events"])
    page = browser
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{airflow['base']}/plugin/llmops")
    frame = page.frame_locator("iframe")
    chart = frame.locator(".chart[data-group=retrieval]").first
    chart.locator("canvas").first.wait_for(timeout=60000)
    assert chart.get_attribute("data-points") == str(len(nightly))
    frame.locator("#chart-purpose").select_option("all")
    assert chart.get_attribute("data-points") == str(len(points))
    frame.locator("#chart-prompt").select_option("rag_answer@2")
    assert chart.get_attribute("data-points") == str(sum(p["prompt"] == "rag_answer@2" for p in points))
    frame.locator("#chart-prompt").select_option("all")
    # hover the newest point: its run and its values
    over = chart.locator(".u-over")
    box = over.bounding_box()
    over.hover(position={"x": box["width"] - 1, "y": box["height"] / 2})
    hover = frame.locator(".chart[data-group=retrieval] + p.hover").first
    newest = points[-1]
    assert newest["run_id"] in hover.inner_text(), hover.inner_text()
    legend = chart.locator(".u-legend").inner_text()
    assert f"{newest['metrics']['hit_rate@5']:.3f}" in legend, legend
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "llmops-charts.png"))
    over.click(position={"x": box["width"] - 1, "y": box["height"] / 2})
    frame.get_by_role("heading", name=f"Evaluation {newest['run_id']}").wait_for(timeout=30000)
    assert errors == [], errors


# ---- comparing two eval runs (after the promotion above: its gate decision is in the prompt's history)


def test_compare_the_gate_decision_from_the_prompt_history(airflow, browser) -> None:
    """From the prompt's history (inside Airflow's frame), the gate decision's two runs side by
    side: the figures are the JSON API's, the worst regression first with both answers."""
    from urllib.parse import parse_qs, urlparse

    page = browser
    page.goto(f"{airflow['base']}/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="ragops LLMOps").wait_for(timeout=60000)
    assert frame.locator("#compare-form select[name=a] option").count() >= 2  # any two runs, from the evaluations
    link = frame.locator("a.compare-gate").first
    ids = parse_qs(urlparse(link.get_attribute("href")).query)
    a, b = ids["a"][0], ids["b"][0]
    status, data = api(airflow["base"], f"/ragops/api/compare?a={quote(a)}&b={quote(b)}", airflow["token"])
    assert status == 200 and data["a"]["prompt"] == "rag_answer@1" and data["b"]["prompt"] == "rag_answer@2"
    assert "output_dir" not in data["a"]
    link.click()
    frame.get_by_role("heading", name=f"{b} against {a}").wait_for(timeout=60000)
    text = frame.locator("body").inner_text()
    for m in data["metrics"]:
        assert m["metric"] in text
    c = data["counts"]
    assert f"{c['paired']} paired: {c['worse']} worse" in text and c["worse"] >= 1, c  # top_k 5 -> 1 hurts some
    worst = data["questions"][0]
    first = frame.locator("details.q").first
    assert first.get_attribute("id") == f"q-{worst['id']}" and "worse" in first.get_attribute("class")
    first.locator("summary").click()
    both = first.locator(".sbs").inner_text()
    assert worst["a"]["answer"][:60] in both and worst["b"]["answer"][:60] in both, both
    assert both.count("[1]") >= 2  # each side shows its contexts
    # filters: only the questions that got worse, then a search
    frame.locator("#only-worse").check()
    assert frame.locator("#q-shown").inner_text() == str(c["worse"])
    assert frame.locator("details.q:visible").count() == c["worse"]
    frame.locator("#q-search").fill(worst["id"])
    assert frame.locator("details.q:visible").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "llmops-compare.png"), full_page=True)
    # the candidate run's drill-down links the promote_prompt run and its task log (top window), and its report
    frame.get_by_role("link", name=b).first.click()
    frame.get_by_role("heading", name=f"Evaluation {b}").wait_for(timeout=30000)
    assert "/dags/promote_prompt/runs/" in frame.locator("a.airflow-run").get_attribute("href")
    assert frame.locator("a.airflow-task").get_attribute("href").endswith("/tasks/evaluate")
    frame.get_by_role("link", name="report.html").click()
    frame.locator("body", has_text=b).wait_for(timeout=30000)
    # a run that is not there: a page that says so
    page.goto(f"{airflow['base']}/ragops/compare?a={quote(a)}&b=no-such-run")
    assert "unknown eval run 'no-such-run'" in page.locator("body").inner_text()


# ---- issue 22: filters and paging, every link type, a production trace, the page's looks (one Airflow start)


def llmops_frame(page):
    """The page's frame inside Airflow's UI (for evaluating script in it)."""
    for _ in range(100):
        # not the main frame: Airflow's own address for the view reads /plugin/llmops/ragops/
        frame = next((f for f in page.frames if f is not page.main_frame and "/ragops/" in f.url), None)
        if frame is not None:
            return frame
        page.wait_for_timeout(100)
    pytest.fail(f"no LLMOps frame in {[f.url for f in page.frames]}")


def open_llmops(airflow, page):
    page.goto(f"{airflow['base']}/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="ragops LLMOps").wait_for(timeout=60000)
    return frame


def test_filters_paging_and_every_link_type_inside_airflows_frame(airflow, browser) -> None:
    """After the promotion and the drift check above: the audit log filtered by action and paged
    through its "next page" link, then each kind of link followed to the run or page it names,
    and the way back, all inside Airflow's frame; an Airflow run link last (it leaves the frame)."""
    page, base, token = browser, airflow["base"], airflow["token"]
    status, data = api(base, "/ragops/api/overview?per_page=5", token)
    assert status == 200
    total = len(api(base, "/ragops/api/overview?per_page=200", token)[1]["audit"])
    assert total > 5 and data["pages"]["audit"]["next_offset"] == 5, (total, data["pages"])
    frame = open_llmops(airflow, page)
    # filters: rows per table, then an action, through the page's own form
    form = frame.locator("#filters")
    form.locator("select[name=per_page]").select_option("5")
    form.get_by_role("button", name="filter").click()
    frame.locator("select[name=per_page] option[selected]:text-is('5')").wait_for(state="attached", timeout=30000)
    rows = frame.locator("tr[id^=audit-]")
    assert rows.count() == 5
    first_page = {rows.nth(i).get_attribute("id") for i in range(5)}
    frame.locator("a.next-audit").click()
    frame.locator("p.pager", has_text="rows 6").first.wait_for(timeout=30000)
    second_page = {rows.nth(i).get_attribute("id") for i in range(rows.count())}
    assert second_page and not first_page & second_page  # older entries, none repeated
    assert second_page == {f"audit-{a['id']}" for a in api(
        base, "/ragops/api/overview?per_page=5&audit=5", token)[1]["audit"]}
    form.locator("select[name=action]").select_option("prompt_gate_evaluated")
    form.get_by_role("button", name="filter").click()
    frame.locator("select[name=action] option[selected]", has_text="prompt_gate_evaluated").wait_for(state="attached")
    actions = frame.locator("tr[id^=audit-] td:nth-child(3)").all_inner_texts()
    assert actions and set(actions) == {"prompt_gate_evaluated"}, actions
    # audit entry -> the pair it evaluated, compared
    gate = [a for a in api(base, "/ragops/api/overview?action=prompt_gate_evaluated", token)[1]["audit"]
            if (a["detail"].get("runs") or {}).get("candidate")][0]
    cand, prod = gate["detail"]["runs"]["candidate"], gate["detail"]["runs"]["production"]
    frame.locator(f"#audit-{gate['id']} a.to-compare").click()
    frame.get_by_role("heading", name=f"{cand} against {prod}").wait_for(timeout=30000)
    # audit entry -> its evidence page -> the candidate's eval run
    open_llmops(airflow, page)
    llmops_frame(page).goto(f"{base}/ragops/?action=prompt_gate_evaluated")
    frame.locator(f"#audit-{gate['id']} a.audit-evidence").click()
    frame.get_by_role("heading", name=f"Audit entry {gate['id']}: prompt_gate_evaluated").wait_for(timeout=30000)
    frame.locator("a.to-eval", has_text=cand).click()
    frame.get_by_role("heading", name=f"Evaluation {cand}").wait_for(timeout=30000)
    # history row -> gate evidence (its checks) -> both eval runs
    open_llmops(airflow, page)
    frame.locator("#prompt-rag_answer ~ div a.gate-evidence").first.click()
    frame.get_by_role("heading", name="rag_answer: promoted v1 → v2").wait_for(timeout=30000)
    evidence = frame.locator("body").inner_text()
    assert "Gate evidence" in evidence and "checks" in evidence and "hit_rate@5" in evidence
    frame.locator("a.to-eval", has_text=prod).first.click()
    frame.get_by_role("heading", name=f"Evaluation {prod}").wait_for(timeout=30000)
    # eval run -> report.html -> back to the drill-down
    frame.get_by_role("link", name="report.html").click()
    frame.locator("a.back-to-run").click()
    frame.get_by_role("heading", name=f"Evaluation {prod}").wait_for(timeout=30000)
    # drift check -> its report -> back to the check's row
    open_llmops(airflow, page)
    frame.locator("#drift-ui-drift-1 a.drift-report").click()
    frame.locator("a.back-to-check").click()
    frame.locator("#drift-ui-drift-1").wait_for(timeout=30000)
    assert "index=docs" in llmops_frame(page).url
    # eval run (from the evaluations table) -> its Airflow DAG run, in the whole window
    frame = open_llmops(airflow, page)
    frame.locator(f"a.run[title='{cand}']").first.click()
    frame.get_by_role("heading", name=f"Evaluation {cand}").wait_for(timeout=30000)
    frame.locator("a.airflow-run").click()
    page.wait_for_url("**/dags/promote_prompt/runs/**", timeout=60000)


def test_a_bias_test_from_the_page_to_its_tables_its_audit_entry_and_back(airflow, browser) -> None:
    """A kept bias test (one group refused far more often: a flagged gap) is listed in the page's Bias
    tests section; its link opens the per-group tables inside Airflow's frame with the GAP badge on
    the flagged cell only and the not-applicable attribute saying why; its audit entry links back to
    the same tables; the page fits 1280 px."""
    from ragops.evaluation.bias import record
    from tests.unit.test_bias_report import EVIL, make_result

    page, base = browser, airflow["base"]
    result = make_result()
    tid = record(airflow["settings"], result, actor="test")
    frame = open_llmops(airflow, page)
    row = frame.locator(f"#bias-{tid}")
    row.wait_for(timeout=30000)
    cells = row.locator("td").all_inner_texts()
    assert cells[2:6] == ["rag_answer@2", "docs", "gap beyond noise", str(len(result["attributes"][0]["flagged"]))]
    row.locator("a.bias-test").click()
    frame.get_by_role("heading", name=f"Bias test {tid}").wait_for(timeout=30000)
    women = frame.locator("tr[data-group='women']")
    assert women.locator("td[data-metric='refusal_rate'] .bias-badge").inner_text().strip() == "GAP"
    assert frame.locator("tr[data-group] td[data-metric='answer_words'] .bias-badge", has_text="GAP").count() == 0
    text = frame.locator("body").inner_text()
    assert "not applicable" in text and "no question mentions one of its terms" in text
    # the example answers (folded away) hold a script tag as text, never as an element
    assert EVIL in frame.locator("body").text_content() and frame.locator("script", has_text="alert('x')").count() == 0
    page.set_viewport_size({"width": 1280, "height": 900})
    try:
        wide = llmops_frame(page).evaluate("() => [document.documentElement.scrollWidth, "
                                           "document.documentElement.clientWidth]")
        assert wide[0] <= wide[1], wide
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "llmops-bias.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
    frame.locator("a.bias-audit").click()
    frame.get_by_role("heading", name="bias_tested").wait_for(timeout=30000)
    frame.locator("a.to-bias").click()
    frame.get_by_role("heading", name=f"Bias test {tid}").wait_for(timeout=30000)
    frame.locator("a.back-to-bias").click()
    frame.locator(f"#bias-{tid}").wait_for(timeout=30000)
    assert llmops_frame(page).url.startswith(f"{base}/ragops/")


def test_review_a_production_trace_and_the_page_fits_1280_px(airflow, browser) -> None:
    """A failing production trace opened from the review queue and from the production table's
    traces; at 1280 px no page is wider than the window, links take keyboard focus visibly, and
    under a dark colour scheme the page is dark (unless Airflow's own mode says light)."""
    settings, base = airflow["settings"], airflow["base"]
    tid, question, docs = plant_failing_trace(settings)
    page = browser
    page.set_viewport_size({"width": 1280, "height": 900})
    frame = open_llmops(airflow, page)
    frame.locator(f"#review-{tid} a.open-trace").click()
    frame.get_by_role("heading", name=f"Trace {tid}").wait_for(timeout=30000)
    text = frame.locator("body").inner_text()
    assert question in text and "nobody e-mails the CEO <script>x</script>" in text  # feedback, as text
    assert frame.locator("mark.bad").inner_text() == "It also emails the CEO [2]."  # the unsupported claim
    assert "Passage 1 of" in text and "as stored" in text and "disliked" in text
    status, t = api(base, f"/ragops/api/trace/{tid}", airflow["token"])
    assert status == 200 and t["question"] == question and t["pending_review"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "llmops-trace.png"), full_page=True)
    # the production table's traces of that version lead to the same page
    frame.get_by_role("link", name="production", exact=True).click()
    frame.locator("a.version-traces[href*='rag_answer%401']").click()  # the planted trace's version
    frame.get_by_role("heading", name="Production traces").wait_for(timeout=30000)
    frame.locator(f"a.trace[title='{tid}']").click()
    frame.get_by_role("heading", name=f"Trace {tid}").wait_for(timeout=30000)
    # 1280 px: nothing widens a page (long ids and evidence wrap or scroll inside their box)
    run_id = api(base, "/ragops/api/overview", airflow["token"])[1]["eval"]["runs"][0]["run_id"]
    for path in ("", f"eval/{quote(run_id, safe='')}", f"trace/{tid}", "audit/1"):
        llmops_frame(page).goto(f"{base}/ragops/{path}")
        wide = llmops_frame(page).evaluate("() => [document.documentElement.scrollWidth, "
                                           "document.documentElement.clientWidth]")
        assert wide[0] <= wide[1], (path, wide)
    # keyboard: Tab reaches a link and shows where the focus is
    frame = open_llmops(airflow, page)
    frame.locator("nav a").first.press("Tab")  # a keyboard move from the first link: the focus ring shows
    focused = frame.locator("nav a:focus")
    assert focused.count() == 1 and focused.inner_text() == "Prompts"
    outline = focused.evaluate("(a) => getComputedStyle(a).outlineStyle")
    assert outline not in ("", "none"), outline
    # dark mode: the browser's colour scheme, unless Airflow's own mode is detected
    page.emulate_media(color_scheme="dark")
    frame = open_llmops(airflow, page)
    theme, bg = llmops_frame(page).evaluate("() => [document.documentElement.dataset.theme || '', "
                                            "getComputedStyle(document.body).backgroundColor]")
    if theme != "light":
        assert bg == "rgb(16, 24, 40)", (theme, bg)
    page.screenshot(path=str(ARTIFACTS / "llmops-dark.png"))
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1400, "height": 1000})
