"""The review queue on the LLMOps page in a real browser: a failing production trace planted in the
state store shows up with its contexts, its unsupported claim marked and the user's comment; the
reviewer gives the correct answer and the relevant document through the page's form; the reviewed
golden file then holds the question (valid for the dataset loader) and the audit log says who.

Uses the Airflow (scripts/ui.sh) and signed-in browser fixtures of tests/e2e/test_llmops_ui.py."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import select

from tests.e2e.test_llmops_ui import airflow, api, browser  # noqa: F401 - the shared fixtures

pytestmark = pytest.mark.e2e


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


def test_a_reviewer_turns_a_failing_trace_into_a_golden_question(airflow, browser) -> None:  # noqa: F811
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
    assert "rag_answer@1" in frame.locator("#production ~ table").first.inner_text()  # production by version

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
