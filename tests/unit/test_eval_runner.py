"""run_eval end to end without Airflow: a small real index (embedded Chroma, bundled model), golden
sets written by the tests, the offline generator and a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from ragops import state
from ragops.config import load_settings
from ragops.errors import DatasetError, EvalError, PromptError, UnknownIndexError
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync
from ragops.llm import LlmSettings
from tests.conftest import write
from tests.llm_server import LlmServer
from tests.unit.test_llm import CHAT_PROMPT

ROOT = Path(__file__).resolve().parents[2]
RAGOPS = str(Path(sys.executable).parent / "ragops")
DOCS = {
    "scheduler.md": "# Scheduler\n\nThe scheduler starts the ingest every hour on the hour. A failed run is retried "
                    "twice with exponential backoff before anyone is paged.\n",
    "storage.md": "# Storage\n\nVectors live in Chroma collections named after the index and a version number. "
                  "The state store is a SQLite file in the data directory unless PostgreSQL is configured.\n",
    "alerts.md": "# Alerts\n\nAlert e-mails go to the on-call address of each event type. Identical alerts "
                 "inside one hour are folded into the next e-mail.\n",
}
GOLDEN = [
    {"id": "q1", "question": "How often does the scheduler start the ingest?",
     "reference_answer": "every hour on the hour", "relevant_doc_ids": ["scheduler.md"], "tags": ["ops"]},
    {"id": "q2", "question": "Where does the state store live by default?",
     "reference_answer": "a SQLite file in the data directory", "relevant_doc_ids": ["storage.md"], "tags": ["storage"]},
    {"id": "q3", "question": "What happens to identical alerts inside one hour?",
     "reference_answer": "they are folded into the next e-mail", "relevant_doc_ids": ["alerts.md"], "tags": ["ops"]},
    {"id": "q4", "question": "How many times is a failed run retried <script>alert(1)</script>?",
     "reference_answer": "twice", "relevant_doc_ids": ["scheduler.md"], "tags": ["ops"]},
    {"id": "q5", "question": "Which Kubernetes operator deploys the GPU inference fleet?", "answerable": False,
     "tags": ["unanswerable"]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder):
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "include" / "prompts", prompts)
    chat = prompts / "rag_chat"
    chat.mkdir()
    (chat / "v1.yaml").write_text(yaml.safe_dump(CHAT_PROMPT, sort_keys=False))
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(prompts))
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("""
eval:
  judge_runs: 2
  max_consecutive_errors: 2
  blocklist: [hourly]
  prices:
    test-chat-model: {input_per_1m: 1.0, output_per_1m: 2.0}
indexes:
  docs: {}
""")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    corpus = tmp_path / "corpus"
    for rel, text in DOCS.items():
        write(corpus, rel, text)
    sync(s, str(corpus), "docs", trigger="test", embedder=embedder)
    golden = write_jsonl(tmp_path / "golden.jsonl", GOLDEN)
    return s, golden, prompts, corpus


def runs_and_results(settings) -> tuple[int, int]:
    with state.session_scope(settings.state_db_url) as s:
        return (s.scalar(select(func.count()).select_from(state.EvalRun)),
                s.scalar(select(func.count()).select_from(state.EvalResult)))


def llm(server: LlmServer, **kw) -> LlmSettings:
    return LlmSettings(**{"base_url": server.base_url, "api_key": "sk-test", "model": "judge-model",
                          "timeout": 5.0, "max_retries": 0, **kw})


def test_offline_run_writes_results_metrics_report_and_state(env, embedder) -> None:
    settings, golden, _, _ = env
    summary = run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder, run_id="offline-1")
    out = Path(summary["output_dir"])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5"]
    by_id = {r["id"]: r for r in rows}
    q1 = by_id["q1"]
    assert q1["retrieved_docs"][0]["doc_id"] == "scheduler.md" and q1["contexts"][0]["chunk_id"]
    assert "every hour on the hour" in q1["answer"] and q1["citations"] and not q1["refused"]
    assert q1["metrics"]["hit_rate@1"] == 1.0 and q1["metrics"]["faithfulness"] == 1.0
    assert q1["metrics"]["citation_validity"] == 1.0 and q1["metrics"]["answer_f1"] > 0.3
    assert q1["tokens_in"] > 50 and q1["tokens_out"] > 5 and q1["latency_ms"] > 0
    # safety: the blocklist word "hourly" is not in any answer; no PII in the corpus
    assert all(r["metrics"]["pii_rate"] == 0 and r["metrics"]["blocklist_rate"] == 0 for r in rows)
    assert "refusal_accuracy" in by_id["q5"]["metrics"] and "hit_rate@1" not in by_id["q5"]["metrics"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"] == summary["counts"] and metrics["counts"]["questions"] == 5
    assert metrics["metrics"]["hit_rate@5"] == 1.0
    assert metrics["operations"]["cost_per_1k_questions_usd"] == 0.0  # extractive is priced at 0
    assert set(metrics["by_tag"]) == {"ops", "storage", "unanswerable"}
    report = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report and "<script>alert(1)" not in report
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, "offline-1")
        assert (run.status, run.prompt_name, run.prompt_version, run.index_version) == ("success", "rag_answer", 1, 1)
        assert run.dataset_hash == summary["dataset"]["sha256"] and run.prompt_hash
    assert runs_and_results(settings) == (1, 5)


def test_prompt_parameters_change_the_offline_answers(env, embedder) -> None:
    settings, golden, prompts, _ = env
    v1 = (prompts / "rag_answer" / "v1.yaml").read_text()
    (prompts / "rag_answer" / "v2.yaml").write_text(
        v1.replace("version: 1", "version: 2").replace("top_k: 5", "top_k: 1")
        .replace("max_sentences: 2", "max_sentences: 1").replace("threshold: 0.35", "threshold: 0.99"))
    a = run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder)
    b = run_eval(settings, golden, "rag_answer@2", "docs", embedder=embedder)
    rows_b = [json.loads(line) for line in (Path(b["output_dir"]) / "results.jsonl").read_text().splitlines()]
    assert all(len(r["contexts"]) == 1 for r in rows_b)
    assert b["counts"]["refused"] == 5 and a["counts"]["refused"] < 5  # the 0.99 threshold refuses everything
    assert b["prompt"]["version"] == 2 and b["metrics"]["refusal_accuracy"] == 1.0


@pytest.mark.parametrize(("case", "error", "needle"), [
    ("empty", DatasetError, "has no questions"),
    ("unknown_doc", DatasetError, "document 'missing.md' (question 'q1', line 2): unknown to every source synced "
                                  "into index 'docs'"),
    ("bad_line", DatasetError, ":2: field 'answerable'"),
    ("template_missing_variable", PromptError, "declares context but the template never uses"),
    ("no_llm", EvalError, "llm_default"),
    ("unknown_index", UnknownIndexError, "unknown index 'nope'"),
    ("unknown_version", PromptError, "rag_answer@9 is not registered"),
])
def test_bad_input_is_refused_before_anything_is_stored(env, embedder, tmp_path: Path, case: str, error: type,
                                                        needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, golden, prompts, _ = env
    monkeypatch.delenv("RAGOPS_LLM_BASE_URL", raising=False)
    prompt, index, dataset = "rag_answer@1", "docs", golden
    if case == "empty":
        dataset = tmp_path / "empty.jsonl"
        dataset.write_text("\n\n")
    elif case == "unknown_doc":
        dataset = tmp_path / "u.jsonl"
        dataset.write_text("\n" + json.dumps({**GOLDEN[0], "relevant_doc_ids": ["missing.md"]}) + "\n")
    elif case == "bad_line":
        dataset = tmp_path / "bad.jsonl"
        dataset.write_text(json.dumps(GOLDEN[0]) + "\n" + json.dumps({**GOLDEN[1], "answerable": "yes"}) + "\n")
    elif case == "template_missing_variable":
        v1 = (prompts / "rag_answer" / "v1.yaml").read_text()
        (prompts / "rag_answer" / "v3.yaml").write_text(
            v1.replace("version: 1", "version: 3").replace("  {context}\n", "\n"))
        prompt = "rag_answer@3"
    elif case == "no_llm":
        prompt = "rag_chat@1"
    elif case == "unknown_index":
        index = "nope"
    elif case == "unknown_version":
        prompt = "rag_answer@9"
    with pytest.raises(error, match=None) as exc:
        run_eval(settings, dataset, prompt, index, embedder=embedder)
    assert needle in str(exc.value)
    assert runs_and_results(settings) == (0, 0)


def results(summary: dict) -> list[dict]:
    return [json.loads(line) for line in (Path(summary["output_dir"]) / "results.jsonl").read_text().splitlines()]


def test_llm_runs_call_the_model_the_cache_serves_retries_and_reuse(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, _, _ = env
    llm_server.response_model = "served-a"  # what the endpoint reports (and lists at GET /v1/models)

    def run(run_id: str, **kw) -> dict:
        return run_eval(settings, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server),
                        run_id=run_id, **kw)

    first = run("night-1", purpose="nightly")
    n = llm_server.count
    rows = results(first)
    answered = [r for r in rows if not r["refused"]]
    assert first["status"] == "success" and n == 5 + len(answered) * 2 * 2  # answers + 2 judge tasks x 2 runs
    # the fake generator quotes passage [1]: every claim is in the context, the judge says so
    assert answered and all(r["metrics"]["judge_faithfulness"] == 1.0 for r in answered)
    assert first["served_models"] == ["served-a"]
    assert first["operations"]["tokens_in"] == sum(r["tokens_in"] for r in rows)
    assert first["operations"]["cost_per_1k_questions_usd"] > 0 and first["operations"]["cost_this_run_usd"] > 0
    # the judge's own accounting, apart from the generator's
    ops, judge = first["operations"], first["judge"]
    assert ops["judge_tokens_in"] == sum(r["judge_tokens_in"] for r in rows) > 0
    assert ops["judge_tokens_out"] == sum(r["judge_tokens_out"] for r in rows) > 0
    assert ops["judge_ms"] == pytest.approx(sum(r["judge_ms"] for r in rows), abs=0.1) and ops["judge_ms"] > 0
    assert ops["judge_unparsed"] == 0 and judge["calls"] == len(answered) * 4 and judge["model"] == "judge-model"
    assert "judge_cost_note" in judge  # no price for the judge model: said, not zero
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.EvalRun, "night-1").config["served_models"] == ["served-a"]

    second = run("night-2", purpose="nightly")  # the next night measures again
    assert llm_server.count == 2 * n and second["operations"]["cached_answers"] == 0

    retry = run("night-1", purpose="nightly")  # an Airflow retry of the first night: from its cache
    assert llm_server.count == 2 * n
    assert retry["operations"]["cost_this_run_usd"] == 0 and retry["operations"]["cached_answers"] == 5
    assert retry["metrics"]["judge_faithfulness"] == first["metrics"]["judge_faithfulness"]
    assert retry["judge"]["cached_calls"] == judge["calls"]

    candidate = run("cand-1", purpose="candidate")  # a gate run measures too
    assert llm_server.count == 3 * n and candidate["operations"]["cached_answers"] == 0

    reuse1 = run("adhoc-1", reuse_cache=True)  # the shared cache: filled by the first reuse run ...
    assert llm_server.count == 4 * n and reuse1["operations"]["cached_answers"] == 0
    reuse2 = run("adhoc-2", reuse_cache=True)  # ... and replayed by the next one
    assert llm_server.count == 4 * n and reuse2["operations"]["cached_answers"] == 5
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.EvalRun, "adhoc-2").config["reuse_cache"] is True

    llm_server.response_model = "served-b"  # same requested name, another model behind it
    reuse3 = run("adhoc-3", reuse_cache=True)
    assert llm_server.count == 5 * n and reuse3["operations"]["cached_answers"] == 0
    assert reuse3["served_models"] == ["served-b"]


def test_unparseable_judge_verdicts_are_counted_in_results_and_metrics(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, _, _ = env
    llm_server.mode = "judge_garbage"  # every judge verdict is prose; the answers are fine
    summary = run_eval(settings, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server))
    rows = results(summary)
    answered = [r for r in rows if not r["refused"]]
    assert summary["status"] == "success" and answered
    assert all(r["detail"]["judge_unparsed"] == {"faithfulness": 2, "relevance": 2} for r in answered)
    assert all("judge_faithfulness" not in r["metrics"] for r in answered)  # no verdict, no score
    written = json.loads((Path(summary["output_dir"]) / "metrics.json").read_text())
    assert written["judge"]["judge_unparsed"] == len(answered) * 4
    assert written["judge"]["judge_unparsed_by_task"] == {"faithfulness": len(answered) * 2,
                                                          "relevance": len(answered) * 2}
    assert written["judge"]["questions_with_unparsed_verdicts"] == len(answered)
    assert written["operations"]["judge_unparsed"] == len(answered) * 4


def test_a_contradicted_answer_lowers_the_judge_faithfulness(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, prompts, _ = env
    wrong = {**CHAT_PROMPT, "version": 2, "system": CHAT_PROMPT["system"] + " ANSWER_WRONG"}
    (prompts / "rag_chat" / "v2.yaml").write_text(yaml.safe_dump(wrong, sort_keys=False))
    good = run_eval(settings, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server))
    bad = run_eval(settings, golden, "rag_chat@2", "docs", embedder=embedder, llm=llm(llm_server))
    g, b = {r["id"]: r for r in results(good)}, {r["id"]: r for r in results(bad)}
    answered = [q for q in g if not g[q]["refused"] and not b[q]["refused"]]
    assert answered
    for q in answered:
        assert g[q]["answer"] != b[q]["answer"]  # the steered generator changed a number or a negation
        assert b[q]["metrics"]["judge_faithfulness"] < g[q]["metrics"]["judge_faithfulness"] == 1.0
        assert b[q]["detail"]["judge_unsupported_claims"]
    assert bad["metrics"]["judge_faithfulness"] < good["metrics"]["judge_faithfulness"]


def test_unknown_cost_is_reported_and_free_models_cost_nothing(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, _, _ = env
    base = {**settings.eval.__dict__, "judge": False}
    unpriced = settings.replace(eval=settings.eval.__class__(**{**base, "prices": {}}))
    s1 = run_eval(unpriced, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server))
    assert "cost_per_1k_questions_usd" not in s1["operations"]
    assert "no price for model 'test-chat-model' in eval.prices" in s1["operations"]["cost_note"]
    llm_server.response_model = "local-model-q4"  # priced by the name the endpoint serves
    free = settings.replace(eval=settings.eval.__class__(**{**base, "prices": {
        "local-model-q4": {"input_per_1m": 0.0, "output_per_1m": 0.0, "free": True}}}))
    s2 = run_eval(free, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server))
    assert s2["operations"]["cost_per_1k_questions_usd"] == 0 and "cost_note" not in s2["operations"]


def test_endpoint_down_mid_run_keeps_completed_results(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, _, _ = env
    settings = settings.replace(eval=settings.eval.__class__(**{**settings.eval.__dict__, "judge": False}))
    llm_server.ok_requests = 2
    llm_server.mode = "down_after"
    with pytest.raises(EvalError) as exc:
        run_eval(settings, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server), run_id="down-1")
    assert "completed results are kept" in str(exc.value) and exc.value.permanent is False
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, "down-1")
        assert run.status == "failed" and "HTTP 500" in run.error
        out = Path(run.output_dir)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [bool(r["error"]) for r in rows] == [False, False, True, True]  # stopped after 2 errors in a row
    assert json.loads((out / "metrics.json").read_text())["counts"] == {
        "questions": 4, "ok": 2, "errors": 2, "answerable": 2, "unanswerable": 0, "refused": 0, "truncated": 0}
    assert runs_and_results(settings) == (1, 4)


def test_garbage_answers_become_per_question_errors(env, embedder, llm_server: LlmServer) -> None:
    settings, golden, _, _ = env
    settings = settings.replace(eval=settings.eval.__class__(**{**settings.eval.__dict__, "judge": False}))
    llm_server.garbage_every = 2
    llm_server.mode = "garbage_some"
    summary = run_eval(settings, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server))
    assert summary["status"] == "partial" and summary["counts"]["errors"] == 2 and summary["counts"]["ok"] == 3
    rows = [json.loads(line) for line in (Path(summary["output_dir"]) / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows if r["error"]] == ["q2", "q4"]  # every 2nd request got an HTML page
    assert all("without an answer text" in r["error"] and llm_server.base_url in r["error"] for r in rows if r["error"])
    assert "Errors" in (Path(summary["output_dir"]) / "report.html").read_text()


def test_empty_answers_are_per_question_errors_and_cut_answers_are_counted(env, embedder,
                                                                            llm_server: LlmServer) -> None:
    settings, golden, prompts, _ = env
    settings = settings.replace(eval=settings.eval.__class__(**{**settings.eval.__dict__, "judge": False}))
    empty = {**CHAT_PROMPT, "version": 2, "system": CHAT_PROMPT["system"] + " ANSWER_EMPTY"}
    (prompts / "rag_chat" / "v2.yaml").write_text(yaml.safe_dump(empty, sort_keys=False))
    cut = {**CHAT_PROMPT, "version": 3, "model": {**CHAT_PROMPT["model"], "max_tokens": 3}}
    (prompts / "rag_chat" / "v3.yaml").write_text(yaml.safe_dump(cut, sort_keys=False))
    with pytest.raises(EvalError, match="empty answer") as exc:
        run_eval(settings, golden, "rag_chat@2", "docs", embedder=embedder, llm=llm(llm_server), run_id="empty-1")
    assert "completed results are kept" in str(exc.value)
    with state.session_scope(settings.state_db_url) as s:
        out = Path(s.get(state.EvalRun, "empty-1").output_dir)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    answered = [r for r in rows if not r["error"]]
    assert all("empty answer" in r["error"] and "max_tokens" in r["error"] for r in rows if r["error"])
    assert len(rows) - len(answered) >= 1
    summary = run_eval(settings, golden, "rag_chat@3", "docs", embedder=embedder, llm=llm(llm_server))
    answered = summary["counts"]["ok"] - summary["counts"]["refused"]
    assert answered > 0 and summary["counts"]["truncated"] == answered


def test_cli_eval_run_runs_check_and_validate(env, tmp_path: Path) -> None:
    settings, golden, prompts, _ = env
    e = dict(os.environ)

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([RAGOPS, *args], capture_output=True, text=True, env=e, timeout=600)
        assert proc.returncode == code, proc.stderr
        return proc

    out = json.loads(cli("eval", "run", "--dataset", str(golden), "--prompt", "rag_answer@1", "--baseline",
                         "--json").stdout)
    assert out["counts"]["questions"] == 5 and out["purpose"] == "nightly"
    text = cli("eval", "run", "--dataset", str(golden), "--sample", "3", "--reuse-cache").stdout
    assert "3 questions" in text and "report:" in text
    runs = json.loads(cli("eval", "runs", "--json").stdout)
    assert len(runs) == 2 and runs[1]["purpose"] == "nightly"
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.EvalRun, runs[0]["run_id"]).config["reuse_cache"] is True  # --reuse-cache reached run_eval
        assert s.get(state.EvalRun, runs[1]["run_id"]).config["reuse_cache"] is False
    assert "against 1 baseline run" in cli("eval", "check", runs[0]["run_id"]).stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    err = cli("eval", "validate", str(bad), code=2).stderr
    assert "bad.jsonl:1: field 'question'" in err
    ok = cli("eval", "validate", str(golden), "--index", "docs").stdout
    assert "5 questions (4 answerable, 1 unanswerable)" in ok


def test_sampling_answers_each_question_n_times_and_keeps_every_sample(env, embedder, llm_server: LlmServer,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    settings, golden, prompts, _ = env
    llm_server.response_model = "served-a"  # listed at GET /v1/models: the client knows the served model
    sampled = settings.replace(eval=dataclasses.replace(settings.eval, samples=3, judge=False))
    for version, extra in ((2, {"temperature": 0.8}), (3, {"temperature": 0.8, "seed": 5})):
        (prompts / "rag_chat" / f"v{version}.yaml").write_text(yaml.safe_dump(
            {**CHAT_PROMPT, "version": version, "model": {**CHAT_PROMPT["model"], **extra}}, sort_keys=False))

    summary = run_eval(sampled, golden, "rag_chat@2", "docs", embedder=embedder, llm=llm(llm_server), run_id="smp-1")
    # 5 questions x 3 samples: the same request three times, kept apart by the cache salt (no seed set)
    assert llm_server.count == 15 and summary["llm_calls"] == 15
    rows = results(summary)
    assert [r["n_samples"] for r in rows] == [3] * 5
    q1 = next(r for r in rows if r["id"] == "q1")
    assert len(q1["sample_answers"]) == 3 and set(q1["samples"]) == set(q1["metrics"]) == set(q1["spread"])
    for metric, values in q1["samples"].items():
        assert len(values) == 3 and q1["metrics"][metric] == pytest.approx(sum(values) / 3, abs=1e-6)
    assert not any(k.endswith("_spread") for k in q1["metrics"])  # the metrics stay clean
    assert q1["tokens_in"] == 3 * q1["samples"]["tokens_in"][0]  # billed: every sample
    with state.session_scope(settings.state_db_url) as s:
        stored = s.execute(select(state.EvalResult.payload).where(state.EvalResult.run_id == "smp-1",
                                  state.EvalResult.question_id == "q1")).scalar_one()
        assert stored["samples"] == q1["samples"] and stored["spread"] == q1["spread"]
        assert s.get(state.EvalRun, "smp-1").config["samples"] == 3
    # a retry of the same run is served from the cache, sample by sample
    run_eval(sampled, golden, "rag_chat@2", "docs", embedder=embedder, llm=llm(llm_server), run_id="smp-1")
    assert llm_server.count == 15

    # with a seed in the prompt, each sample asks with its own seed
    run_eval(sampled, golden, "rag_chat@3", "docs", embedder=embedder, llm=llm(llm_server), run_id="smp-2")
    seeds = [r.get("seed") for r in llm_server.requests[15:]]
    assert len(seeds) == 15 and sorted(set(seeds)) == [5, 6, 7] and seeds.count(5) == 5

    # greedy decoding: one answer per question, and the log says why
    caplog.set_level("INFO", logger="ragops.evaluation.runner")
    greedy = run_eval(sampled, golden, "rag_chat@1", "docs", embedder=embedder, llm=llm(llm_server), run_id="smp-3")
    assert llm_server.count == 35 and greedy["llm_calls"] == 5
    assert all("samples" not in r and "n_samples" not in r for r in results(greedy))
    assert "temperature 0" in caplog.text and "one answer per question" in caplog.text
