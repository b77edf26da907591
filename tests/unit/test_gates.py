"""The promotion gate's statistics on constructed eval runs whose answer is known: paired bootstrap
intervals, the non-regression margin, thresholds, budgets, and the `gates:` settings section.
Runs and per-question results are written straight into a real SQLite state store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from ragops import state
from ragops.config import DEFAULT_GATES, _gates, load_settings
from ragops.errors import ConfigError, EvalError
from ragops.gates import compare_metric, evaluate_gate, paired_bootstrap

N = 40
QIDS = [f"q{i:02d}" for i in range(N)]
NR_METRICS = ("answer_f1", "faithfulness", "hallucination_rate", "answer_similarity", "refusal_accuracy",
              "hit_rate@5", "toxicity_rate")  # the default profile of include/config/ragops.yaml


def base_metrics(i: int) -> dict[str, float]:
    """Per-question values that vary between questions (as real ones do)."""
    return {"answer_f1": 0.5 + 0.5 * ((i * 7) % 10) / 10, "faithfulness": 0.8 + 0.02 * (i % 10),
            "answer_similarity": 0.6 + 0.01 * (i % 30), "refusal_accuracy": float(i % 4 != 0),
            "hit_rate@5": float(i % 5 != 0), "false_refusal": 0.0, "hallucination_rate": float(i % 6 == 0),
            "toxicity_rate": float(i % 20 == 0)}


SUMMARY = {"hit_rate@5": 0.9, "faithfulness": 0.9, "answer_f1": 0.7, "false_refusal": 0.05}
OPS = {"latency_ms_p95": 1200.0, "cost_per_1k_questions_usd": 0.5}


def add_run(settings, run_id: str, per_question: dict[str, dict[str, float]], *, summary: dict | None = None,
            operations: dict | None = None, status: str = "success", index_version: int = 3,
            dataset_hash: str = "d" * 64, prompt_version: int = 1, failed: tuple[str, ...] = (),
            generator: str = "extractive", served: list[str] | None = None, purpose: str = "adhoc",
            answers: dict[str, str] | None = None,
            samples: dict[str, dict[str, list[float]]] | None = None, night: int | None = None,
            started_at: dt.datetime | None = None) -> str:
    """``night``: started at 02:00 UTC that many days after 2026-01-01 (``started_at``: exactly
    then); neither: now."""
    if night is not None:
        started_at = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC) + dt.timedelta(days=night)
    with state.session_scope(settings.state_db_url) as s:
        s.add(state.EvalRun(run_id=run_id, status=status, trigger="test", index_name="docs",
                            **({"started_at": started_at} if started_at is not None else {}),
                            index_version=index_version, collection=f"docs__v{index_version}",
                            prompt_name="rag_answer", prompt_version=prompt_version, prompt_hash="h" * 64,
                            dataset_path="golden.jsonl", dataset_hash=dataset_hash, n_questions=len(per_question),
                            generator=generator, config={"purpose": purpose, "retrieval": "hybrid"},
                            metrics={"metrics": dict(SUMMARY if summary is None else summary),
                                     "operations": dict(OPS if operations is None else operations),
                                     **({"served_models": served} if served else {})}))
        s.flush()
        for qid, metrics in per_question.items():
            s.add(state.EvalResult(run_id=run_id, question_id=qid, ok=0 if qid in failed else 1,
                                   payload={"question": f"question {qid}?",
                                            "answer": (answers or {}).get(qid, f"answer of {run_id} to {qid}"),
                                            "metrics": metrics,
                                            **({"samples": samples[qid]} if samples and qid in samples else {})}))
    return run_id


def baseline() -> dict[str, dict[str, float]]:
    return {q: base_metrics(i) for i, q in enumerate(QIDS)}


def shifted(metric: str, deltas: list[float] | float) -> dict[str, dict[str, float]]:
    """The baseline with ``metric`` moved by ``deltas`` per question (a number = the same for all)."""
    ds = [deltas] * N if isinstance(deltas, (int, float)) else deltas
    return {q: {**m, metric: m[metric] + d} for (q, m), d in zip(baseline().items(), ds, strict=True)}


def check(decision: dict, kind: str, metric: str) -> dict:
    [c] = [c for c in decision["checks"] if c["kind"] == kind and c["metric"] == metric]
    return c


def failed(decision: dict) -> list[tuple[str, str]]:
    return [(c["kind"], c["metric"]) for c in decision["failed"]]


# ----------------------------------------------------------------------------------------------
# paired bootstrap and compare_metric


def test_paired_bootstrap_of_constant_differences_is_a_point() -> None:
    iv = paired_bootstrap([-0.25] * 30)
    assert (iv.mean, iv.low, iv.high, iv.n) == (pytest.approx(-0.25), pytest.approx(-0.25), pytest.approx(-0.25), 30)


def test_paired_bootstrap_of_symmetric_noise_contains_zero() -> None:
    iv = paired_bootstrap([0.3, -0.3] * 25)
    assert iv.mean == pytest.approx(0.0) and iv.n == 50
    assert iv.low < 0 < iv.high
    # the interval is about mean +- 1.96 standard errors (0.3 / sqrt(50) = 0.042)
    assert iv.low == pytest.approx(-1.96 * 0.3 / np.sqrt(50), abs=0.015)
    assert iv.high == pytest.approx(1.96 * 0.3 / np.sqrt(50), abs=0.015)


def test_paired_bootstrap_is_seeded_and_refuses_empty_input() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(-0.05, 0.1, size=60)
    assert paired_bootstrap(d) == paired_bootstrap(d)
    assert paired_bootstrap(d, seed=1) != paired_bootstrap(d, seed=2)
    wider = paired_bootstrap(d, confidence=0.99)
    narrower = paired_bootstrap(d, confidence=0.8)
    assert wider.low < narrower.low < narrower.high < wider.high
    with pytest.raises(EvalError, match="no paired questions"):
        paired_bootstrap([])


def test_compare_metric_pairs_questions_and_needs_five() -> None:
    base = {f"q{i}": 0.9 for i in range(10)}
    cur = {f"q{i}": 0.5 for i in range(10)} | {"extra": 0.0}  # unpaired questions are ignored
    c = compare_metric("answer_f1", cur, base, 0.02, 2000, 0.95, 13)
    assert c is not None and c.n == 10 and c.regressed
    assert (c.current, c.baseline, c.difference) == (pytest.approx(0.5), pytest.approx(0.9), pytest.approx(-0.4))
    few = {f"q{i}": 0.9 for i in range(4)}
    assert compare_metric("answer_f1", {q: 0.0 for q in few}, few, 0.02, 2000, 0.95, 13) is None
    # lower is better: a rise is the regression, a fall is not
    assert compare_metric("false_refusal", {q: 0.5 for q in base}, {q: 0.0 for q in base}, 0.02, 2000, 0.95, 13,
                          higher_is_better=False).regressed
    assert not compare_metric("false_refusal", {q: 0.0 for q in base}, {q: 0.5 for q in base}, 0.02, 2000, 0.95,
                              13, higher_is_better=False).regressed


# ----------------------------------------------------------------------------------------------
# evaluate_gate on runs in the state store


def test_identical_runs_pass(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), prompt_version=2)
    d = evaluate_gate(settings, "default", cand, prod)
    assert d["passed"] is True and d["failed"] == [] and d["worst_questions"] == []
    assert (d["candidate"], d["production"], d["questions"], d["index_version"]) == \
        ("rag_answer@2", "rag_answer@1", N, 3)
    nr = [c for c in d["checks"] if c["kind"] == "non_regression"]
    assert [c["metric"] for c in nr] == list(NR_METRICS)
    for c in nr:
        assert c["difference"] == 0 and c["ci"] == [0, 0] and c["n"] == N and c["passed"]
    assert {c["kind"] for c in d["checks"]} == {"threshold", "non_regression", "budget"}


def test_clear_drop_fails_non_regression_and_names_the_dropped_questions(settings) -> None:
    dropped = set(QIDS[::2])  # 20 of 40 questions lose their answer
    cand_rows = {q: {**m, "answer_f1": 0.0 if q in dropped else m["answer_f1"]} for q, m in baseline().items()}
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", cand_rows)
    d = evaluate_gate(settings, "default", cand, prod)
    assert d["passed"] is False
    assert failed(d) == [("non_regression", "answer_f1")]
    c = check(d, "non_regression", "answer_f1")
    expected = -np.mean([baseline()[q]["answer_f1"] for q in dropped]) / 2
    assert c["difference"] == pytest.approx(expected)
    assert c["ci"][1] < 0 and -c["difference"] > 0.02 and c["rule"] == "no significant drop > 0.02"
    worst = d["worst_questions"]
    assert len(worst) == 5 and {w["id"] for w in worst} <= dropped
    top = sorted((baseline()[q]["answer_f1"] for q in dropped), reverse=True)[:5]
    assert [w["drop"] for w in worst] == [pytest.approx(v) for v in top]
    assert worst[0]["question"] == f"question {worst[0]['id']}?"
    assert worst[0]["answer"] == f"answer of cand to {worst[0]['id']}"


def test_total_drop_on_every_question(settings) -> None:
    prod = add_run(settings, "prod", {q: {**m, "answer_f1": 1.0} for q, m in baseline().items()})
    cand = add_run(settings, "cand", {q: {**m, "answer_f1": 0.5} for q, m in baseline().items()})
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "non_regression", "answer_f1")
    assert (c["difference"], c["ci"], c["passed"]) == (pytest.approx(-0.5), [pytest.approx(-0.5)] * 2, False)
    assert failed(d) == [("non_regression", "answer_f1")]
    assert {w["drop"] for w in d["worst_questions"]} == {0.5}


def test_noise_within_the_margin_passes(settings) -> None:
    noise = [-0.06 if i % 2 else 0.04 for i in range(N)]  # mean -0.01, spread 0.05: not significant
    assert np.mean(noise) == pytest.approx(-0.01)
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", shifted("answer_similarity", noise))
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "non_regression", "answer_similarity")
    assert c["difference"] == pytest.approx(-0.01)
    assert c["ci"][0] < 0 < c["ci"][1]
    assert c["passed"] and d["passed"]


@pytest.mark.parametrize(("drop", "passes"), [(0.015, True), (0.03, False)])
def test_a_significant_drop_fails_only_beyond_the_margin(settings, drop: float, passes: bool) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", shifted("faithfulness", -drop))
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "non_regression", "faithfulness")
    assert c["difference"] == pytest.approx(-drop)
    assert c["ci"][1] < 0, "every question dropped: the drop is significant either way"
    assert c["passed"] is passes and d["passed"] is passes
    assert failed(d) == ([] if passes else [("non_regression", "faithfulness")])


def test_margin_zero_fails_any_significant_drop(settings) -> None:
    gates = _gates({"tight": {"non_regression": {"metrics": ["faithfulness"], "margin": 0}}}, "gates")
    s = settings.replace(gates=gates)
    prod = add_run(s, "prod", baseline())
    cand = add_run(s, "cand", shifted("faithfulness", -0.005))
    d = evaluate_gate(s, "tight", cand, prod)
    assert failed(d) == [("non_regression", "faithfulness")]
    assert [c["kind"] for c in d["checks"]] == ["non_regression"], "no thresholds or budget in this profile"


def test_threshold_below_fails(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), summary={**SUMMARY, "hit_rate@5": 0.5})
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "threshold", "hit_rate@5")
    assert (c["rule"], c["candidate"], c["production"], c["passed"]) == (">= 0.8", 0.5, 0.9, False)
    assert failed(d) == [("threshold", "hit_rate@5")] and d["passed"] is False
    assert check(d, "threshold", "faithfulness")["passed"]


def test_threshold_on_a_missing_metric_fails_with_a_note(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), summary={"hit_rate@5": 0.9})
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "threshold", "faithfulness")
    assert c["passed"] is False and c["candidate"] is None and "no value" in c["note"]


@pytest.mark.parametrize(("rule", "value", "passes"), [
    ("<= 0.1", 0.05, True), ("<= 0.1", 0.2, False),
    (0.1, 0.05, True), (0.1, 0.2, False),  # a bare number: by the metric's direction (lower is better)
    (">= 0.1", 0.05, False),
])
def test_lower_is_better_thresholds(settings, rule, value: float, passes: bool) -> None:
    gates = _gates({"refusals": {"thresholds": {"false_refusal": rule}}}, "gates")
    s = settings.replace(gates={**settings.gates, **gates})
    prod = add_run(s, "prod", baseline())
    cand = add_run(s, "cand", baseline(), summary={**SUMMARY, "false_refusal": value})
    d = evaluate_gate(s, "refusals", cand, prod)
    c = check(d, "threshold", "false_refusal")
    assert c["rule"] == (f"<= {float(rule)}" if isinstance(rule, float) else rule)
    assert c["passed"] is passes and d["passed"] is passes


def test_lower_is_better_non_regression_fails_on_a_rise(settings) -> None:
    gates = _gates({"refusals": {"non_regression": {"metrics": ["false_refusal"], "margin": 0.02}}}, "gates")
    s = settings.replace(gates=gates)
    rise = [1.0 if i % 2 else 0.0 for i in range(N)]
    prod = add_run(s, "prod", baseline())
    cand = add_run(s, "cand", shifted("false_refusal", rise))
    d = evaluate_gate(s, "refusals", cand, prod)
    c = check(d, "non_regression", "false_refusal")
    assert c["rule"] == "no significant rise > 0.02" and c["difference"] == pytest.approx(0.5)
    assert c["ci"][0] > 0 and c["passed"] is False
    assert {w["id"] for w in d["worst_questions"]} <= set(QIDS[1::2]) and d["worst_questions"][0]["drop"] == 1.0
    # the same change the other way is an improvement
    back = evaluate_gate(s, "refusals", prod, cand)
    assert back["passed"] and back["worst_questions"] == []


def test_budget_fails_when_latency_exceeds_it(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), operations={"latency_ms_p95": 6500.0})
    d = evaluate_gate(settings, "default", cand, prod)
    lat = check(d, "budget", "latency_p95_ms")
    assert (lat["rule"], lat["candidate"], lat["production"], lat["passed"]) == ("<= 5000.0", 6500.0, 1200.0, False)
    cost = check(d, "budget", "cost_per_1k_usd")  # no cost, but the extractive generator is free
    assert cost["passed"] is True and cost["candidate"] is None
    assert failed(d) == [("budget", "latency_p95_ms")]


def test_unknown_cost_fails_the_cost_budget_unless_the_model_is_free(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    no_cost = {"latency_ms_p95": 1200.0}  # the run found no price for its model
    cand = add_run(settings, "cand", baseline(), operations=no_cost, generator="openai:gpt-unpriced",
                   served=["gpt-unpriced-2025-01-01"])
    d = evaluate_gate(settings, "default", cand, prod)
    cost = check(d, "budget", "cost_per_1k_usd")
    assert cost["passed"] is False and failed(d) == [("budget", "cost_per_1k_usd")]
    assert "unknown cost" in cost["note"] and "eval.prices" in cost["note"] and "gpt-unpriced" in cost["note"]
    assert "free_models" in cost["note"]

    gates = {"default": {**settings.gates["default"], "free_models": ["smollm2-135m-instruct-q4_1"]}}
    local = add_run(settings, "local", baseline(), operations=no_cost, generator="openai:local",
                    served=["smollm2-135m-instruct-q4_1"])  # free by the name the endpoint served
    d = evaluate_gate(settings.replace(gates=gates), "default", local, prod)
    cost = check(d, "budget", "cost_per_1k_usd")
    assert cost["passed"] is True and "is free" in cost["note"] and d["passed"]
    # the shipped settings mark the local model free
    shipped = load_settings()
    assert "smollm2-135m-instruct-q4_1" in shipped.gates["default"]["free_models"]
    assert shipped.eval.prices["smollm2-135m-instruct-q4_1"]["free"] is True


def test_identical_answers_are_said_in_the_decision(settings) -> None:
    same = {q: f"the same answer to {q}" for q in QIDS}
    prod = add_run(settings, "prod", baseline(), answers=same)
    cand = add_run(settings, "cand", baseline(), prompt_version=2, answers=same)
    d = evaluate_gate(settings, "default", cand, prod)
    assert d["identical_answers"] is True and f"identical answers on all {N} questions" in d["note"]
    other = add_run(settings, "other", baseline(), prompt_version=3, answers={**same, "q07": "something else"})
    d = evaluate_gate(settings, "default", other, prod)
    assert d["identical_answers"] is False and "note" not in d


def test_budget_on_cost(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), operations={**OPS, "cost_per_1k_questions_usd": 12.5})
    assert failed(evaluate_gate(settings, "default", cand, prod)) == [("budget", "cost_per_1k_usd")]


def test_failed_questions_are_not_paired(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), failed=("q00", "q01", "q02"))
    d = evaluate_gate(settings, "default", cand, prod)
    assert d["questions"] == N - 3
    assert check(d, "non_regression", "answer_f1")["n"] == N - 3


def test_fewer_than_five_paired_questions_are_not_tested(settings) -> None:
    few = dict(list(baseline().items())[:4])
    prod = add_run(settings, "prod", few)
    cand = add_run(settings, "cand", {q: {**m, "answer_f1": 0.0} for q, m in few.items()})
    d = evaluate_gate(settings, "default", cand, prod)
    c = check(d, "non_regression", "answer_f1")
    assert c["passed"] is True and "fewer than 5" in c["note"]


@pytest.mark.parametrize("change", [{"index_version": 4}, {"dataset_hash": "e" * 64}])
def test_runs_on_different_index_versions_or_datasets_are_refused(settings, change: dict) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), **change)
    with pytest.raises(EvalError, match="differ in dataset or index version"):
        evaluate_gate(settings, "default", cand, prod)


def test_unfinished_or_unknown_runs_are_refused(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    cand = add_run(settings, "cand", baseline(), status="failed")
    with pytest.raises(EvalError, match="eval run cand ended failed"):
        evaluate_gate(settings, "default", cand, prod)
    with pytest.raises(EvalError, match="unknown eval run 'nope'"):
        evaluate_gate(settings, "default", "nope", prod)
    partial = add_run(settings, "partial", baseline(), status="partial")
    assert evaluate_gate(settings, "default", partial, prod)["passed"]


def test_unknown_gate_profile_names_the_known_ones(settings) -> None:
    prod = add_run(settings, "prod", baseline())
    with pytest.raises(EvalError) as exc:
        evaluate_gate(settings, "nightly-ish", prod, prod)
    assert "unknown gate profile 'nightly-ish'" in str(exc.value)
    assert ", ".join(sorted(settings.gates)) in str(exc.value)


# ----------------------------------------------------------------------------------------------
# the gates: settings section


def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ragops.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_gates_yaml_is_normalised(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, """
gates:
  default:
    thresholds: {hit_rate@5: 0.85, false_refusal: "<= 0.1", faithfulness: ">= 0.7"}
    non_regression: {metrics: [answer_f1], margin: 0.05}
    budget: {latency_p95_ms: 800}
    require_approval: true
"""))
    assert s.gates == {"default": {"thresholds": {"hit_rate@5": ("", 0.85), "false_refusal": ("<=", 0.1),
                                                  "faithfulness": (">=", 0.7)},
                                   "non_regression": {"metrics": ["answer_f1"], "margin": 0.05},
                                   "budget": {"latency_p95_ms": 800.0}, "require_approval": True,
                                   "free_models": [], "bias": None}}
    assert load_settings(write_config(tmp_path, "eval: {seed: 1}\n")).gates == DEFAULT_GATES


@pytest.mark.parametrize(("gates_yaml", "needles"), [
    ('{default: {thresholds: {hit_rate@5: "about 0.8"}}}', ["gates.default.thresholds.hit_rate@5", "'about 0.8'"]),
    ("{default: {thresholds: {hit_rate@5: true}}}", ["gates.default.thresholds.hit_rate@5"]),
    ("{default: {thresholdz: {hit_rate@5: 0.8}}}", ["gates.default", "thresholdz", "expected some of thresholds"]),
    ("{default: {non_regression: {metrics: [answer_f1], margin: 2}}}", ["gates.default.non_regression.margin"]),
    ("{default: {non_regression: {metric: [answer_f1]}}}", ["gates.default.non_regression"]),
    ("{default: {budget: {latency_ms: 100}}}", ["gates.default.budget", "latency_p95_ms, cost_per_1k_usd"]),
    ("{default: {budget: {latency_p95_ms: -1}}}", ["gates.default.budget"]),
    ("{default: {require_approval: maybe}}", ["gates.default.require_approval"]),
    ("{default: {budget: {free_models: local}}}", ["gates.default.budget.free_models", "a list of model names"]),
    ("[default]", ["gates: expected a mapping"]),
    ('{default: {thresholds: {hit_rate@5: "0.8.1"}}}', ["gates.default.thresholds.hit_rate@5", "'0.8.1'"]),
    ("{default: {thresholds: [hit_rate@5]}}", ["gates.default.thresholds: expected a mapping"]),
    # a bare string would otherwise be split into letters and every check would be "not tested"
    ("{default: {non_regression: {metrics: answer_f1}}}", ["gates.default.non_regression", "a list of names"]),
    ("{strict: {thresholds: {hit_rate@5: 0.9}}}", ["prompts.gate is 'default'", "strict"]),
])
def test_bad_gates_yaml_names_the_key(tmp_path: Path, gates_yaml: str, needles: list[str]) -> None:
    path = write_config(tmp_path, f"gates: {gates_yaml}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    for needle in needles:
        assert needle in str(exc.value)
    assert str(path) in str(exc.value)


def test_free_models_and_free_prices_in_yaml(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, """
eval:
  prices:
    local-q4: {free: true}
    gpt-x: {input_per_1m: 1, output_per_1m: 2}
gates:
  default:
    budget: {cost_per_1k_usd: 1, free_models: [local-q4, extractive]}
"""))
    assert s.gates["default"]["free_models"] == ["local-q4", "extractive"]
    assert s.gates["default"]["budget"] == {"cost_per_1k_usd": 1.0}
    assert s.eval.prices["local-q4"]["free"] is True and s.eval.prices["gpt-x"]["output_per_1m"] == 2.0
    for bad, needle in (("{free: false}", "free: true alone"), ("{free: true, input_per_1m: 1}", "free: true alone"),
                        ("{cost: 1}", "or free: true")):
        with pytest.raises(ConfigError, match="eval.prices.m"):
            load_settings(write_config(tmp_path, f"eval:\n  prices:\n    m: {bad}\n"))
        with pytest.raises(ConfigError, match=needle):
            load_settings(write_config(tmp_path, f"eval:\n  prices:\n    m: {bad}\n"))


# ----------------------------------------------------------------------------------------------
# the nightly regression check compares like with like (the served model)


def test_regression_check_compares_runs_of_the_same_served_model(settings) -> None:
    from ragops.gates import check_regression

    add_run(settings, "n1", baseline(), purpose="nightly", served=["model-a"], night=1)
    add_run(settings, "n2", baseline(), purpose="nightly", served=["model-a"], night=2)
    same = check_regression(settings, add_run(settings, "n3", baseline(), purpose="nightly", served=["model-a"],
                                              night=3))
    assert same["baseline_runs"] == ["n2", "n1"] and "model_change" not in same and not same["unlike_baseline"]
    assert same["verdict"] == "ok"

    # the endpoint now serves model-b: said, and compared with the old model's runs only because
    # there is nothing else yet (a drop is reported as a comparison of unlike runs)
    changed = check_regression(settings, add_run(settings, "n4", shifted("answer_f1", -0.3), purpose="nightly",
                                                 served=["model-b"], night=4))
    assert changed["model_change"] == {"from": ["model-a"], "to": ["model-b"]}
    assert changed["unlike_baseline"] is True and "compares unlike runs" in changed["note"]
    assert changed["verdict"] == "regression" and changed["baseline_runs"] == ["n3", "n2", "n1"]

    # the next night of model-b compares with model-b only
    later = check_regression(settings, add_run(settings, "n5", shifted("answer_f1", -0.3), purpose="nightly",
                                               served=["model-b"], night=5))
    assert later["baseline_runs"] == ["n4"] and "model_change" not in later and not later["unlike_baseline"]
    assert later["verdict"] == "ok" and "same served model" in later["note"]


# ----------------------------------------------------------------------------------------------
# sampling: each question answered n times, the bootstrap resamples questions and samples


def sampled_runs(seed: int, delta: float, questions: int = 40, n: int = 3) -> tuple[dict, dict, dict, dict]:
    """Two runs of one question set: per question a true score p (the share of good answers), each
    run's n answers good or not at random (Bernoulli(p), the candidate's shifted by ``delta``).
    Returns the per-question means and per-sample values of candidate and baseline."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.95, questions)
    cand = rng.binomial(1, np.clip(p + delta, 0, 1)[:, None], (questions, n)).astype(float)
    base = rng.binomial(1, p[:, None], (questions, n)).astype(float)
    qs = [f"q{i:02d}" for i in range(questions)]
    return ({q: float(cand[i].mean()) for i, q in enumerate(qs)}, {q: float(base[i].mean()) for i, q in enumerate(qs)},
            {q: cand[i].tolist() for i, q in enumerate(qs)}, {q: base[i].tolist() for i, q in enumerate(qs)})


def gate_decision(seed: int, delta: float) -> str:
    """What the non-regression check decides: 'worse' (rejected), 'better' (a significant and
    material rise: would be promoted as an improvement) or 'same'."""
    cur, base, cs, bs = sampled_runs(seed, delta)
    c = compare_metric("faithfulness", cur, base, 0.02, 2000, 0.95, seed, True, cs, bs)
    assert c is not None and c.two_level
    if c.regressed:
        return "worse"
    return "better" if c.ci_low > 0 and c.difference > 0.02 else "same"


def test_a_version_gated_against_itself_under_sampling_noise_is_neither_better_nor_worse() -> None:
    # 200 trials, 40 questions x 3 samples, the same version on both sides: only sampling noise differs
    decisions = [gate_decision(seed, 0.0) for seed in range(200)]
    same = decisions.count("same")
    assert same >= 0.95 * len(decisions), (decisions.count("worse"), decisions.count("better"))


def test_a_version_clearly_worse_under_sampling_noise_is_rejected_in_most_trials() -> None:
    # power: 25 points fewer good answers per question; the check must still see it through the noise
    decisions = [gate_decision(seed, -0.25) for seed in range(200)]
    assert decisions.count("worse") >= 0.8 * len(decisions)
    assert decisions.count("better") == 0


def test_two_level_bootstrap_widens_the_interval_by_the_sampling_noise() -> None:
    cur, base, cs, bs = sampled_runs(7, 0.0)
    one = compare_metric("faithfulness", cur, base, 0.02, 2000, 0.95, 7)
    two = compare_metric("faithfulness", cur, base, 0.02, 2000, 0.95, 7, True, cs, bs)
    assert one is not None and two is not None and not one.two_level and two.two_level
    assert one.difference == pytest.approx(two.difference)  # same point estimate: means of the sample means
    assert (two.ci_high - two.ci_low) > 1.2 * (one.ci_high - one.ci_low)
    # one sample per question (or none stored) is the plain bootstrap, bit for bit
    single = compare_metric("faithfulness", cur, base, 0.02, 2000, 0.95, 7, True,
                            {q: [v] for q, v in cur.items()}, {q: [v] for q, v in base.items()})
    assert single == one


def test_paired_bootstrap_with_identical_samples_everywhere_is_the_plain_bootstrap() -> None:
    # samples with no spread add no noise: the two-level interval is the one-level one
    diffs = [0.1 * (i % 5) - 0.2 for i in range(30)]
    within = [([d + 0.5] * 3, [0.5] * 3) for d in diffs]
    plain, two = paired_bootstrap(diffs, seed=3), paired_bootstrap(diffs, seed=3, within=within)
    assert two.mean == pytest.approx(plain.mean)
    assert (two.low, two.high) == pytest.approx((plain.low, plain.high), abs=0.03)
    with pytest.raises(EvalError, match="within has 2 questions"):
        paired_bootstrap(diffs, within=within[:2])


def test_the_gate_resamples_the_stored_samples_and_says_so(settings) -> None:
    cur, base, cs, bs = sampled_runs(11, 0.0)
    pq = lambda means: {q: {**base_metrics(i), "faithfulness": means[q]} for i, q in enumerate(QIDS)}  # noqa: E731
    add_run(settings, "prod-s", pq(base), samples={q: {"faithfulness": v} for q, v in bs.items()})
    add_run(settings, "cand-s", pq(cur), prompt_version=2, samples={q: {"faithfulness": v} for q, v in cs.items()})
    add_run(settings, "prod-ns", pq(base))  # the same means, stored without samples
    add_run(settings, "cand-ns", pq(cur), prompt_version=3)
    sampled = evaluate_gate(settings, "default", "cand-s", "prod-s")
    plain = evaluate_gate(settings, "default", "cand-ns", "prod-ns")
    with_s, without = check(sampled, "non_regression", "faithfulness"), check(plain, "non_regression", "faithfulness")
    assert with_s["bootstrap"].startswith("two-level") and "bootstrap" not in without
    assert "bootstrap" not in check(sampled, "non_regression", "answer_f1")  # no samples stored for it
    assert with_s["difference"] == pytest.approx(without["difference"])
    assert with_s["ci"][1] - with_s["ci"][0] > without["ci"][1] - without["ci"][0]


def test_the_nightly_check_resamples_the_samples_of_sampled_runs(settings) -> None:
    from ragops.gates import check_regression

    def night(run_id: str, seed: int) -> str:
        cur, _, cs, _ = sampled_runs(seed, 0.0)
        pq = {q: {**base_metrics(i), "faithfulness": cur[q]} for i, q in enumerate(QIDS)}
        return add_run(settings, run_id, pq, purpose="nightly", samples={q: {"faithfulness": v} for q, v in cs.items()},
                       night=seed)

    night("s1", 1)
    night("s2", 2)
    result = check_regression(settings, night("s3", 3))
    by_metric = {c["metric"]: c for c in result["checks"]}
    assert result["baseline_runs"] == ["s2", "s1"] and result["verdict"] == "ok"
    assert by_metric["faithfulness"]["two_level"] is True and by_metric["answer_f1"]["two_level"] is False


# ----------------------------------------------------------------------------------------------
# one run per night: a catch-up run and a triggered one on the same day count once


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=dt.UTC)


def test_two_nightly_runs_of_one_day_count_as_one_night_in_the_baseline(settings) -> None:
    from ragops.gates import check_regression

    settings = load_settings_with(settings, baseline_runs=3)
    add_run(settings, "d1", baseline(), purpose="nightly", started_at=at(1, 2))
    add_run(settings, "d2", baseline(), purpose="nightly", started_at=at(2, 2))
    # unpausing the DAG: Airflow's catch-up run and the run a person triggered, minutes apart
    add_run(settings, "d3-catchup", shifted("answer_f1", -0.3), purpose="nightly", started_at=at(3, 9, 0))
    add_run(settings, "d3-click", baseline(), purpose="nightly", started_at=at(3, 9, 2))
    add_run(settings, "d3-adhoc", baseline(), started_at=at(3, 10))  # not nightly: never in a baseline
    result = check_regression(settings, add_run(settings, "d4", baseline(), purpose="nightly", started_at=at(4, 2)))
    # three distinct days, the newest run of day 3; without the rule: d3-click, d3-catchup, d2
    assert result["baseline_runs"] == ["d3-click", "d2", "d1"]
    assert result["same_day_left_out"] == ["d3-catchup"]
    assert "one run per UTC day counts, the newest" in result["note"]
    assert "one nightly run per UTC day" in result["baseline_rule"]
    assert result["verdict"] == "ok"  # the catch-up run's bad answer_f1 does not weigh

    # a day is a UTC day: 23:30 and 00:30 UTC the next day are two nights
    add_run(settings, "d5-late", baseline(), purpose="nightly", started_at=at(5, 23, 30))
    late = check_regression(settings, add_run(settings, "d6-early", baseline(), purpose="nightly",
                                              started_at=at(6, 0, 30)))
    assert late["baseline_runs"] == ["d5-late", "d4", "d3-click"] and late["same_day_left_out"] == ["d3-catchup"]
    # once day 3 has left the window, its catch-up run is no longer mentioned
    add_run(settings, "d7", baseline(), purpose="nightly", started_at=at(7, 2))
    later = check_regression(settings, add_run(settings, "d8", baseline(), purpose="nightly", started_at=at(8, 2)))
    assert later["baseline_runs"] == ["d7", "d6-early", "d5-late"] and later["same_day_left_out"] == []
    assert "note" not in later


def test_same_day_runs_of_another_prompt_or_index_version_are_other_nights(settings) -> None:
    from ragops.gates import check_regression

    settings = load_settings_with(settings, baseline_runs=5)
    add_run(settings, "p1", baseline(), purpose="nightly", started_at=at(1, 2))
    add_run(settings, "p2", baseline(), purpose="nightly", prompt_version=2, started_at=at(1, 3))
    add_run(settings, "p3", baseline(), purpose="nightly", index_version=4, started_at=at(1, 4))
    add_run(settings, "p4", baseline(), purpose="nightly", index_version=4, started_at=at(1, 5))
    result = check_regression(settings, add_run(settings, "p5", baseline(), purpose="nightly", started_at=at(2, 2)))
    assert result["baseline_runs"] == ["p4", "p2", "p1"] and result["same_day_left_out"] == ["p3"]


def test_a_rerun_on_the_same_day_still_compares_with_the_earlier_run(settings) -> None:
    """The rule thins out the previous nights; the run being checked is compared with all of them,
    including an earlier run of its own day."""
    from ragops.gates import check_regression

    add_run(settings, "r1", baseline(), purpose="nightly", started_at=at(1, 2))
    result = check_regression(settings, add_run(settings, "r2", baseline(), purpose="nightly", started_at=at(1, 9)))
    assert result["baseline_runs"] == ["r1"] and result["verdict"] == "ok"


def load_settings_with(settings, **eval_fields):
    import dataclasses

    return dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, **eval_fields))
