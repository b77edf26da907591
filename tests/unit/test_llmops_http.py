"""The LLMOps page's routes in-process (FastAPI's TestClient on the plugin's app, Airflow's sign-in
replaced by a fixed user: tests/e2e/test_access.py covers it) on a real SQLite state store filled
with eval runs, prompt history, drift checks, audit entries and production traces, as the
library's writers store them:

* the tables filter by time range, index, prompt and action on the server and page with a
  "next page" link that carries the filters; the JSON API pages the same way;
* every link type lands on a page that exists: audit entry -> eval run, drift report, trace,
  prompt diff; history row -> gate evidence and both eval runs; drift and eval reports -> back;
* the drill-down shows operations (latency, tokens, cost, refusals), the per-tag table and links
  each ``[n]`` to its passage; no server path anywhere in the HTML or the JSON;
* production per version and day, the traces list and a trace's page (question, contexts,
  answer, claims, feedback).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
N_RUNS = 30
N_AUDIT = 40


class _User:
    role = "Admin"

    def get_name(self) -> str:
        return "alice"


def _seed(settings: Any, folder: Path) -> dict[str, Any]:
    """Rows as ragops' writers leave them: run folders with report.html, drift reports on disk."""
    from ragops import state

    ids: dict[str, Any] = {}
    with state.session_scope(settings.state_db_url) as s:
        for i in range(N_RUNS):
            run_id = f"run-{i:02d}-{'x' * 30}"
            out = folder / "eval" / run_id
            out.mkdir(parents=True)
            (out / "report.html").write_text(f"<html><body><h1>report of {run_id}</h1></body></html>")
            s.add(state.EvalRun(
                run_id=run_id, status="success", started_at=T0 + dt.timedelta(hours=i),
                index_name="docs" if i % 2 == 0 else "other", index_version=1, prompt_name="rag_answer",
                prompt_version=1 if i < 20 else 2, prompt_hash="h", dataset_path=str(folder / "golden.jsonl"),
                dataset_hash="d", n_questions=1, generator="extractive:x", output_dir=str(out),
                config={"purpose": "nightly" if i % 3 else "candidate"},
                metrics={"metrics": {"hit_rate@5": 0.5 + i / 100, "faithfulness": 0.9},
                         "operations": {"latency_ms_p50": 120.0, "latency_ms_p95": 340.0, "tokens_in": 900,
                                        "tokens_out": 80, "cost_this_run_usd": 0.0123},
                         "counts": {"questions": 2, "ok": 2, "errors": 0, "refused": 1},
                         "by_tag": {"billing": {"n": 1, "hit_rate@5": 1.0}, "sso": {"n": 1, "hit_rate@5": 0.0}}}))
        last = f"run-{N_RUNS - 1:02d}-{'x' * 30}"
        s.flush()  # the runs before their results (foreign key)
        s.add(state.EvalResult(run_id=last, question_id="q1", ok=1, payload={
            "id": "q1", "question": "How is SSO set up?", "answer": "Use the admin panel [1]. Then call sales [2].",
            "reference_answer": "admin panel", "relevant_doc_ids": ["sso.md"], "tags": ["sso"],
            "retrieved_docs": [{"doc_id": "sso.md"}, {"doc_id": "x.md"}],
            "metrics": {"hit_rate@5": 1.0, "faithfulness": 0.5, "hallucination_rate": 0.5},
            "detail": {"unsupported_claims": [{"claim": "Then call sales [2].", "reason": "no passage", "passage": 2}]},
            "contexts": [{"n": 1, "doc_id": "sso.md", "chunk_id": "c1", "score": 0.9},
                         {"n": 2, "doc_id": "x.md", "chunk_id": "c2", "score": 0.4}]}))
        (folder / "eval" / last / "results.jsonl").write_text(json.dumps({"id": "q1", "contexts": [
            {"chunk_id": "c1", "text": "SSO: open the admin panel."}, {"chunk_id": "c2", "text": "Pricing."}]}) + "\n")
        cand, prod = f"run-{N_RUNS - 1:02d}-{'x' * 30}", f"run-{N_RUNS - 3:02d}-{'x' * 30}"
        s.add(state.PromptEvent(name="rag_answer", alias="production", action="promoted", from_version=1,
                                to_version=2, actor="admin (airflow promote_prompt manual__1)", reason="gate passed",
                                evidence={"candidate_run": cand, "production_run": prod, "passed": True,
                                          "dataset": str(folder / "golden.jsonl"),
                                          "checks": [{"metric": "hit_rate@5", "candidate": 0.79, "production": 0.77,
                                                      "passed": True}]},
                                created_at=T0 + dt.timedelta(hours=N_RUNS)))
        report = folder / "drift" / "d1.html"
        report.parent.mkdir(parents=True)
        report.write_text("<html><body><h1>drift report d1</h1></body></html>")
        s.add(state.DriftCheck(check_id="drift-1", index_name="docs", status="breach", started_at=T0,
                               report_path=str(report), breaches=["gaps"],
                               results={"summary": {"checks": {"gaps": {"status": "breach"}}}}))
        for i in range(N_AUDIT):
            action = ("drift_breach", "trace_reviewed", "index_swapped", "prompt_gate_evaluated")[i % 4]
            detail: dict[str, Any] = {"drift_breach": {"check_id": "drift-1", "report": str(report)},
                                      "trace_reviewed": {"trace_id": "t" * 32, "golden_path": str(folder / "r.jsonl")},
                                      "index_swapped": {"live": "docs__v2"},
                                      "prompt_gate_evaluated": {"prompt": "rag_answer", "candidate": 2, "production": 1,
                                                                "runs": {"candidate": cand, "production": prod}}}[action]
            s.add(state.AuditEntry(at=T0 + dt.timedelta(hours=i), actor="alice", action=action,
                                   index_name="docs" if i % 2 == 0 else "other", detail=detail))
        now = state.utcnow()
        for k in range(3):
            tid = f"{k}" * 32
            s.add(state.Trace(trace_id=tid, ts=now - dt.timedelta(hours=k), hour=(now - dt.timedelta(hours=k)).replace(
                minute=0, second=0, microsecond=0), index_name="docs", index_version=1, prompt_name="rag_answer",
                prompt_version=2, question=f"Question {k} <b>bold</b>?", answer="Open the panel [1]. Call the CEO [2].",
                refused=0, tokens_in=100, tokens_out=20, latency_ms=250.0 + k, latency_bucket=32, cost_usd=0.001,
                chunks=[{"n": 1, "doc_id": "sso.md", "score": 0.9, "text": "Open the panel."},
                        {"n": 2, "doc_id": "x.md", "score": 0.3, "text": "Pricing."}],
                feedback=-1.0 if k == 0 else None, feedback_comment="wrong" if k == 0 else None))
            s.add(state.TraceEval(trace_id=tid, hallucinated=1 if k == 0 else 0, faithfulness=0.5, detail={
                "unsupported_claims": [{"claim": "Call the CEO [2].", "reason": "no passage supports it"}]
                if k == 0 else []}))
    ids.update(last=last, cand=cand, prod=prod, trace="0" * 32, folder=str(folder))
    return ids


@pytest.fixture
def client(settings, tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    from ragops.airflow import llmops

    seeded = _seed(settings, tmp_path / "runs")
    llmops.app.dependency_overrides[llmops.authenticated_user] = lambda: _User()
    try:
        with TestClient(llmops.app) as c:
            c.seeded = seeded
            c.paths = [str(tmp_path), str(settings.data_dir)]
            yield c
    finally:
        llmops.app.dependency_overrides.clear()


def get(client: Any, url: str, status: int = 200) -> Any:
    r = client.get(url, headers={"Accept": "text/html"})
    assert r.status_code == status, (url, r.status_code, r.text[:500])
    return r


def no_paths(client: Any, text: str) -> None:
    for p in client.paths:
        assert p not in text, f"server path {p} shown"


def hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r"href='([^']*)'", html)]


def test_tables_page_with_next_links_that_keep_the_filters(client) -> None:
    data = client.get("/api/overview?per_page=10&index=docs").json()
    assert [a["index"] for a in data["audit"]] == ["docs"] * 10  # filtered on the server, one page
    assert data["pages"]["audit"]["next_offset"] == 10
    page2 = client.get("/api/overview?per_page=10&index=docs&audit=10").json()
    first, second = [a["id"] for a in data["audit"]], [a["id"] for a in page2["audit"]]
    assert min(first) > max(second) and len(second) == N_AUDIT // 2 - 10  # older rows, no overlap, the rest
    assert page2["pages"]["audit"]["next_offset"] is None
    html = get(client, "/?per_page=10&index=docs").text
    nxt = [h for h in hrefs(html) if "audit=10" in h]
    assert nxt and "index=docs" in nxt[0] and "per_page=10" in nxt[0], nxt
    assert "next page" in html and "rows 11" not in html
    assert "rows 11" in get(client, nxt[0].split("#")[0]).text  # the link works and says where it is
    # time range and action: every row within it
    since, until = T0 + dt.timedelta(hours=5), T0 + dt.timedelta(hours=15)
    q = f"since={since.isoformat().replace('+00:00', 'Z')}&until={until.isoformat().replace('+00:00', 'Z')}"
    d = client.get(f"/api/overview?{q}&action=drift_breach").json()
    assert d["audit"] and all(a["action"] == "drift_breach" for a in d["audit"])
    assert all(since <= dt.datetime.fromisoformat(a["at"]) < until for a in d["audit"])
    assert d["eval"]["runs"] and all(since <= dt.datetime.fromisoformat(r["started_at"]).replace(tzinfo=dt.UTC)
                                     < until for r in d["eval"]["runs"])
    runs = client.get("/api/overview?prompt=rag_answer@2").json()["eval"]["runs"]
    assert {r["prompt"] for r in runs} == {"rag_answer@2"} and len(runs) == N_RUNS - 20
    # a bad time: a clear 400 naming the parameter and the form it takes
    r = client.get("/api/overview?since=yesterday")
    assert r.status_code == 400 and "since" in r.json()["detail"] and "2026-11-22" in r.json()["detail"]


def test_every_timestamp_has_its_zone_and_long_ids_keep_their_whole_text(client) -> None:
    html = get(client, "/").text
    times = re.findall(r"<time datetime='([^']*)' title='[^']*'>([^<]*)</time>", html)
    assert len(times) > 20 and all(shown.endswith(" UTC") and "+00:00" in iso for iso, shown in times)
    run = client.seeded["last"]
    assert f"<a class='id run' href='eval/{run}' title='{run}'>{run}</a>" in html  # shortened by CSS, whole in text


def test_links_land_on_the_page_they_name(client) -> None:
    s = client.seeded
    html = get(client, "/?per_page=40").text
    # audit entries: each kind of evidence links what it concerns, and every such link answers 200
    links = {h for h in hrefs(html) if h.startswith(("audit/", "eval/", "drift/", "trace/", "prompts/", "compare?"))}
    assert "drift/drift-1/report" in links and f"trace/{'t' * 32}" in links
    assert f"compare?a={s['prod']}&b={s['cand']}" in links
    assert "prompts/rag_answer/diff?a=1&b=2" in links
    for h in sorted(links):
        expected = 404 if h == f"trace/{'t' * 32}" else 200  # a trace id the audit names but no trace holds
        if h.startswith("prompts/rag_answer/diff"):
            continue  # the diff reads prompt files of this test's prompt folder: tests/e2e covers it
        get(client, "/" + h, expected)
    entry = client.get("/api/overview?action=drift_breach&per_page=1").json()["audit"][0]
    page = get(client, f"/audit/{entry['id']}").text
    assert "href='../drift/drift-1/report'" in page and "drift_breach" in page
    # history row -> its gate evidence (the checks), both eval runs, the pair compared
    row = re.search(r"href='(prompts/rag_answer/history/\d+)' class='gate-evidence'", html)
    assert row, "no gate evidence link in the prompt's history"
    ev = get(client, "/" + row.group(1)).text
    assert f"href='../../../eval/{s['cand']}'" in ev and f"href='../../../eval/{s['prod']}'" in ev
    assert "hit_rate@5" in ev and "<h3>checks</h3>" in ev
    api = client.get("/api/" + row.group(1)).json()
    assert {link["kind"] for link in api["links"]} >= {"eval", "compare", "diff"}
    # drift check -> report -> back to the check; eval report -> back to the drill-down
    report = get(client, "/drift/drift-1/report").text
    assert "drift report d1" in report and "href='../../?index=docs#drift-drift-1'" in report
    assert "id='drift-drift-1'" in html
    back = get(client, f"/eval/{s['last']}/report").text
    assert f"report of {s['last']}" in back and f"href='../{s['last']}' class='back-to-run'" in back


def test_drill_down_operations_tags_citations_and_no_server_paths(client) -> None:
    s = client.seeded
    data = client.get(f"/api/eval/{s['last']}").json()
    assert "output_dir" not in data["run"] and data["run"]["report_url"] == f"eval/{s['last']}/report"
    assert data["operations"]["latency_ms_p95"] == 340.0 and data["operations"]["refused"] == 1
    assert data["by_tag"]["sso"]["hit_rate@5"] == 0.0
    html = get(client, f"/eval/{s['last']}").text
    for text in ("latency p95 ms", "340", "tokens in", "900", "cost of this run USD", "0.012", "refusals",
                 "<h3 id='by-tag'>by tag</h3>", "billing"):
        assert text in html, text
    assert "href='#q-q1-c1' title='passage [1]'>[1]</a>" in html and "id='q-q1-c1'" in html  # [n] -> its passage
    assert "failures only (1)" in html and "id='q-sort'" in html
    for url in ("/api/overview", f"/api/eval/{s['last']}", "/api/audit/1", "/api/traces",
                f"/api/trace/{s['trace']}", "/api/production"):
        no_paths(client, client.get(url).text)
    for url in ("/", f"/eval/{s['last']}", "/audit/1", "/audit/2", f"/trace/{s['trace']}"):
        no_paths(client, get(client, url).text)


def test_production_by_version_and_day_and_a_trace_page(client) -> None:
    s = client.seeded
    prod = client.get("/api/production").json()
    day = [d for d in prod["daily"] if d["prompt"] == "rag_answer" and d["version"] == 2]
    assert sum(d["requests"] for d in day) == 3 and sum(d["evaluated"] for d in day) == 3
    assert any(d["hallucination_rate"] and d["hallucination_rate"] > 0 for d in day)
    html = get(client, "/").text
    assert "By day (UTC)" in html and "href='traces?prompt=rag_answer%402'" in html
    listing = get(client, "/traces?prompt=rag_answer%402").text
    assert listing.count("href='trace/") == 3
    assert get(client, "/traces?prompt=rag_answer%402&per_page=2").text.count("href='trace/") == 2
    # the review queue links the trace page
    assert f"href='trace/{s['trace']}' class='open-trace'" in html
    page = get(client, f"/trace/{s['trace']}").text
    assert "Question 0 &lt;b&gt;bold&lt;/b&gt;?" in page  # escaped
    assert "<mark class='bad' title='no passage supports it'>Call the CEO [2].</mark>" in page
    assert "Open the panel." in page and "Pricing." in page  # contexts
    assert "disliked" in page and "wrong" in page and "review it in the queue" in page
    t = client.get(f"/api/trace/{s['trace']}").json()
    assert t["evaluation"]["unsupported_claims"][0]["claim"] == "Call the CEO [2]." and t["pending_review"]
    assert get(client, "/trace/nope", 404).text.count("unknown trace") == 1
