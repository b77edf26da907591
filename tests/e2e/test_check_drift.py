"""check_drift end to end: a real Airflow run (dag.test) on the demo corpus in embedded Chroma, a
real query log, the real model, and a real SMTP server on loopback that captures the e-mail."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.config import load_settings
from ragops.drift import querylog
from ragops.drift.snapshots import listing
from ragops.evaluation.datasets import load_dataset
from ragops.indexing import sync
from tests.conftest import SmtpServer, load_dag, parts, write

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "include" / "corpus"
CONFIG = """
alerts:
  from_email: ragops@test.local
  base_url: http://airflow.example:8080
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    drift: [ml@test.local]
drift:
  sample_size: 300
  min_queries: 20
indexes:
  docs:
    golden: include/eval/golden/docs.jsonl
"""
OFF_TOPIC = ["how long do I bake sourdough bread", "sourdough starter feeding schedule", "vegan lasagna recipe",
             "how to make fresh pasta dough", "best temperature to roast vegetables", "easy chocolate cake recipe"]
STYLE = ["{q}", "quick question: {q}", "{q} thanks", "hi, {q}", "{q}?", "could you tell me: {q}"]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("check_drift")


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder):
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text(CONFIG)
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    sync(s, str(CORPUS), "docs", trigger="test", embedder=embedder)
    return s


def run(dag, **conf):
    # every Param explicitly: dag.test() keeps a previous run's conf in the DAG object's params
    full = {"index": "docs", "checks": ["corpus", "documents", "queries", "gaps", "quality"],
            "methods": ["mmd", "classifier", "centroid"], "reference": "last", "reference_window": "7d",
            "current_window": "1d", "sample_size": 300, "permutations": 200, "seed": 13, "targeted_eval": True, **conf}
    return dag.test(run_conf=full)


def xcom(dr, task_id: str):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.state, ti.xcom_pull(task_ids=task_id)


def write_query_log(settings) -> None:
    """Reference week: questions about ingestion and chunking. Last day: questions about prompts,
    gates and alerts (covered by the golden set) plus cooking (covered by nothing)."""
    golden = {q.id: q.question for q in load_dataset(ROOT / "include/eval/golden/docs.jsonl").questions}
    before = [golden[f"q{i:03d}"] for i in (1, 3, 8, 10, 13, 15, 16, 17, 18, 23, 24, 25)]
    now_topics = [golden[i] for i in ("q009", "q030", "q040")]
    rng = random.Random(5)
    now = dt.datetime.now(dt.UTC)
    rows = [{"timestamp": (now - dt.timedelta(days=rng.uniform(1.05, 6.9))).isoformat(),
             "query": rng.choice(STYLE).format(q=rng.choice(before)), "index": "docs"} for _ in range(160)]
    rows += [{"timestamp": (now - dt.timedelta(hours=rng.uniform(0.2, 20))).isoformat(),
              "query": rng.choice(STYLE).format(q=rng.choice(now_topics if i % 5 < 3 else OFF_TOPIC)),
              "feedback": -1 if i % 5 >= 3 else 1} for i in range(80)]
    rows += [{"timestamp": now.isoformat(), "query": "about another index", "index": "other"}]
    querylog.append(settings, rows)
    # a broken line in another file is skipped and reported, not fatal
    write(Path(settings.query_log_uri), "broken.jsonl", '{"timestamp": "yesterday", "query": "x"}\nnot json\n')


def test_params_and_schedule(dag) -> None:
    assert dag.timetable.expression == "30 4 * * *"
    assert set(dag.params) == {"index", "checks", "methods", "reference", "reference_window", "current_window",
                               "sample_size", "permutations", "seed", "targeted_eval"}
    assert set(dag.task_ids) == {"check", "notify", "plan_targeted", "targeted_eval"}
    assert dag.get_task("targeted_eval").trigger_dag_id == "nightly_eval"


def test_query_drift_gaps_email_targeted_eval_then_corpus_drift(dag, env, smtp_server: SmtpServer, monkeypatch,
                                                                  tmp_path: Path, embedder) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    write_query_log(env)

    # 1. first run: the corpus reference is taken now; the queries moved and many are uncovered
    dr = run(dag)
    assert dr.state == "success"  # a breach is a finding, not a failed task
    st, r = xcom(dr, "check")
    assert st == "success" and r["status"] == "breach"
    assert set(r["breaches"]) == {"queries", "gaps"}, r["checks"]
    assert r["checks"]["corpus"]["status"] == "baseline" and "taken now" in r["reference_note"]
    assert r["checks"]["quality"]["status"] == "skipped"
    q = r["checks"]["queries"]
    assert q["evidence"]["mmd"]["p_value"] < 0.0034 and q["evidence"]["classifier"]["statistic"] > 0.7
    gaps = r["checks"]["gaps"]
    assert 0.3 <= gaps["evidence"]["share"] <= 0.5 and gaps["evidence"]["reference_share"] == 0.0
    words = {w for c in gaps["clusters"] for w in c["terms"]}
    assert words & {"sourdough", "lasagna", "pasta", "recipe", "bake", "cake"}, gaps["clusters"]
    assert not words & {"chunk", "index", "prompt"}
    # the targeted eval: golden questions nearest the drifted region (prompts, gates, alerts)
    t = r["targeted"]
    assert {"q009", "q030", "q040"} & set(t["question_ids"]), t
    st, conf = xcom(dr, "plan_targeted")
    assert st == "success" and conf == {"index": "docs", "question_ids": t["question_ids"]}
    assert xcom(dr, "targeted_eval")[0] == "success"
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        triggered = session.scalars(select(DagRun).where(DagRun.dag_id == "nightly_eval",
                                                         DagRun.run_id == f"drift__{dr.run_id}")).one()
        assert triggered.conf["question_ids"] == t["question_ids"]
    # stored: the check, the breaches in the audit log, the report with its plots
    with state.session_scope(env.state_db_url) as s:
        row = s.get(state.DriftCheck, r["check_id"])
        assert row.status == "breach" and sorted(row.breaches) == ["gaps", "queries"]
        assert row.results["query_log"]["invalid"] == 2 and "broken.jsonl line 1" in row.results["query_log"]["problems"][0]
        audits = s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "drift_breach")).scalars().all()
        assert sorted(a.detail["check"] for a in audits) == ["gaps", "queries"]
    html = Path(r["report"]).read_text()
    assert html.count("<svg") >= 6 and "sourdough" in html and "permutation" in html
    # the e-mail
    assert len(smtp_server.messages) == 1
    _, rcpt, msg = smtp_server.inbox.messages[0]
    assert rcpt == ["ml@test.local"] and "[DRIFT]" in msg["Subject"] and "queries" in msg["Subject"]
    text, html_mail = parts(msg)
    assert "uncovered queries" in text and r["report"] in text
    assert all(qid in text for qid in t["question_ids"])  # the targeted questions are named
    assert "http://airflow.example:8080/dags/check_drift/runs/" in html_mail

    # 2. a retried check returns the stored outcome (same check id), sends nothing new by itself
    from ragops.drift.checks import run_check

    again = run_check(env, "docs", check_id=r["check_id"])
    assert again["reused"] and again["breaches"] == r["breaches"]

    # 3. the corpus drifts: a new source about cooking joins the index
    extra = tmp_path / "cooking"
    for i in range(40):
        write(extra, f"recipe{i:02d}.md", f"# Recipe {i}\n\n" + " ".join(
            f"Knead the dough, add {x} and bake at {180 + i} degrees until golden; serve with {y}."
            for x, y in (("flour", "butter"), ("yeast", "olive oil"), ("sugar", "cream"))) * 4)
    sync(env, str(extra), "docs", trigger="test", embedder=embedder)
    dr = run(dag, checks=["corpus", "documents"])
    assert dr.state == "success"
    _, r2 = xcom(dr, "check")
    assert r2["checks"]["corpus"]["status"] == "breach", r2["checks"]["corpus"]
    assert r2["reference"] == r["reference"]  # compared with the first run's snapshot
    assert r2["checks"]["documents"]["evidence"]["documents_count"]["change"] > 0.5
    assert len(smtp_server.messages) == 2 and "corpus" in smtp_server.messages[-1]["Subject"]
    assert [x["reason"] for x in listing(env, "docs")] == ["first_check"]
