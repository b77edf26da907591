"""Whole runs of the real nightly_eval DAG with dag.test(): the demo corpus in embedded Chroma,
the bundled golden set, the offline generator, the SQL state store, and the regression e-mail
captured by an SMTP server on loopback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.config import load_settings
from ragops.indexing import sync
from tests.conftest import SmtpServer, load_dag, parts
from tests.e2e.test_ingest_dag import asset_events

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("nightly_eval")


@pytest.fixture
def eval_env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder):
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "include" / "prompts", prompts)
    v1 = (prompts / "rag_answer" / "v1.yaml").read_text()
    # a clearly worse version: one chunk of context and a refusal threshold that refuses most questions
    v2 = (v1.replace("version: 1", "version: 2").replace("top_k: 5", "top_k: 1")
          .replace("threshold: 0.35", "threshold: 0.62"))
    (prompts / "rag_answer" / "v2.yaml").write_text(v2)
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(prompts))
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("""
alerts:
  from_email: ragops@test.local
  base_url: http://airflow.example:8080
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    eval: [ml-team@test.local]
eval:
  default_prompt: rag_answer@1
  baseline_runs: 3
  bootstrap_samples: 1000
indexes:
  docs: {}
""")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    sync(s, str(ROOT / "include" / "corpus"), "docs", trigger="test", embedder=embedder)
    return s


def run(dag, **conf):
    full = {"dataset": "include/eval/golden/docs.jsonl", "prompt": "rag_answer@1", "index": "docs",
            "sample_size": 0, "question_ids": [], **conf}
    return dag.test(run_conf=full)


def xcom(dr, task_id: str):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


def eval_runs(settings) -> list[state.EvalRun]:
    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.EvalRun).order_by(state.EvalRun.started_at)).scalars())


def test_schedule_is_nightly_and_on_index_updates(dag) -> None:
    assert dag.timetable.timetable.expression == "0 2 * * *"
    assert "ragops://index/docs" in repr(dag.timetable.asset_condition)
    assert set(dag.params) == {"dataset", "prompt", "index", "sample_size", "question_ids"}
    for name in dag.params:
        assert dag.params.get_param(name).schema.get("title"), f"Param {name} has no title"


def test_nightly_baseline_then_regression_email(dag, eval_env, smtp_server: SmtpServer, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    events0 = asset_events("ragops://eval/docs")

    # 1. first nightly run: evaluated, stored, reported; nothing to compare with yet
    dr = run(dag)
    assert dr.state == "success"
    first = eval_runs(eval_env)
    assert [r.status for r in first] == ["success"]
    r1 = first[0]
    assert (r1.prompt_name, r1.prompt_version, r1.index_version, r1.n_questions) == ("rag_answer", 1, 1, 50)
    assert r1.config["purpose"] == "nightly"
    out = Path(r1.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 50 and metrics["counts"]["questions"] == 50
    row = json.loads(lines[0])
    assert {"retrieved_docs", "contexts", "answer", "citations", "metrics", "tokens_in", "latency_ms"} <= set(row)
    assert metrics["metrics"]["hit_rate@5"] >= 0.8  # the golden set's documents are found
    report = (out / "report.html").read_text()
    assert "Worst questions" in report and "<svg" in report and "<script" not in report
    assert xcom(dr, "compare")["verdict"] == "no baseline"
    assert asset_events("ragops://eval/docs") == events0 + 1

    # 2. same prompt again: identical answers, no regression, no e-mail
    dr = run(dag)
    assert dr.state == "success"
    assert xcom(dr, "compare")["verdict"] == "ok"
    assert smtp_server.messages == []

    # 3. a worse prompt: a significant drop -> one eval e-mail with the figures and worst questions
    dr = run(dag, prompt="rag_answer@2")
    assert dr.state == "success"  # a regression is a finding, not a failed task
    verdict = xcom(dr, "compare")
    # the two nightly runs above ran on the same day: they count as one night of the baseline
    assert verdict["verdict"] == "regression" and verdict["baseline_runs"] == 1
    runs = eval_runs(eval_env)
    assert runs[-1].prompt_version == 2 and runs[-1].config["purpose"] == "adhoc"  # never joins the baseline
    assert len(smtp_server.inbox.messages) == 1
    _, rcpt, msg = smtp_server.inbox.messages[0]
    assert rcpt == ["ml-team@test.local"]
    assert "[ragops][REGRESSION] nightly_eval" in msg["Subject"]
    text, html = parts(msg)
    for m in verdict["regressed"]:
        assert m in text
    assert "baseline" in text and "95% CI" in text
    assert "drop " in text  # the worst questions, with their drop
    assert "<table" in html

    # 4. a rerun of the same Airflow run replaces its eval run instead of adding a duplicate
    n = len(eval_runs(eval_env))
    from ragops.evaluation.runner import run_eval

    again = run_eval(eval_env, None, "rag_answer@1", "docs", run_id=runs[0].run_id, purpose="nightly")
    assert again["counts"]["questions"] == 50 and len(eval_runs(eval_env)) == n
    with state.session_scope(eval_env.state_db_url) as s:
        from sqlalchemy import func

        assert s.scalar(select(func.count()).select_from(state.EvalResult)
                        .where(state.EvalResult.run_id == runs[0].run_id)) == 50


def test_llm_prompt_and_judge_through_the_llm_default_connection(dag, eval_env, llm_server, monkeypatch,
                                                                 tmp_path: Path) -> None:
    """A prompt with model.provider openai answers through the Connection llm_default (host = base
    URL, password = API key, extra = model, timeout, retries); the judge uses it too."""
    import yaml

    from tests.unit.test_llm import CHAT_PROMPT

    prompts = Path(os.environ["RAGOPS_PROMPTS_DIR"])
    (prompts / "rag_chat").mkdir()
    (prompts / "rag_chat" / "v1.yaml").write_text(yaml.safe_dump(CHAT_PROMPT, sort_keys=False))
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", json.dumps({
        "conn_type": "http", "host": llm_server.base_url, "password": "sk-e2e-secret",
        "extra": {"model": "judge-model", "timeout": 5, "max_retries": 0}}))
    dr = run(dag, prompt="rag_chat@1", question_ids=["q001", "q002", "q041"])
    assert dr.state == "success"
    result = xcom(dr, "evaluate")
    assert result["questions"] == 3
    with state.session_scope(eval_env.state_db_url) as s:
        run_row = s.get(state.EvalRun, result["eval_run_id"])
        assert run_row.generator == "openai:test-chat-model" and run_row.config["purpose"] == "adhoc"
        assert run_row.config["judge"] == {"model": "judge-model", "runs": 3}
    rows = [json.loads(line) for line in (Path(run_row.output_dir) / "results.jsonl").read_text().splitlines()]
    answered = [r for r in rows if not r["refused"]]
    assert answered and all("judge_relevance" in r["metrics"] for r in answered)
    headers = {h.get("authorization") for h in llm_server.headers}
    assert headers == {"Bearer sk-e2e-secret"}
    assert {r["model"] for r in llm_server.requests} == {"test-chat-model", "judge-model"}


def test_an_updated_index_without_a_golden_set_is_skipped(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    from airflow.sdk import Asset

    from ragops.airflow import evaluation

    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("indexes:\n  docs: {golden: include/eval/golden/docs.jsonl}\n  papers: {}\n")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    params = {"dataset": "include/eval/golden/docs.jsonl", "prompt": "rag_answer@1", "index": "docs",
              "sample_size": 0, "question_ids": []}
    result = evaluation.evaluate(params, "asset_triggered__x", "asset_triggered",
                                 [Asset(name="ragops_index_papers", uri="ragops://index/papers")], None)
    assert result == {"skipped": "no golden set for index papers", "index": "papers"}
    assert evaluation.compare(result, "nightly_eval", "asset_triggered__x")["verdict"] == "skipped"
    assert not data_dir.exists(), "a skipped run touches nothing"


def test_nightly_runs_measure_again_and_a_served_model_change_sends_a_model_alert(
        dag, eval_env, llm_server, smtp_server: SmtpServer, monkeypatch, tmp_path: Path) -> None:
    """Every night calls the model (the cache never replays another night), the served model is
    recorded on the run, and when the endpoint starts serving another model under the same name a
    `model` alert goes out and the regression check says it compares unlike runs."""
    import yaml

    from tests.unit.test_llm import CHAT_PROMPT

    prompts = Path(os.environ["RAGOPS_PROMPTS_DIR"])
    (prompts / "rag_chat").mkdir()
    (prompts / "rag_chat" / "v1.yaml").write_text(yaml.safe_dump(CHAT_PROMPT, sort_keys=False))
    cfg = Path(os.environ["RAGOPS_CONFIG"])
    cfg.write_text(cfg.read_text().replace("default_prompt: rag_answer@1", "default_prompt: rag_chat@1\n  judge: false")
                   .replace("    eval: [ml-team@test.local]", "    eval: [ml-team@test.local]\n    model: [models@test.local]"))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", json.dumps({
        "conn_type": "http", "host": llm_server.base_url, "password": "sk-e2e",
        "extra": {"model": "test-chat-model", "timeout": 10, "max_retries": 0}}))
    llm_server.response_model = "served-a"

    for night in (1, 2):
        dr = run(dag, prompt="rag_chat@1")
        assert dr.state == "success"
        assert llm_server.count == 50 * night  # the second night asked the model again
        verdict = xcom(dr, "compare")
        assert "model_change" not in verdict and not verdict["unlike_baseline"]
    assert verdict["verdict"] == "ok" and smtp_server.messages == []
    runs = eval_runs(eval_env)
    assert [r.config["purpose"] for r in runs] == ["nightly", "nightly"]
    assert all(r.config["served_models"] == ["served-a"] and r.metrics["served_models"] == ["served-a"] for r in runs)

    llm_server.response_model = "served-b"  # a new snapshot behind the same requested name
    dr = run(dag, prompt="rag_chat@1")
    assert dr.state == "success" and llm_server.count == 150
    verdict = xcom(dr, "compare")
    assert verdict["model_change"] == {"from": ["served-a"], "to": ["served-b"]}
    assert verdict["unlike_baseline"] is True and "compares unlike runs" in verdict["note"]
    assert eval_runs(eval_env)[-1].config["served_models"] == ["served-b"]
    [(_, rcpt, msg)] = smtp_server.inbox.messages
    assert rcpt == ["models@test.local"] and "[MODEL CHANGED]" in msg["Subject"]
    text, _ = parts(msg)
    assert "served-a -> served-b" in text and "unlike runs" in text
