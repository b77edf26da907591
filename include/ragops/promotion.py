"""Gated prompt promotion: candidate vs production on the same questions, index version and
generator settings, then the gate profile decides (``ragops.gates.evaluate_gate``).

``evaluate`` runs both evaluations and the gate and records the evidence; ``apply`` carries the
decision out (promote, or record the rejection). The promote_prompt DAG puts a person's
approval between the two when the gate profile (or ``prompts.require_approval``) asks for it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import select

from ragops import registry, state
from ragops.config import Settings
from ragops.errors import PromptError, RagopsError

log = logging.getLogger(__name__)


class IndexChangedError(RagopsError):
    """The index swapped between the two evaluations; a retry evaluates both again."""

    permanent = False


def choose_candidate(settings: Settings, name: str, version: int | None, actor: str = "cli") -> int | None:
    """The version to evaluate: the one given, else the oldest registered version newer than
    production that no gate has decided yet (None: nothing to do). New files are registered
    first; an edited registered file is refused here."""
    registry.sync(settings, actor, [name])
    if version:
        return int(version)
    pending = registry.pending(settings, name)
    return pending[0] if pending else None


# what the extractive generator reads of a prompt version; it never sees system, template, author or message
EXTRACTIVE_INPUTS = ("model", "top_k", "retrieval_mode", "refusal_threshold", "refusal_message")


def invisible_change(cand: Any, prod: Any) -> str | None:
    """Why the generator cannot see the change from ``prod`` to ``cand`` (None: it can). The
    extractive generator ignores the prompt's wording, so a wording-only change would be judged
    on identical answers: a decision on no evidence."""
    if cand.model.provider != "extractive" or prod.model.provider != "extractive":
        return None
    if any(getattr(cand, f) != getattr(prod, f) for f in EXTRACTIVE_INPUTS) or \
            cand.model.params != prod.model.params:
        return None
    differ = [f for f in ("system", "template") if getattr(cand, f) != getattr(prod, f)]
    what = f"{cand.ref} differs from {prod.ref} only in its {' and '.join(differ)}" if differ else \
        f"{cand.ref} differs from {prod.ref} in nothing the generator reads"
    return (f"the extractive generator ignores the prompt's wording: {what}, so both versions would give identical "
            "answers. Change what it does read (model params such as max_sentences, retrieval top_k or mode, the "
            "refusal threshold or message), or give the version an LLM provider (model.provider: openai)")


def evaluate(settings: Settings, name: str, candidate: int, *, gate: str | None = None, dataset: str | None = None,
             index: str | None = None, run_prefix: str, trigger: str = "cli", llm: Any = None,
             sample_size: int = 0, origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate candidate and production on the same questions and index version; apply the gate."""
    from ragops.evaluation.runner import run_eval
    from ragops.gates import evaluate_gate

    gate = gate or settings.prompts.gate
    if gate not in settings.gates:
        raise PromptError(f"unknown gate profile {gate!r}: the settings define {', '.join(sorted(settings.gates))}")
    registry.sync(settings, trigger, [name])  # new files registered; an edited registered file is refused here
    production = registry.resolve(settings, name, registry.PRODUCTION)
    if candidate == production:
        raise PromptError(f"{name}@{candidate} is already production; register a new version to evaluate")
    cand, prod = registry.load(settings, f"{name}@{candidate}"), registry.load(settings, f"{name}@{production}")
    dataset = dataset or settings.prompts.dataset or settings.eval.default_dataset
    index = index or settings.prompts.index or settings.ingest.default_index
    invisible = invisible_change(cand, prod)
    if invisible:  # refused before anything is evaluated: identical answers are no evidence either way
        with state.session_scope(settings.state_db_url) as s:
            live = state.live_version(s, index)
        check = {"kind": "change", "metric": "visible change", "rule": "the generator sees the change",
                 "passed": False, "note": invisible}
        decision = {"profile": gate, "passed": False, "refused": invisible, "checks": [check], "failed": [check],
                    "worst_questions": [], "candidate_run": None, "production_run": None,
                    "candidate": cand.ref, "production": prod.ref, "questions": 0,
                    "index_version": live.version if live else None, "identical_answers": None,
                    "name": name, "candidate_version": candidate, "production_version": production,
                    "dataset": str(dataset), "index": index}
        with state.session_scope(settings.state_db_url) as s:
            state.audit(s, trigger, "prompt_gate_evaluated", index, prompt=name, candidate=candidate,
                        production=production, gate=gate, passed=False, failed=["visible change"], refused=invisible)
        log.warning("gate %s refuses %s@%d: %s", gate, name, candidate, invisible)
        return decision
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", run_prefix)
    runs = {}
    for label, prompt in (("candidate", cand), ("production", prod)):
        summary = run_eval(settings, dataset, prompt, index, run_id=f"{prefix}__{label}", trigger=trigger,
                           purpose="candidate" if label == "candidate" else "adhoc", llm=llm,
                           sample_size=sample_size, origin=origin)
        if summary["status"] not in ("success", "partial"):
            raise RagopsError(f"the {label} evaluation of {prompt.ref} ended {summary['status']}; see its report "
                              f"{summary['output_dir']}/report.html")
        runs[label] = summary["run_id"]
    with state.session_scope(settings.state_db_url) as s:
        versions = {label: s.get(state.EvalRun, rid).index_version for label, rid in runs.items()}
    if versions["candidate"] != versions["production"]:
        raise IndexChangedError(f"index {index} swapped from v{versions['candidate']} to v{versions['production']} "
                                "between the two evaluations; a retry evaluates both on one version")
    decision = evaluate_gate(settings, gate, runs["candidate"], runs["production"])
    if settings.gates[gate].get("bias") is not None:  # the profile turned the counterfactual bias rule on
        _bias_check(settings, gate, decision, cand, prod, dataset, index, llm)
    from ragops.grounding.labelled import decided_by

    decision.update(name=name, candidate_version=candidate, production_version=production, dataset=str(dataset),
                    index=index, groundedness=decided_by(settings, [c["metric"] for c in decision["checks"]]))
    with state.session_scope(settings.state_db_url) as s:
        state.audit(s, trigger, "prompt_gate_evaluated", index, prompt=name, candidate=candidate,
                    production=production, gate=gate, passed=decision["passed"],
                    failed=[c["metric"] for c in decision["failed"]], runs=runs)
    log.info("gate %s for %s@%d vs @%d: %s (%d checks, failed: %s)", gate, name, candidate, production,
             "PASSED" if decision["passed"] else "FAILED", len(decision["checks"]),
             [c["metric"] for c in decision["failed"]] or "none")
    return decision


def _bias_check(settings: Settings, gate: str, decision: dict[str, Any], cand: Any, prod: Any, dataset: Any,
                index: str, llm: Any) -> None:
    """gates.<profile>.bias: a candidate may not introduce a significant gap that production does not have."""
    from ragops.evaluation.bias import bias_gate, record, run_bias

    cfg = settings.gates[gate]["bias"] or {}
    kw = {"terms": cfg.get("terms"), "attributes": cfg.get("attributes") or None, "limit": cfg.get("limit", 20),
          "llm": llm}
    c, p = run_bias(settings, dataset, cand, index, **kw), run_bias(settings, dataset, prod, index, **kw)
    g = bias_gate(c, p)
    c["gate"] = dict(g, against=p["prompt"], against_status=p["status"])
    # both tests are kept (<data_dir>/bias/, audit log): the gate evidence links their per-group tables
    ids = {label: record(settings, r, actor=f"gate:{gate}") for label, r in (("candidate", c), ("production", p))}
    check = {"kind": "bias", "metric": "bias (counterfactual)", "rule": "no gap beyond noise that production lacks",
             "passed": g["passed"], "note": g["reason"], "introduced": g["introduced"][:20],
             "candidate_status": c["status"], "production_status": p["status"],
             "candidate_test": ids["candidate"], "production_test": ids["production"]}
    decision["checks"].append(check)
    decision["bias"] = {"candidate": c, "production": p}
    if not g["passed"]:
        decision["failed"].append(check)
        decision["passed"] = False


def needs_approval(settings: Settings, decision: dict[str, Any], override: bool | None = None) -> bool:
    if override is not None:
        return bool(override)
    per_gate = settings.gates[decision["profile"]].get("require_approval")
    return bool(settings.prompts.require_approval if per_gate is None else per_gate)


def evidence(decision: dict[str, Any]) -> dict[str, Any]:
    """What the history keeps of a decision (no answers, no long lists)."""
    return {k: decision.get(k) for k in ("profile", "passed", "checks", "candidate_run", "production_run",
                                         "index", "index_version", "dataset", "questions", "refused",
                                         "identical_answers", "note", "groundedness")} | {
        "worst_questions": [{k: w[k] for k in ("id", "question", "drop")} for w in decision.get("worst_questions", [])]}


def promote(settings: Settings, decision: dict[str, Any], actor: str, approver: str | None = None) -> dict[str, Any]:
    """Move production to the candidate, unless production moved since the evaluation."""
    name, candidate = decision["name"], decision["candidate_version"]
    now = registry.resolve(settings, name, registry.PRODUCTION)
    if now != decision["production_version"]:
        raise PromptError(f"{name}@production moved to v{now} after the evaluation against v"
                          f"{decision['production_version']}; evaluate {name}@{candidate} again")
    why = f"gate {decision['profile']} passed" + (f", approved by {approver}" if approver else "")
    return registry.promote(settings, name, candidate, actor=actor, reason=why,
                            evidence=evidence(decision) | {"approved_by": approver})


def reject(settings: Settings, decision: dict[str, Any], actor: str, rejected_by: str | None = None) -> str:
    if rejected_by:
        reason = f"gate {decision['profile']} passed but {rejected_by} did not approve"
    elif decision.get("refused"):
        reason = f"gate {decision['profile']} refused the change: {decision['refused']}"
    else:
        reason = "gate {} failed: {}".format(decision["profile"], "; ".join(
            f"{c['metric']} ({c['kind']}: {c['rule']})" for c in decision["failed"]))
    registry.record_rejection(settings, decision["name"], decision["candidate_version"], actor=actor, reason=reason,
                              evidence=evidence(decision) | {"rejected_by": rejected_by})
    return reason


def after_promotion(settings: Settings, run_id: str, verdict: dict[str, Any], actor: str) -> dict[str, Any] | None:
    """A nightly run of a newly promoted production prompt regressed against the nightly runs
    from before the promotion: roll production back (``prompts.auto_rollback``). Returns what
    was done, or None when this is not such a case."""
    if verdict.get("verdict") != "regression" or not verdict.get("baseline_runs"):
        return None
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if (run.config or {}).get("purpose") != "nightly":
            return None  # a sample or a question subset is no evidence against a promotion
        before = {v for (v,) in s.execute(select(state.EvalRun.prompt_version).where(
            state.EvalRun.run_id.in_(verdict["baseline_runs"]), state.EvalRun.prompt_name == run.prompt_name))}
        name, version = run.prompt_name, run.prompt_version
    if not before or version in before:
        return None  # the baseline already ran this version: not a post-promotion regression
    production = registry.resolve(settings, name, registry.PRODUCTION)
    if production != version:
        return None  # production moved again meanwhile
    info = {"name": name, "version": version, "baseline_versions": sorted(before),
            "regressed": verdict["regressed"], "run_id": run_id}
    if not settings.prompts.auto_rollback:
        log.warning("%s@%d regressed after its promotion (%s); prompts.auto_rollback is off", name, version,
                    verdict["regressed"])
        return {**info, "rolled_back": False}
    moved = registry.rollback(settings, name, actor=actor, reason=(
        f"nightly run {run_id} regressed significantly after the promotion of v{version}: "
        f"{', '.join(verdict['regressed'])}"), evidence={"run_id": run_id, "checks": verdict["checks"],
                                                        "baseline_runs": verdict["baseline_runs"]})
    return {**info, "rolled_back": True, "to": moved["to"]}
