"""Whole runs of the real sync_prompts, promote_prompt and nightly_eval DAGs with dag.test(): the
demo corpus in embedded Chroma, the bundled golden set, the offline generator, the prompt
registry in the SQL state store, a person's approval given through Airflow's real HITL REST
API (the Core API app in-process, on the same metadata DB), and the `prompt` e-mails captured
by an SMTP server on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import registry, state
from ragops.config import load_settings
from ragops.indexing import sync
from tests.conftest import SmtpServer, load_dag, parts
from tests.e2e.test_ingest_dag import asset_events

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text()


def version_text(version: int, *, better: bool = False, worse: bool = False, message: str = "") -> str:
    """The shipped prompt as version N. ``better``: the top chunk only (measured on the demo golden
    set: refuses more unanswerable questions, no significant loss of answer F1); ``worse``: the top
    chunk and a refusal threshold that refuses nearly everything (answer F1 collapses)."""
    text = SHIPPED.replace("version: 1", f"version: {version}")
    if message:
        text = text.replace("message: First version.", f"message: {message}")
    if better:
        text = text.replace("top_k: 5", "top_k: 1")
    if worse:
        text = text.replace("top_k: 5", "top_k: 1").replace("threshold: 0.35", "threshold: 0.62")
    return text


@pytest.fixture(scope="module")
def dags(airflow_db):
    return {d: load_dag(d) for d in ("sync_prompts", "promote_prompt", "nightly_eval")}


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder, smtp_server: SmtpServer):
    prompts = tmp_path / "prompts" / "rag_answer"
    prompts.mkdir(parents=True)
    (prompts / "v1.yaml").write_text(version_text(1))
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(prompts.parent))
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("""
alerts:
  from_email: ragops@test.local
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    prompt: [prompt-owners@test.local]
eval:
  default_prompt: rag_answer@production
  baseline_runs: 3
  bootstrap_samples: 1000
  semantic_metrics: false
gates:
  default:
    thresholds: {hit_rate@5: 0.8, faithfulness: 0.8}
    non_regression: {metrics: [answer_f1, refusal_accuracy, hit_rate@5], margin: 0.02}
    budget: {latency_p95_ms: 60000, cost_per_1k_usd: 1.0}
indexes:
  docs: {}
""")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    s = load_settings()
    state.upgrade(s.state_db_url)
    sync(s, str(ROOT / "include" / "corpus"), "docs", trigger="test", embedder=embedder)
    registry.sync(s, "test")  # v1 is production
    return s, prompts


def promote_run(dag, **conf):
    full = {"prompt": "rag_answer", "candidate_version": 0, "dataset": None, "gate_profile": "default",
            "require_approval": None, **conf}
    return dag.test(run_conf=full)


def states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def production(settings) -> int:
    return registry.resolve(settings, "rag_answer", "production")


def test_promotion_rejection_edit_refusal_and_rollback(dags, env, smtp_server: SmtpServer) -> None:
    settings, folder = env
    assert production(settings) == 1

    # 1. a better version is registered by sync_prompts, which announces it through the Asset
    (folder / "v2.yaml").write_text(version_text(2, better=True, message="The top chunk only."))
    events0 = asset_events("ragops://prompts/versions")
    dr = dags["sync_prompts"].test()
    assert dr.state == "success" and asset_events("ragops://prompts/versions") == events0 + 1
    assert registry.pending(settings, "rag_answer") == [2]

    dr = promote_run(dags["promote_prompt"])
    assert dr.state == "success", states(dr)
    assert states(dr)["promote"].endswith("success") and states(dr)["reject"].endswith("skipped")
    assert states(dr)["approval"].endswith("skipped")
    assert production(settings) == 2
    _, rcpt, msg = smtp_server.inbox.messages[-1]
    assert rcpt == ["prompt-owners@test.local"] and "[PROMOTED]" in msg["Subject"]
    text, html = parts(msg)
    assert "rag_answer@2 is now production" in text and "answer_f1" in text and "<table" in html
    hist = registry.history(settings, "rag_answer")
    assert [(h["action"], h["from"], h["to"]) for h in hist] == [("initial", None, 1), ("promoted", 1, 2)]
    assert hist[-1]["evidence"]["passed"] is True and hist[-1]["evidence"]["candidate_run"]

    # 2. a worse version: rejected with the failing checks and the questions that dropped most
    (folder / "v3.yaml").write_text(version_text(3, worse=True, message="Fewer chunks."))
    dr = promote_run(dags["promote_prompt"])
    assert dr.state == "success", states(dr)  # a failed gate is a decision, not a failed task
    assert states(dr)["reject"].endswith("success") and states(dr)["promote"].endswith("skipped")
    assert production(settings) == 2
    _, _, msg = smtp_server.inbox.messages[-1]
    assert "[REJECTED]" in msg["Subject"] and "rag_answer@3 rejected by gate 'default'" in msg["Subject"]
    text, _ = parts(msg)
    assert "FAIL" in text or "fail" in text.lower()
    assert "drop " in text  # the worst questions, with their drop
    assert registry.history(settings, "rag_answer")[-1]["action"] == "rejected"
    assert registry.pending(settings, "rag_answer") == []

    # 3. an edited registered version is refused: the run fails, naming the file and the fix
    original = (folder / "v2.yaml").read_text()
    (folder / "v2.yaml").write_text(original.replace("top_k: 1", "top_k: 2"))  # a quiet edit
    (folder / "v4.yaml").write_text(version_text(4, better=True, message="Same as v2, another message."))
    dr = promote_run(dags["promote_prompt"])
    assert dr.state == "failed"
    with state.session_scope(settings.state_db_url) as s:
        failed = [a.detail for a in s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "dag_failed"))
                  .scalars()]
    assert failed and "prepare" in str(failed[-1]["failed_tasks"])
    with pytest.raises(Exception, match="was edited after rag_answer@2 was registered"):
        registry.load(settings, "rag_answer@production")
    (folder / "v2.yaml").write_text(original)
    assert production(settings) == 2

    # 4. rollback from the command line
    from ragops.cli import main

    assert main(["prompts", "rollback", "rag_answer", "--reason", "test"]) == 0
    assert production(settings) == 1
    assert registry.history(settings, "rag_answer")[-1]["action"] == "rolled_back"


def _approve_when_asked(dag_id: str, choice: str, out: dict, monkeypatch: pytest.MonkeyPatch) -> threading.Thread:
    """A reviewer: waits for the approval task's request, then answers through the HITL REST API."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    client = TestClient(create_app("core"))

    def run() -> None:
        token = client.get("/auth/token").json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.time() + 600
        while time.time() < deadline:
            r = client.get(f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails", headers=headers)
            assert r.status_code == 200, r.text
            pending = [d for d in r.json()["hitl_details"] if not d.get("response_received")]
            if pending:
                ti = pending[0]["task_instance"]
                out["subject"], out["body"] = pending[0]["subject"], pending[0]["body"]
                resp = client.patch(f"/api/v2/dags/{dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                                    f"{ti['task_id']}/-1/hitlDetails", headers=headers,
                                    json={"chosen_options": [choice], "params_input": {}})
                out["status"] = resp.status_code
                out["response"] = resp.json()
                return
            time.sleep(1)
        out["status"] = "timeout"

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("choice", ["Approve", "Reject"])
def test_a_promotion_that_needs_a_person(dags, env, smtp_server: SmtpServer, monkeypatch, choice: str) -> None:
    settings, folder = env
    (folder / "v2.yaml").write_text(version_text(2, better=True, message="The top chunk only."))
    registry.sync(settings, "test")
    answered: dict = {}
    reviewer = _approve_when_asked("promote_prompt", choice, answered, monkeypatch)
    dr = promote_run(dags["promote_prompt"], require_approval=True)
    reviewer.join(timeout=30)
    assert answered.get("status") == 200, answered
    assert "rag_answer@2" in answered["subject"] and "PASSED" in answered["body"]  # the gate's figures
    assert dr.state == "success", states(dr)
    assert states(dr)["approval"].endswith("success")
    if choice == "Approve":
        assert production(settings) == 2
        ev = registry.history(settings, "rag_answer")[-1]
        assert ev["action"] == "promoted" and "approved by" in ev["reason"]
        assert "[PROMOTED]" in smtp_server.inbox.messages[-1][2]["Subject"]
    else:
        assert production(settings) == 1
        ev = registry.history(settings, "rag_answer")[-1]
        assert ev["action"] == "rejected" and "did not approve" in ev["reason"]
        assert "[REJECTED]" in smtp_server.inbox.messages[-1][2]["Subject"]


def test_nightly_rolls_back_a_promotion_that_regressed(dags, env, smtp_server: SmtpServer) -> None:
    settings, folder = env
    (folder / "v2.yaml").write_text(version_text(2, better=True, message="Good."))
    (folder / "v3.yaml").write_text(version_text(3, worse=True, message="Bad, promoted by hand."))
    registry.sync(settings, "test")
    registry.promote(settings, "rag_answer", 2, actor="test")
    conf = {"dataset": "include/eval/golden/docs.jsonl", "prompt": "rag_answer@production", "index": "docs",
            "sample_size": 0, "question_ids": []}
    for _ in range(2):  # the nightly baseline of v2
        assert dags["nightly_eval"].test(run_conf=conf).state == "success"
    registry.promote(settings, "rag_answer", 3, actor="test", reason="skipping the gate")
    dr = dags["nightly_eval"].test(run_conf=conf)
    assert dr.state == "success"
    assert production(settings) == 2  # rolled back automatically
    ev = registry.history(settings, "rag_answer")[-1]
    assert (ev["action"], ev["from"], ev["to"]) == ("rolled_back", 3, 2) and "regressed" in ev["reason"]
    subjects = [m["Subject"] for m in smtp_server.messages]
    assert any("[ROLLED BACK]" in s and "rag_answer" in s for s in subjects), subjects


def test_a_wording_only_change_under_the_extractive_generator_is_refused(dags, env, smtp_server: SmtpServer) -> None:
    """The extractive generator ignores system and template: the gate refuses to decide on answers
    that cannot differ, and says why, instead of evaluating identical answers."""
    settings, folder = env
    reworded = version_text(2, message="Friendlier wording.").replace(
        "You answer questions about the ragops documentation.", "You are a friendly ragops expert.")
    (folder / "v2.yaml").write_text(reworded)
    dr = promote_run(dags["promote_prompt"])
    assert dr.state == "success", states(dr)
    assert states(dr)["reject"].endswith("success") and states(dr)["promote"].endswith("skipped")
    assert production(settings) == 1
    ev = registry.history(settings, "rag_answer")[-1]
    assert ev["action"] == "rejected" and "the extractive generator ignores the prompt's wording" in ev["reason"]
    assert "only in its system" in ev["reason"]
    with state.session_scope(settings.state_db_url) as s:
        assert s.execute(select(state.EvalRun)).first() is None  # nothing evaluated on no evidence
    _, _, msg = smtp_server.inbox.messages[-1]
    assert "[REJECTED]" in msg["Subject"] and "cannot see the change" in msg["Subject"]
    text, _ = parts(msg)
    assert "ignores the prompt's wording" in text and "model.provider: openai" in text


CHAT_V1 = """name: rag_chat
version: {version}
author: tests
message: {message}
variables: [question, context]
system: {system}
template: |-
  Context passages:
  {{context}}

  Question: {{question}}
  Answer briefly, citing passages like [1].
model: {{provider: openai, name: test-chat-model, temperature: 0, max_tokens: 128}}
retrieval: {{top_k: 5}}
refusal: {{threshold: 0.3, message: "I don't know: the documents do not answer this."}}
"""


def test_the_gate_rejects_contradicted_llm_answers_on_the_judge_metric(dags, env, smtp_server: SmtpServer,
                                                                      llm_server, monkeypatch, tmp_path) -> None:
    """An LLM prompt whose answers contradict the passages (the fake server changes a number or a
    negation when the system message says ANSWER_WRONG) is rejected on the judge's faithfulness;
    a reworded prompt whose answers stay identical passes, and the decision says the answers are identical."""
    import json

    settings, folder = env
    chat = folder.parent / "rag_chat"
    chat.mkdir()
    (chat / "v1.yaml").write_text(CHAT_V1.format(version=1, message="First.", system="Answer from the passages."))
    cfg = Path(str(settings.source_file))
    cfg.write_text(cfg.read_text().replace("  semantic_metrics: false", """  semantic_metrics: false
  judge_runs: 1
  prices:
    test-chat-model: {input_per_1m: 0.1, output_per_1m: 0.2}""")  # the default gate on the judge's metric
                   .replace("thresholds: {hit_rate@5: 0.8, faithfulness: 0.8}", "thresholds: {judge_faithfulness: 0.9}")
                   .replace("metrics: [answer_f1, refusal_accuracy, hit_rate@5]", "metrics: [judge_faithfulness, answer_f1]"))
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", json.dumps({
        "conn_type": "http", "host": llm_server.base_url, "password": "sk-e2e",
        "extra": {"model": "judge-model", "timeout": 10, "max_retries": 0}}))
    settings = load_settings()
    registry.sync(settings, "test")
    assert registry.resolve(settings, "rag_chat", "production") == 1

    (chat / "v2.yaml").write_text(CHAT_V1.format(version=2, message="Wrong on purpose.",
                                                 system="Answer from the passages. ANSWER_WRONG"))
    dr = promote_run(dags["promote_prompt"], prompt="rag_chat")
    assert dr.state == "success", states(dr)
    assert states(dr)["reject"].endswith("success") and states(dr)["promote"].endswith("skipped")
    assert registry.resolve(settings, "rag_chat", "production") == 1
    ev = registry.history(settings, "rag_chat")[-1]
    assert ev["action"] == "rejected" and "judge_faithfulness" in ev["reason"]
    checks = {(c["kind"], c["metric"]): c for c in ev["evidence"]["checks"]}
    assert checks[("threshold", "judge_faithfulness")]["passed"] is False
    nr = checks[("non_regression", "judge_faithfulness")]
    assert nr["passed"] is False and nr["production"] == 1.0 and nr["candidate"] < 0.5
    assert ev["evidence"]["identical_answers"] is False
    _, _, msg = smtp_server.inbox.messages[-1]
    assert "[REJECTED]" in msg["Subject"] and "judge_faithfulness" in msg["Subject"]
    with state.session_scope(settings.state_db_url) as s:
        runs = {r.run_id: r for r in s.execute(select(state.EvalRun)).scalars()}
    cand = next(r for rid, r in runs.items() if rid.endswith("__candidate"))
    assert cand.metrics["judge"]["calls"] > 0 and cand.metrics["operations"]["judge_tokens_in"] > 0
    n_requests = llm_server.count

    # a reworded but equivalent version: the LLM sees it (it is evaluated, both sides call the model)
    (chat / "v3.yaml").write_text(CHAT_V1.format(version=3, message="Reworded.",
                                                 system="Use only the passages to answer."))
    dr = promote_run(dags["promote_prompt"], prompt="rag_chat")
    assert dr.state == "success", states(dr)
    assert states(dr)["promote"].endswith("success")
    assert registry.resolve(settings, "rag_chat", "production") == 3
    assert llm_server.count - n_requests >= 2 * 50  # production was measured again, not replayed
    ev = registry.history(settings, "rag_chat")[-1]
    assert ev["evidence"]["identical_answers"] is True and "identical answers" in ev["evidence"]["note"]
    text, _ = parts(smtp_server.inbox.messages[-1][2])
    assert "identical answers on all" in text
