"""The review queue (ragops.production.review) and production figures per prompt version
(ragops.production.versions) against a real SQLite state store; the reviewed golden set is read back
with the project's dataset loader, and a real eval run (small index, bundled model, offline
generator) evaluates the reviewed questions next to the golden ones."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.evaluation.datasets import load_dataset
from ragops.production import review, versions
from ragops.production.review import ReviewError

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DOCS = ("scheduler.md", "storage.md", "alerts.md")
CHUNKS = [{"id": "c1", "doc_id": "scheduler.md", "score": 0.71, "n": 1, "title": "Scheduler",
           "text": "The scheduler starts the ingest every hour on the hour."},
          {"id": "c2", "doc_id": "alerts.md", "score": 0.42, "n": 2, "title": "Alerts",
           "text": "Alert e-mails go to the on-call address."}]


def hexid(n: int) -> str:
    """A trace id as ragops.tracing makes them (random 32 hex)."""
    return hashlib.md5(f"trace-{n}".encode()).hexdigest()


@pytest.fixture
def store(settings):
    """Index docs (three documents) and a handful of traces: disliked, hallucinated, fine."""
    with state.session_scope(settings.state_db_url) as s:
        iv = state.IndexVersion(index_name="docs", version=3, collection="docs__v3", embedding_model="m")
        s.add(iv)
        s.flush()
        s.add(state.IndexAlias(index_name="docs", version_id=iv.id))
        for d in DOCS:
            s.add(state.Document(index_name="docs", source_id="src", doc_id=d, content_hash="h", settings_hash="h",
                                 origin="o", run_id="r"))
    add_trace(settings, hexid(1), NOW - dt.timedelta(hours=3), feedback=-1.0, comment="wrong, it is hourly")
    add_trace(settings, hexid(2), NOW - dt.timedelta(hours=1), hallucinated=1,
              answer="The scheduler starts the ingest every hour [1]. It pages the CEO at night [1].",
              claims=[{"claim": "It pages the CEO at night [1].", "reason": "no passage supports it"}])
    add_trace(settings, hexid(3), NOW - dt.timedelta(hours=2), feedback=1.0, hallucinated=0)  # fine
    add_trace(settings, hexid(4), NOW - dt.timedelta(hours=4))  # no signal at all
    add_trace(settings, hexid(5), NOW - dt.timedelta(hours=5), feedback=-1.0, index="other")
    return settings


def add_trace(settings, tid: str, ts: dt.datetime, *, feedback: float | None = None, comment: str | None = None,
              hallucinated: int | None = None, claims: list | None = None, answer: str = "Every day [1].",
              index: str = "docs", prompt_version: int = 2, question: str | None = None) -> None:
    with state.session_scope(settings.state_db_url) as s:
        s.add(state.Trace(trace_id=tid, ts=ts, hour=ts.replace(minute=0, second=0, microsecond=0), index_name=index,
                          index_version=3, prompt_name="rag_answer", prompt_version=prompt_version,
                          question=question or f"How often does the scheduler start the ingest ({tid[-2:]})?",
                          answer=answer, chunks=CHUNKS, feedback=feedback, feedback_comment=comment,
                          latency_ms=120.0, latency_bucket=28))
        if hallucinated is not None:
            s.add(state.TraceEval(trace_id=tid, hallucinated=hallucinated, faithfulness=0.5 if hallucinated else 1.0,
                                  detail={"unsupported_claims": claims or []}))


def audit_rows(settings) -> list[state.AuditEntry]:
    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "trace_reviewed")).scalars())


def reviews(settings) -> dict[str, state.TraceReview]:
    with state.session_scope(settings.state_db_url) as s:
        return {r.trace_id: r for r in s.execute(select(state.TraceReview)).scalars()}


def test_the_queue_holds_disliked_and_ungrounded_traces_newest_first(store) -> None:
    items = review.queue(store)
    assert [i["trace_id"] for i in items] == [hexid(2), hexid(1), hexid(5)]
    ungrounded, disliked = items[0], items[1]
    assert ungrounded["reasons"] == ["unsupported claim"] and disliked["reasons"] == ["negative feedback"]
    assert ungrounded["unsupported_claims"][0]["claim"] == "It pages the CEO at night [1]."
    assert ungrounded["unsupported_claims"][0]["reason"] == "no passage supports it"
    assert disliked["feedback_comment"] == "wrong, it is hourly" and disliked["feedback"] == -1.0
    assert disliked["question"].startswith("How often") and disliked["answer"] == "Every day [1]."
    assert [c["doc_id"] for c in disliked["contexts"]] == ["scheduler.md", "alerts.md"]
    assert disliked["contexts"][0]["text"].startswith("The scheduler")
    assert disliked["prompt"] == "rag_answer@2" and disliked["index_ref"] == "docs@v3"
    assert disliked["question_id"] == f"prod-{hexid(1)[:12]}"
    assert [i["trace_id"] for i in review.queue(store, index="docs")] == [hexid(2), hexid(1)]
    assert [i["trace_id"] for i in review.queue(store, limit=1)] == [hexid(2)]
    assert review.pending_count(store) == 3 and review.pending_count(store, "docs") == 2
    for bad in (0, 501, "5", True):
        with pytest.raises(ReviewError, match="limit must be a whole number"):
            review.queue(store, limit=bad)


def test_a_correct_answer_joins_the_reviewed_golden_set(store) -> None:
    out = review.submit(store, hexid(1), "answer", reference_answer="  Every hour on the hour.  ",
                        relevant=["scheduler.md"], reviewer="alice")
    path = store.reviewed_dir / "docs.jsonl"
    assert out["added"] and out["golden_path"] == str(path) and out["question_id"] == f"prod-{hexid(1)[:12]}"
    ds = load_dataset(path, known_doc_ids=set(DOCS))  # what `ragops eval validate` reads
    (q,) = ds.questions
    assert q.id == f"prod-{hexid(1)[:12]}" and q.question.startswith("How often")
    assert q.reference_answer == "Every hour on the hour." and q.relevant_doc_ids == ["scheduler.md"]
    assert q.answerable and q.tags == ("production",)
    r = reviews(store)[hexid(1)]
    assert (r.verdict, r.reviewer, r.relevant, r.golden_path) == ("answer", "alice", ["scheduler.md"], str(path))
    (a,) = audit_rows(store)
    assert a.actor == "alice" and a.index_name == "docs"
    assert a.detail["trace_id"] == hexid(1) and a.detail["verdict"] == "answer"
    assert a.detail["question_id"] == q.id and a.detail["prompt"] == "rag_answer@2"
    assert hexid(1) not in [i["trace_id"] for i in review.queue(store)]  # it left the queue


def test_unanswerable_and_not_a_problem(store) -> None:
    review.submit(store, hexid(2), "unanswerable", reviewer="bob")
    review.submit(store, hexid(5), "not_a_problem", reviewer="bob")
    ds = load_dataset(store.reviewed_dir / "docs.jsonl", known_doc_ids=set(DOCS))
    (q,) = ds.questions
    assert q.id == f"prod-{hexid(2)[:12]}" and not q.answerable and not q.relevant and q.reference_answer == ""
    assert not (store.reviewed_dir / "other.jsonl").exists()  # not a problem: no question anywhere
    rs = reviews(store)
    assert rs[hexid(5)].verdict == "not_a_problem" and rs[hexid(5)].golden_path is None
    assert {a.detail["verdict"] for a in audit_rows(store)} == {"unanswerable", "not_a_problem"}
    assert [i["trace_id"] for i in review.queue(store)] == [hexid(1)]


def test_the_same_submit_twice_adds_one_line(store) -> None:
    args = dict(reference_answer="Every hour.", relevant="scheduler.md, alerts.md", reviewer="alice")
    first = review.submit(store, hexid(1), "answer", **args)
    again = review.submit(store, hexid(1), "answer", **args)
    assert first["added"] and not first["already_reviewed"]
    assert again["already_reviewed"] and not again["added"] and again["relevant"] == ["scheduler.md", "alerts.md"]
    path = store.reviewed_dir / "docs.jsonl"
    assert len(path.read_text().splitlines()) == 1 and len(audit_rows(store)) == 1
    # another verdict on a reviewed trace is refused, with who and where
    with pytest.raises(ReviewError, match=r"already reviewed by alice .* as answer .*edit that file"):
        review.submit(store, hexid(1), "unanswerable", reviewer="bob")
    assert len(path.read_text().splitlines()) == 1


def test_a_submit_that_failed_after_writing_the_line_is_finished_by_a_retry(store, monkeypatch) -> None:
    real = state.audit

    def broken(*a, **k):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(review.state, "audit", broken)
    with pytest.raises(RuntimeError):
        review.submit(store, hexid(1), "answer", reference_answer="Hourly.", relevant=["scheduler.md"],
                      reviewer="alice")
    path = store.reviewed_dir / "docs.jsonl"
    assert len(path.read_text().splitlines()) == 1 and hexid(1) not in reviews(store)  # line written, no review
    monkeypatch.setattr(review.state, "audit", real)
    # the retry may even correct the answer: the orphan line is replaced, never doubled
    out = review.submit(store, hexid(1), "answer", reference_answer="Every hour on the hour.",
                        relevant=["scheduler.md"], reviewer="alice")
    assert out["added"] and reviews(store)[hexid(1)].verdict == "answer"
    (q,) = load_dataset(path).questions
    assert q.reference_answer == "Every hour on the hour."


@pytest.mark.parametrize("trace,verdict,kw,message", [
    ("f" * 32, "answer", {"reference_answer": "x", "relevant": ["scheduler.md"]}, "unknown trace"),
    (hexid(1), "wrong", {}, "verdict 'wrong': use one of answer, unanswerable, not_a_problem"),
    (hexid(1), "answer", {"relevant": ["scheduler.md"]}, "needs the correct answer"),
    (hexid(1), "answer", {"reference_answer": "hourly"}, "needs the ids of the documents"),
    (hexid(1), "answer", {"reference_answer": "hourly", "relevant": ["scheduler.md", "nope.md"]},
     "document 'nope.md' is not in index docs.*this trace retrieved alerts.md, scheduler.md"),
    (hexid(1), "answer", {"reference_answer": "x" * 4001, "relevant": ["scheduler.md"]}, "at most 4000"),
    (hexid(1), "unanswerable", {"relevant": ["scheduler.md"]}, "names no documents"),
    (hexid(1), "not_a_problem", {"reference_answer": "x"}, "records no answer"),
    (hexid(5), "answer", {"reference_answer": "x", "relevant": ["a.md"]}, "not an index of this state store"),
    ("", "answer", {}, "give the id of a trace"),
    (hexid(1), "answer", {"reference_answer": "x", "relevant": [f"d{i}" for i in range(21)]}, "at most 20"),
])
def test_bad_input_is_refused_and_nothing_stored_changes(store, trace, verdict, kw, message) -> None:
    path = store.reviewed_dir / "docs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    before = b'{"id": "prod-older", "question": "q?", "answerable": false, "tags": ["production"]}\n{not json\n'
    path.write_bytes(before)
    with pytest.raises(ReviewError, match=message):
        review.submit(store, trace, verdict, reviewer="alice", **kw)
    assert path.read_bytes() == before and not reviews(store) and not audit_rows(store)
    with pytest.raises(ReviewError, match="reviewer's name"):
        review.submit(store, hexid(1), "not_a_problem", reviewer=" ")


def test_lines_already_in_the_file_are_kept_as_they_are(store) -> None:
    path = store.reviewed_dir / "docs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"id": "by-hand", "question": "q?", "answerable": false}\n{half a line')
    review.submit(store, hexid(2), "unanswerable", reviewer="bob")
    lines = path.read_text().splitlines()
    assert lines[:2] == ['{"id": "by-hand", "question": "q?", "answerable": false}', "{half a line"]
    assert json.loads(lines[2])["id"] == f"prod-{hexid(2)[:12]}"


def test_question_ids_of_other_trace_ids() -> None:
    assert review.question_id(hexid(7)) == f"prod-{hexid(7)[:12]}"
    assert review.question_id("log-" + "a" * 28) == "prod-log-" + "a" * 28  # not random hex: the whole id


# ---- production figures per prompt version ---------------------------------------------------

def test_wilson_and_newcombe_intervals() -> None:
    lo, hi = versions.wilson(2, 20)
    assert lo == pytest.approx(0.0279, abs=1e-3) and hi == pytest.approx(0.3010, abs=1e-3)  # Wilson 1927 score interval
    d, lo, hi = versions.newcombe(56, 70, 48, 80)  # Newcombe 1998 example: 0.8 - 0.6
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-3) and hi == pytest.approx(0.3339, abs=1e-3)
    assert versions.wilson(0, 0) is None


def promote_at(settings, at: dt.datetime, frm: int, to: int, action: str = "promoted") -> None:
    with state.session_scope(settings.state_db_url) as s:
        s.add(state.PromptEvent(name="rag_answer", alias="production", action=action, from_version=frm, to_version=to,
                                actor="carol (airflow promote_prompt manual__1)", reason="gate passed",
                                created_at=at))
        row = s.get(state.PromptAlias, ("rag_answer", "production"))
        if row is None:
            s.add(state.PromptAlias(name="rag_answer", alias="production", version=to, updated_by="carol"))
        else:
            row.version = to


def traffic(settings, version: int, start: dt.datetime, n: int, bad: int, prefix: int) -> None:
    for i in range(n):
        add_trace(settings, f"{prefix:08x}{i:024x}", start + dt.timedelta(minutes=10 * i), prompt_version=version,
                  hallucinated=1 if i < bad else 0, feedback=-1.0 if i < bad else 1.0)


def test_a_promotion_effect_with_an_interval_and_not_enough_traffic(settings) -> None:
    moved = NOW - dt.timedelta(days=3)
    promote_at(settings, moved, 1, 2)
    traffic(settings, 1, moved - dt.timedelta(days=2), 40, 4, prefix=1)  # 10% before
    traffic(settings, 2, moved + dt.timedelta(hours=1), 40, 20, prefix=2)  # 50% after
    promote_at(settings, NOW - dt.timedelta(hours=6), 2, 3)  # too young to judge
    (e,) = versions.promotion_effects(settings, NOW)
    h = e["hallucination"]
    assert (e["from_version"], e["to_version"], e["status"]) == (1, 2, "worse")
    assert h["before"]["n"] == 40 and h["after"]["n"] == 40 and h["difference"] == pytest.approx(0.4)
    assert 0 < h["ci"][0] < 0.4 < h["ci"][1]
    assert e["negative_feedback"]["status"] == "worse"
    # the window after ends at the next move: version 2's traffic after it does not count
    assert e["after_window"][1] <= (NOW - dt.timedelta(hours=6)).isoformat()
    # too few evaluated answers on one side
    with state.session_scope(settings.state_db_url) as s:
        s.query(state.TraceEval).filter(state.TraceEval.trace_id.like(f"{1:08x}%")).filter(
            state.TraceEval.trace_id > f"{1:08x}{5:024x}").delete(synchronize_session=False)
    (e,) = versions.promotion_effects(settings, NOW)
    assert e["status"] == "not enough traffic" and e["hallucination"]["difference"] is None
    assert "each side needs at least 20" in e["hallucination"]["why"]

    rows = {r["version"]: r for r in versions.by_version(settings, NOW, days=7)}
    assert rows[2]["requests"] == 40 and rows[2]["hallucination"]["rate"] == 0.5
    assert rows[2]["negative_feedback_rate"] == 0.5 and rows[2]["latency_p95_ms"] is not None
    lo, hi = rows[2]["hallucination"]["ci"]
    assert lo < 0.5 < hi
    assert rows[3]["aliases"] == ["production"] and rows[3]["requests"] == 0  # production, no traffic yet
    assert rows[2]["golden"] is None


# ---- nightly_eval evaluates the reviewed questions --------------------------------------------

CORPUS = {
    "scheduler.md": "# Scheduler\n\nThe scheduler starts the ingest every hour on the hour. A failed run is retried "
                    "twice with exponential backoff before anyone is paged.\n",
    "storage.md": "# Storage\n\nVectors live in Chroma collections named after the index and a version number. "
                  "The state store is a SQLite file in the data directory unless PostgreSQL is configured.\n",
    "alerts.md": "# Alerts\n\nAlert e-mails go to the on-call address of each event type. Identical alerts "
                 "inside one hour are folded into the next e-mail.\n",
}


def test_the_next_eval_run_evaluates_the_reviewed_questions(tmp_path, data_dir, monkeypatch, embedder) -> None:
    from ragops.config import load_settings
    from ragops.evaluation.runner import run_eval
    from ragops.indexing import sync
    from tests.conftest import write

    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "include" / "prompts", prompts)
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(prompts))
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("eval:\n  semantic_metrics: false\nindexes:\n  docs: {}\n")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    corpus = tmp_path / "corpus"
    for rel, text in CORPUS.items():
        write(corpus, rel, text)
    sync(s, str(corpus), "docs", trigger="test", embedder=embedder)
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"id": "g1", "question": "Where do alert e-mails go?", "relevant_doc_ids":
                                  ["alerts.md"], "reference_answer": "to the on-call address"}) + "\n")
    add_trace(s, hexid(9), NOW, feedback=-1.0, question="How often is a failed run retried?")
    add_trace(s, hexid(8), NOW, feedback=-1.0, question="Where is the state store kept?")
    review.submit(s, hexid(9), "answer", reference_answer="twice, with exponential backoff",
                  relevant=["scheduler.md"], reviewer="alice")
    review.submit(s, hexid(8), "answer", reference_answer="a SQLite file in the data directory",
                  relevant=["storage.md"], reviewer="alice")
    reviewed = s.reviewed_dir / "docs.jsonl"
    # a golden question with a reviewed question's id wins; the reviewed one is left out
    golden.write_text(golden.read_text() + json.dumps({"id": f"prod-{hexid(8)[:12]}", "question": "Clash?",
                                                       "answerable": False}) + "\n")
    summary = run_eval(s, golden, "rag_answer@1", "docs", embedder=embedder, run_id="nightly-1", purpose="nightly",
                       include_reviewed=True)
    with state.session_scope(s.state_db_url) as sess:
        results = {r.question_id: r for r in sess.execute(select(state.EvalResult).where(
            state.EvalResult.run_id == "nightly-1")).scalars()}
        run = sess.get(state.EvalRun, "nightly-1")
        assert run.dataset_path == f"{golden} + {reviewed}" and run.n_questions == 3
        # the baseline family stays the golden file's (a review must not restart the nightly baseline);
        # the dataset hash of the summary covers both files
        assert run.dataset_hash == load_dataset(golden).sha256 == summary["dataset"]["baseline_sha256"]
        assert summary["dataset"]["sha256"] != run.dataset_hash
    qid = f"prod-{hexid(9)[:12]}"
    assert set(results) == {"g1", f"prod-{hexid(8)[:12]}", qid}
    assert results[qid].payload["question"] == "How often is a failed run retried?"
    assert results[qid].payload["metrics"]["hit_rate@5"] == 1.0  # its relevant document was retrieved
    assert results[f"prod-{hexid(8)[:12]}"].payload["question"] == "Clash?"  # the golden one
    # the run's figures are the golden questions'; the reviewed one is counted apart
    assert summary["counts"]["questions"] == 2 and summary["reviewed"]["counts"]["questions"] == 1
    assert summary["reviewed"]["metrics"]["hit_rate@5"] == 1.0
    files = summary["dataset"]["files"]
    assert [f["path"] for f in files] == [str(golden), str(reviewed)]
    assert files[1]["sha256"] == load_dataset(reviewed).sha256 and files[1]["id_clashes"] == [f"prod-{hexid(8)[:12]}"]
    # the reviewed question's document is deleted from the corpus: the next run leaves it out, and runs
    (corpus / "scheduler.md").unlink()
    sync(s, str(corpus), "docs", trigger="test", embedder=embedder, allow_mass_delete=True)
    summary = run_eval(s, golden, "rag_answer@1", "docs", embedder=embedder, run_id="nightly-2", purpose="nightly",
                       include_reviewed=True)
    assert summary["status"] == "success" and summary["dataset"]["files"][1]["unknown_doc_left_out"] == [qid]
    with state.session_scope(s.state_db_url) as sess:
        ids = set(sess.execute(select(state.EvalResult.question_id).where(
            state.EvalResult.run_id == "nightly-2")).scalars())
    assert ids == {"g1", f"prod-{hexid(8)[:12]}"}
    # without include_reviewed (a dataset a person chose) nothing changes
    plain = run_eval(s, golden, "rag_answer@1", "docs", embedder=embedder, run_id="adhoc-1")
    assert plain["dataset"]["path"] == str(golden) and plain["dataset"]["sha256"] == load_dataset(golden).sha256


# ---- the LLMOps page's sections ----------------------------------------------------------------

def test_the_page_sections_escape_everything_and_mark_the_unsupported_claims(store) -> None:
    from ragops.airflow.llmops_html import render_page
    from tests.unit.test_llmops_html import EVIL, assert_no_live_markup, page_data

    add_trace(store, hexid(20), NOW, feedback=-1.0, comment=EVIL, question=f"Why {EVIL}?",
              answer=f"Fine [1]. {EVIL} is true [2].", hallucinated=1,
              claims=[{"claim": f"{EVIL} is true [2].", "reason": EVIL}])
    queue = {"pending": 99, "items": review.queue(store, limit=20)}
    moved = NOW - dt.timedelta(days=2)
    promote_at(store, moved, 1, 2)
    traffic(store, 1, moved - dt.timedelta(days=1), 25, 5, prefix=7)
    traffic(store, 2, moved + dt.timedelta(hours=1), 25, 5, prefix=8)
    production = versions.production_view(store, NOW)
    html = render_page(page_data(), "alice", review=queue, production=production)
    assert_no_live_markup(html)
    assert html.count("<script>") == 1
    assert f"<mark class='bad' title='{esc_(EVIL)}'>{esc_(EVIL)} is true [2].</mark>" in html
    assert f"id='review-{hexid(20)}'" in html and f"data-trace='{hexid(20)}'" in html and "data-index='docs'" in html
    assert "showing the newest 4 of 99" in html
    assert "retrieved: scheduler.md, alerts.md" in html
    assert "rag_answer@2" in html and "no significant change" in html and "carol" in html
    empty = render_page(page_data(), "alice")
    assert "nothing waiting for review" in empty.lower() and "Production by prompt version" in empty


def esc_(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_the_pages_script_parses(tmp_path) -> None:
    """A syntax error anywhere in the page's one script disables every button of the page."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the browser tests (tests/e2e/test_review_ui.py) cover the script")
    import subprocess

    from ragops.airflow.llmops_html import SCRIPT

    (tmp_path / "page.js").write_text(SCRIPT)
    done = subprocess.run([node, "--check", str(tmp_path / "page.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_review_command_line(store, capsys) -> None:
    from ragops.cli import main

    assert main(["review", "queue", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pending"] == 3 and data["items"][0]["trace_id"] == hexid(2)
    assert main(["review", "submit", hexid(2), "--verdict", "answer", "--answer", "Every hour.",
                 "--relevant", "scheduler.md", "--reviewer", "bob"]) == 0
    assert f"prod-{hexid(2)[:12]}" in capsys.readouterr().out
    assert reviews(store)[hexid(2)].reviewer == "bob"
    assert main(["review", "submit", hexid(1), "--verdict", "answer", "--relevant", "nope.md"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["review", "versions"]) == 0
    assert "rag_answer@2" in capsys.readouterr().out
