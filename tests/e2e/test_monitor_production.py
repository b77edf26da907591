"""monitor_production end to end: live traffic from `ragops ask` answered by the bundled local model
(a real `ragops llm serve`), feedback from `ragops feedback`, a planted batch of ungrounded
production answers, then the DAG through Airflow (dag.test) with a real SMTP server on loopback:
the hallucination breach is found, the e-mail names the planted traces, and a second run's
identical alert is folded instead of sent again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.cli import main
from ragops.config import load_settings
from ragops.generation.local import SERVED_NAME
from ragops.indexing import sync
from ragops.production import tracing
from ragops.registry import promote
from ragops.registry import sync as sync_prompts
from tests.conftest import SmtpServer, load_dag, parts
from tests.local_llm import LocalLlm

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DOCS = ["concepts/versioned-collections-and-alias.md", "concepts/token-aware-chunking.md",
        "concepts/drift-detection.md", "concepts/prompt-registry-and-gates.md", "cli/ragops-ingest.md"]
CONFIG = """
alerts:
  from_email: ragops@test.local
  base_url: http://airflow.example:8080
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    production: [llmops@test.local]
eval:
  prices:
    smollm2-135m-instruct-q4_1: {free: true}
production:
  min_traces: 10
  sample_rate: 1.0
"""
# production answers that state what the passage does not: another number, another name
PLANTED = [
    ("How many versions does a rebuild keep?", "A rebuild keeps 12 versions and deletes them every hour [1].",
     "ragops keeps 2 versions of an index for instant rollback; older ones are dropped."),
    ("Which DAG checks drift?", "The ingest_documents DAG checks drift with a t-test on Fridays [1].",
     "The check_drift DAG compares the corpus and the queries with a reference snapshot."),
    ("How big is a chunk?", "Chunks are 4,096 characters long with no overlap [1].",
     "Chunks are about 200 word pieces of the embedding model with an overlap of 30."),
    ("Who approves a prompt?", "Prompts are approved by the Chroma server automatically [1].",
     "A passed gate can also wait for a person in Airflow's Required Actions."),
]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("monitor_production")


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder, local_llm: LocalLlm):
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text(CONFIG)
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    monkeypatch.setenv("RAGOPS_LLM_BASE_URL", local_llm.base_url)
    s = load_settings()
    state.upgrade(s.state_db_url)
    corpus = tmp_path / "corpus"
    for rel in DOCS:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "include" / "corpus" / rel, corpus / rel)
    sync(s, str(corpus), "docs", trigger="test", embedder=embedder)
    sync_prompts(s)
    promote(s, "rag_local", 1, actor="test", reason="the local model serves production in this test")
    return s


def ask(capsys, question: str) -> dict:
    assert main(["ask", question, "--prompt", "rag_local", "--user", "alice@example.com", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_live_traffic_feedback_and_a_hallucination_breach_by_email(dag, env, smtp_server: SmtpServer, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    # 1. live traffic through the reference application path, answered by the local model
    a = ask(capsys, "How does ragops switch the serving index version?")
    assert a["served_model"] == SERVED_NAME and a["tokens_out"] > 0 and a["answer"] and not a["cache_hit"]
    assert a["prompt"] == "rag_local@1" and a["index_version"] == 1 and a["cost_usd"] == 0.0  # free: local
    b = ask(capsys, "How many word pieces are in a chunk?")
    assert b["trace_id"] != a["trace_id"] and b["served_model"] == SERVED_NAME
    assert main(["feedback", a["trace_id"], "down", "--comment", "too vague"]) == 0
    capsys.readouterr()
    # 2. a batch of production answers that the passages do not support
    planted = [tracing.record(q, bad, settings=env, index="docs", index_version=1, prompt="rag_local",
                              prompt_version=1, model="smollm2-135m-instruct-q4_1", tokens_in=200, tokens_out=20,
                              latency_ms=900.0, chunks=[{"id": f"p{i}", "doc_id": "x.md", "score": 0.6, "n": 1,
                                                         "text": passage}])
               for _ in range(4) for i, (q, bad, passage) in enumerate(PLANTED)]

    dr = dag.test(run_conf={"window": "1d", "evaluate": True, "sample_rate": 1.0, "daily_eval_cap": 500})
    assert dr.state == "success"  # a breach is a finding, not a failed task
    ti = next(t for t in dr.get_task_instances() if t.task_id == "monitor")
    r = ti.xcom_pull(task_ids="monitor")
    assert r["load"]["traces"] == 18 and r["load"]["feedback"] == 1 and not r["load"]["skipped"]
    assert r["online_eval"]["evaluated"] == 18  # sample_rate 1: every trace
    h = r["checks"]["hallucination"]
    assert r["breaches"] == ["hallucination"] and h["k"] >= 16 and h["p_value"] < 0.01, h
    with state.session_scope(env.state_db_url) as s:
        t = s.get(state.Trace, a["trace_id"])
        assert t.served_model == SERVED_NAME and t.feedback == -1.0 and t.user_hash and "alice" not in t.user_hash
        assert s.get(state.TraceEval, a["trace_id"]) is not None
        assert s.get(state.MonitorRun, r["run_id"]).status == "breach"
    # the e-mail: to the production recipients, with the worst (planted) traces and their claims
    assert len(smtp_server.messages) == 1
    _, rcpt, msg = smtp_server.inbox.messages[0]
    assert rcpt == ["llmops@test.local"] and "[PRODUCTION]" in msg["Subject"] and "hallucination" in msg["Subject"]
    text, html = parts(msg)
    assert sum(tid in text for tid in planted) >= 3 and "unsupported" in text
    assert "http://airflow.example:8080/dags/monitor_production/runs/" in html

    # 3. the next hourly run finds the same breach: folded into the outbox, no second e-mail
    dr2 = dag.test(run_conf={"window": "1d", "evaluate": True, "sample_rate": 1.0, "daily_eval_cap": 500})
    assert dr2.state == "success"
    assert len(smtp_server.messages) == 1
    with state.session_scope(env.state_db_url) as s:
        rows = s.execute(select(state.AlertRecord).where(state.AlertRecord.event == "production")).scalars().all()
        assert sorted(r.status for r in rows) == ["folded", "sent"]
