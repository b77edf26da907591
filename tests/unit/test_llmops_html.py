"""The LLMOps page's HTML: untrusted text (documents, questions, answers, prompt messages) is
escaped everywhere, actions carry only their DAG and Params, links stay relative."""

from __future__ import annotations

import json
import re

from ragops.airflow.llmops_html import render_diff, render_eval, render_page

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def page_data() -> dict:
    return {
        "indexes": [{"name": "docs", "live": "docs__v2", "chunks": 12, "last_sync": {
            "run_id": "r1", "status": "committed", "counts": {"added": 3}},
            "versions": [{"version": 1, "collection": "docs__v1", "status": "retired", "live": False, "pipeline": None,
                          "built_by": EVIL, "stats": {}, "created_at": "2026-11-22T10:00:00"},
                         {"version": 2, "collection": "docs__v2", "status": "live", "live": True, "pipeline": None,
                          "built_by": "cli", "stats": {"chunks": 12}, "created_at": "2026-11-22T11:00:00"}]}],
        "prompts": [{"name": "rag_answer", "aliases": {"production": 1},
                     "versions": [{"version": 1, "status": "registered", "aliases": ["production"], "author": "a",
                                   "message": "m", "registered_at": "2026-11-22T09:00:00"},
                                  {"version": 2, "status": "registered", "aliases": [], "author": EVIL,
                                   "message": EVIL, "registered_at": "2026-11-22T09:30:00"}],
                     "history": [{"at": "2026-11-22T09:00:00", "alias": "production", "action": "initial",
                                  "from": None, "to": 1, "actor": "cli", "reason": EVIL}]}],
        "eval": {"runs": [{"run_id": "eval-1", "status": "success", "purpose": "nightly", "started_at":
                           "2026-11-22T12:00:00", "index": "docs", "prompt": "rag_answer@1", "questions": 3,
                           "metrics": {"hit_rate@5": 0.9}}],
                 "series": {"docs · docs.jsonl": [{"label": "11-22 12:00", "metrics": {"hit_rate@5": 0.9}}]},
                 "metrics": ["hit_rate@5"],
                 "charts": {"docs · docs.jsonl": {"index": "docs", "points": [
                     {"t": 1795000000.0, "at": "2026-11-22T12:00:00+00:00", "run_id": "eval-1", "purpose": "nightly",
                      "prompt": EVIL, "metrics": {"hit_rate@5": 0.9}}]}},
                 "chart_groups": {"retrieval": ["hit_rate@5"]}, "events": [], "thresholds": {"hit_rate@5": 0.8}},
        "drift": [{"check_id": "d1", "status": "breach", "started_at": "2026-11-22T13:00:00", "index": "docs",
                   "checks": {"gaps": "breach"}, "report": "/x/report.html", "error": None}],
        "quarantine": [{"created_at": "2026-11-22T08:00:00", "index": "docs", "doc_id": EVIL, "stage": "parse",
                        "reason": "too_short", "detail": EVIL}],
        "audit": [{"at": "2026-11-22T13:00:00", "actor": EVIL, "action": "drift_breach", "index": "docs",
                   "detail": {"evidence": EVIL}}],
    }


def assert_no_live_markup(html: str) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def test_page_escapes_everything_untrusted_and_offers_the_actions() -> None:
    html = render_page(page_data(), EVIL)
    assert_no_live_markup(html)
    assert html.count("<script>") == 1  # the page's own script only
    acts = re.findall(r"data-act='([^']*)'", html)
    assert any("promote_prompt" in a and "candidate_version" in a for a in acts)  # v2 can be gated
    assert any("rollback" in a and "rollback_to&quot;: 1" in a for a in acts)  # the retired version
    assert any("check_drift" in a for a in acts)
    assert "href='eval/eval-1'" in html and "href='drift/d1/report'" in html
    assert not re.search(r"(href|src|action)='/", html), "links must be relative (the plugin mount may move)"
    # the trend charts: containers, the vendored library from this server, the data as an inert JSON block
    assert "class='chart'" in html and "src='static/uPlot.iife.min.js'" in html
    block = html.split("<script type='application/json' id='chart-data'>")[1].split("</script>")[0]
    assert "<" not in block and json.loads(block)["charts"]["docs · docs.jsonl"]["points"][0]["prompt"] == EVIL
    assert html.lower().count("<script") == 4


def test_eval_drill_down_escapes_questions_answers_and_contexts() -> None:
    data = {"run": {"run_id": "eval-1", "status": "success", "prompt": "rag_answer@1", "index": "docs",
                    "index_version": 1, "questions": 1, "dataset": "d.jsonl", "metrics": {"hit_rate@5": 1.0}},
            "context_source": "results.jsonl",
            "questions": [{"id": "q1", "question": EVIL, "answer": EVIL, "reference_answer": EVIL,
                           "relevant_doc_ids": ["a"], "retrieved_docs": [{"doc_id": "a"}], "metrics": {},
                           "contexts": [{"n": 1, "doc_id": "a", "score": 0.5, "text": EVIL}]}]}
    html = render_eval(data)
    assert_no_live_markup(html)
    assert html.count("&lt;script&gt;") == 5  # question, answer, reference, context and the search text


def test_diff_page_keeps_difflib_escaping() -> None:
    import difflib

    html = render_diff("p", 1, 2, difflib.HtmlDiff().make_table([EVIL], ["safe"], "a", "b"))
    assert "<script>alert" not in html and "<img src=x" not in html and "&lt;script&gt;" in html


def test_eval_page_shows_the_served_model_and_why_a_claim_is_unsupported() -> None:
    from ragops.airflow.llmops_html import render_eval

    run = {"run_id": "eval-1", "status": "success", "prompt": "rag_local@1", "index": "docs", "index_version": 1,
           "questions": 1, "dataset": "golden.jsonl", "metrics": {"hallucination_rate": 1.0},
           "served_models": ["smollm2-135m-instruct-q4_1"], "generator": "openai:smollm2-135m-instruct-q4_1"}
    q = {"id": "q1", "question": "When?", "answer": "It runs daily <b>now</b>.", "metrics": {"hallucination_rate": 1.0},
         "detail": {"unsupported_claims": [{"claim": "It runs daily <b>now</b>", "reason": "missing_number",
                                            "detail": ["daily"], "passage": 1, "closest": "It runs weekly."}]},
         "contexts": [], "retrieved_docs": []}
    html = render_eval({"run": run, "questions": [q], "context_source": "results.jsonl"})
    assert "answered by smollm2-135m-instruct-q4_1" in html
    assert "<b>missing_number</b>" in html and "closest [1]: It runs weekly." in html
    assert "&lt;b&gt;now&lt;/b&gt;" in html and "<b>now</b>" not in html  # escaped


def test_the_audit_actor_names_the_person_and_the_dag_run() -> None:
    """Before: ``airflow:check_drift:DagRunType.MANUAL`` (str() of Airflow's enum, no person)."""
    from types import SimpleNamespace

    from airflow.utils.types import DagRunType

    from ragops.airflow.common import actor, run_type
    from ragops.airflow.llmops_html import _who
    from ragops.overview import split_actor

    manual = SimpleNamespace(run_type=DagRunType.MANUAL, triggering_user_name="alice", dag_id="check_drift",
                             run_id="manual__2026-12-06T10:00:00+00:00")
    nightly = SimpleNamespace(run_type=DagRunType.SCHEDULED, triggering_user_name=None, dag_id="nightly_eval",
                              run_id="scheduled__2026-12-06T02:00:00+00:00")
    assert run_type(manual) == "manual" and run_type(nightly) == "scheduled"
    assert actor(manual) == "alice (airflow check_drift manual__2026-12-06T10:00:00+00:00)"
    assert split_actor(actor(nightly)) == ("schedule", "nightly_eval", "scheduled__2026-12-06T02:00:00+00:00")
    assert split_actor("cli") == ("cli", None, None)
    cell = _who(actor(manual))
    assert cell.startswith("alice<br>") and "../dags/check_drift/runs/manual__2026-12-06T10%3A00%3A00%2B00%3A00" in cell
    assert _who("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"


def test_compare_page_escapes_both_sides_and_links_the_gate_pair() -> None:
    from ragops.airflow.llmops_html import render_compare

    def run(rid: str) -> dict:
        return {"run_id": rid, "status": "success", "purpose": "candidate", "started_at": "2026-11-22T12:00:00",
                "prompt": EVIL, "index": "docs", "index_version": 1, "dataset": EVIL, "served_models": [EVIL],
                "generator": "extractive", "questions": 1}

    side = {"answer": EVIL, "refused": False, "error": None, "metrics": {"hit_rate@5": 1.0},
            "contexts": [{"n": 1, "doc_id": EVIL, "score": 0.5, "text": EVIL, "page": 2}],
            "unsupported_claims": [{"claim": EVIL, "reason": "missing_number", "passage": 1, "closest": EVIL}]}
    data = {"a": run("run-a"), "b": run(EVIL), "warnings": [EVIL], "confidence": 0.95, "groups": ["retrieval"],
            "metrics": [{"metric": "hit_rate@5", "group": "retrieval", "lower_is_better": False, "a": 1.0, "b": 0.0,
                         "difference": -1.0, "ci_low": -1.0, "ci_high": -0.5, "paired": 1, "verdict": "worse"}],
            "counts": {"paired": 1, "worse": 1, "better": 0, "unchanged": 0, "answers_changed": 1, "only_in_a": 0,
                       "only_in_b": 0},
            "questions": [{"id": EVIL, "question": EVIL, "change": -1.0, "deltas": {"hit_rate@5": -1.0},
                           "answer_changed": True, "relevant_doc_ids": [EVIL], "reference_answer": EVIL,
                           "a": side, "b": {**side, "refused": True}}]}
    html = render_compare(data)
    assert_no_live_markup(html)
    assert html.count("<script>") == 1 and "★ relevant" in html and "p. 2" in html and "(refused)" in html
    assert not re.search(r"(href|src|action)='/", html)
    page = page_data()
    page["prompts"][0]["history"].append({"at": "2026-11-22T10:00:00", "alias": "production", "action": "promoted",
                                          "from": 1, "to": 2, "actor": "cli", "reason": "gate passed",
                                          "evidence": {"candidate_run": "cand-1", "production_run": "prod-1"}})
    html = render_page(page, "me")
    assert "href='compare?a=prod-1&amp;b=cand-1'" in html and "href='eval/cand-1'" in html


def test_eval_page_links_its_airflow_run_task_log_and_report() -> None:
    run = {"run_id": "nightly_eval__manual__2026", "status": "success", "prompt": "rag_answer@1", "index": "docs",
           "index_version": 1, "questions": 0, "dataset": "d.jsonl", "metrics": {"hit_rate@5": 1.0, "tokens_in": 3.0},
           "origin": {"dag_id": "nightly_eval", "run_id": "manual__2026-12-07T10:00:00+00:00", "task_id": "evaluate"},
           "report_url": "eval/nightly_eval__manual__2026/report"}
    html = render_eval({"run": run, "questions": [], "context_source": "results.jsonl"})
    assert ("href='../../dags/nightly_eval/runs/manual__2026-12-07T10%3A00%3A00%2B00%3A00' data-top='1'" in html)
    assert "runs/manual__2026-12-07T10%3A00%3A00%2B00%3A00/tasks/evaluate' data-top='1'" in html
    assert "href='nightly_eval__manual__2026/report'" in html
    assert "<h3>retrieval</h3>" in html and "<h3>operations</h3>" in html  # metrics grouped
    html = render_eval({"run": {**run, "origin": None, "report_url": None}, "questions": [],
                        "context_source": "results.jsonl"})
    assert "run outside Airflow" in html
    assert "/report'" not in html and "report.html is not on this server" in html  # its run folder is gone


def test_status_strip_names_what_needs_attention() -> None:
    data = page_data()
    data["status"] = {"last_ingest": {"index": "docs", "status": "committed", "finished_at": "2026-11-22T08:00:00"},
                      "last_nightly": {"run_id": "eval-1", "status": "success", "started_at": "2026-11-22T12:00:00",
                                       "index": "docs", "prompt": "p@1", "metrics": {"hit_rate@5": 0.9}},
                      "breaches": [{"index": EVIL, "check_id": "d1", "at": "x"}], "failed_alerts": 2}
    html = render_page(data, "me", {"check_drift": {"is_paused": True}, "nightly_eval": {"is_paused": False}})
    strip = html.split("class='strip'")[1].split("</div>")[0]
    assert "last ingest: <b>docs</b>" in strip and "href='eval/eval-1'" in strip
    assert "open drift breaches: <b>1</b>" in strip and "paused DAGs: <b>1</b>" in strip
    assert "failed alerts in the outbox: <b>2</b>" in strip and "&lt;script&gt;" in strip
    empty = render_page({**page_data(), "status": {"last_ingest": None, "last_nightly": None, "breaches": [],
                                                   "failed_alerts": 0}}, "me")
    assert "no ingest yet: run <code>ragops ingest SOURCE</code>" in empty and "no nightly run yet" in empty


def test_empty_sections_say_what_to_do_next() -> None:
    data = {"indexes": [], "prompts": [], "drift": [], "quarantine": [], "audit": [],
            "eval": {"runs": [], "series": {}, "metrics": ["hit_rate@5"], "charts": {}, "chart_groups": {}}}
    html = render_page(data, "alice", {}, review={"pending": 0, "items": []}, production=None)
    for hint in ("No index yet: trigger ingest_documents", "No prompts yet", "Unpause nightly_eval",
                 "No production figures yet", "Nothing waiting for review", "No drift checks match the filters",
                 "No audit entries match the filters"):
        assert hint in html, hint
    assert "none yet" not in html  # no section without a next step


def test_dark_mode_follows_the_browser_and_airflows_mode() -> None:
    html = render_page(page_data(), "alice")
    assert "@media (prefers-color-scheme:dark)" in html and ":root[data-theme=dark]" in html
    assert "window.top.document.documentElement" in html  # Airflow's mode and font when inside its frame
    assert ":focus-visible{outline:2px solid" in html


def test_data_quality_shows_repairs_warnings_and_skipped_files() -> None:
    """Issue 24: every repair and warning, and the files of types ragops does not read, are on the page."""
    data = page_data()
    data["indexes"][0]["last_sync"] = {
        "run_id": "r2", "status": "committed", "counts": {"added": 3, "skipped": 2, "still_quarantined": 1},
        "skipped": ["diagram.png (unsupported type .png)", f"{EVIL}.pptx (unsupported type .pptx)"],
        "repairs": {"repaired_documents": 1, "warned_documents": 1,
                    "kinds": {"repaired:c1_as_cp1252": 3, "warning:replacement_chars": 1}}}
    data["quarantine"] = [
        {"created_at": "2026-11-22T08:00:00", "index": "docs", "doc_id": "a.txt", "stage": "quality",
         "reason": "mostly_broken", "detail": "12.0% of the characters ...", "severity": "failure"},
        {"created_at": "2026-11-22T08:00:00", "index": "docs", "doc_id": "b.txt", "stage": "repair",
         "reason": "c1_as_cp1252", "detail": "3 C1 control character(s) were Windows-1252 punctuation",
         "severity": "repaired"},
        {"created_at": "2026-11-22T08:00:00", "index": "docs", "doc_id": EVIL, "stage": "repair",
         "reason": "replacement_chars", "detail": EVIL, "severity": "warning"}]
    html = render_page(data, "tester")
    assert_no_live_markup(html)
    assert "skipped 2 file(s) of a type ragops does not read: diagram.png (unsupported type .png)" in html
    assert "repaired 1 document(s), 1 indexed with a warning: repaired:c1_as_cp1252 3" in html
    table = html[html.index("id='quarantine'"):]
    # failures first, then warnings, then repairs, each with its outcome
    assert table.index("mostly_broken") < table.index("replacement_chars") < table.index("c1_as_cp1252")
    assert "pill failed'>quarantined<" in table and "pill warn'>indexed, warning<" in table
    assert "pill ok'>indexed, repaired<" in table


def test_drill_down_shows_the_pdf_page_of_a_passage() -> None:
    data = {"run": {"run_id": "eval-1", "status": "success", "prompt": "rag_answer@1", "index": "docs",
                    "index_version": 1, "questions": 1, "dataset": "d.jsonl", "metrics": {}},
            "context_source": "results.jsonl",
            "questions": [{"id": "q1", "question": "Where are backups?", "answer": "Nightly [1].",
                           "reference_answer": "", "relevant_doc_ids": ["guide.pdf"],
                           "retrieved_docs": [{"doc_id": "guide.pdf"}], "metrics": {},
                           "contexts": [{"n": 1, "doc_id": "guide.pdf", "score": 0.8, "text": "Backups run.",
                                         "page": "2-3"},
                                        {"n": 2, "doc_id": "notes.md", "score": 0.5, "text": "x"}]}]}
    html = render_eval(data)
    assert "<span class='page'>pp. 2-3</span>" in html and html.count("class='page'") == 1
