"""Glue of the sync_prompts and promote_prompt DAGs: one library call per task, and the e-mails."""

from __future__ import annotations

import logging
from typing import Any

from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def sync(outlet_events: Any) -> dict[str, Any]:
    """Register new prompt files; announce them to promote_prompt through the Asset."""
    from ragops import registry
    from ragops.airflow.assets import PROMPT_UPDATES, PROMPT_VERSIONS

    settings = task_settings()
    result = run_library(registry.sync, settings, "airflow:sync_prompts")
    new = run_library(registry.announce, settings)
    if new and outlet_events is not None:
        outlet_events[PROMPT_UPDATES].add(PROMPT_VERSIONS, extra={"versions": new})
        log.info("announced %d new prompt version(s) to promote_prompt: %s", len(new), new)
    return {"registered": result["registered"], "announced": new}


def _from_events(events: Any) -> list[str]:
    """The prompt names in the triggering Asset events' extras."""
    names: list[str] = []
    for asset_events in (events or {}).values() if hasattr(events, "values") else []:
        for ev in asset_events:
            for v in (getattr(ev, "extra", None) or {}).get("versions", []):
                if v["name"] not in names:
                    names.append(v["name"])
    return names


def announce_rest(outlet_events: Any) -> list[dict[str, Any]]:
    """After a decision: versions still waiting (another version of this prompt, or another
    prompt announced together) get a new Asset event, so promote_prompt runs again for them."""
    from ragops import registry
    from ragops.airflow.assets import PROMPT_UPDATES, PROMPT_VERSIONS

    settings = task_settings()
    waiting = [{"name": n, "version": v} for n in registry.prompt_names(settings) for v in registry.pending(settings, n)]
    if waiting and outlet_events is not None:
        outlet_events[PROMPT_UPDATES].add(PROMPT_VERSIONS, extra={"versions": waiting})
        log.info("versions still waiting for a decision, announced again: %s", waiting)
    return waiting


def prepare(params: dict[str, Any], run_id: str, triggering_asset_events: Any) -> dict[str, Any]:
    from ragops import promotion, registry

    settings = task_settings()
    names = _from_events(triggering_asset_events)
    if names:  # an Asset-triggered run: the first announced prompt with an undecided version
        run_library(registry.sync, settings, "airflow:promote_prompt", names)
        name = next((n for n in names if registry.pending(settings, n)), names[0])
    else:
        name = params["prompt"]
    version = run_library(promotion.choose_candidate, settings, name, int(params.get("candidate_version") or 0),
                          "airflow:promote_prompt")
    if version is None:
        log.info("prompt %s has no registered version newer than production that is not decided yet", name)
        return {"skip": f"nothing to evaluate for prompt {name}", "name": name}
    return {"name": name, "candidate": version, "gate": params.get("gate_profile") or settings.prompts.gate,
            "dataset": params.get("dataset") or None, "require_approval": params.get("require_approval"),
            "run_prefix": f"promote_prompt__{run_id}",
            "origin": {"dag_id": "promote_prompt", "run_id": run_id, "task_id": "evaluate"}}


def evaluate(prep: dict[str, Any], run_type: str) -> dict[str, Any]:
    from ragops import promotion
    from ragops.airflow.hooks import LlmHook

    if prep.get("skip"):
        return prep
    settings = task_settings()
    decision = run_library(promotion.evaluate, settings, prep["name"], prep["candidate"], gate=prep["gate"],
                           dataset=prep["dataset"], run_prefix=prep["run_prefix"], trigger=f"airflow:{run_type}",
                           llm=LlmHook.optional(settings.eval.llm_conn_id), origin=prep.get("origin"))
    override = prep.get("require_approval")
    decision["require_approval"] = promotion.needs_approval(settings, decision,
                                                            None if override in (None, "") else bool(override))
    decision["summary"] = summary_text(decision)
    return decision


def branch(decision: dict[str, Any]) -> str | None:
    if decision.get("skip"):
        return None
    return "approval" if decision["passed"] and decision["require_approval"] else "route"


def _approval(ti: Any) -> tuple[str | None, list[str]]:
    """(who answered, what) of the approval task, if it ran and someone answered."""
    detail = ti.xcom_pull(task_ids="approval", key="response") if ti is not None else None
    if not detail:
        return None, []
    user = detail.get("responded_by") or {}
    return (user.get("name") or user.get("id") or None), list(detail.get("chosen_options") or [])


def promote(decision: dict[str, Any], dag_id: str, run_id: str, ti: Any, outlet_events: Any = None,
            actor: str | None = None) -> dict[str, Any]:
    from ragops import promotion
    from ragops.airflow.alerting import run_link, send_event

    settings = task_settings()
    approver, _ = _approval(ti)
    moved = run_library(promotion.promote, settings, decision, actor or f"airflow:{dag_id}", approver)
    send_event(decision_alert(decision, "PROMOTED", run_link(dag_id, run_id), approver=approver))
    return {**moved, "still_waiting": announce_rest(outlet_events)}


def reject(decision: dict[str, Any], dag_id: str, run_id: str, ti: Any, outlet_events: Any = None,
           actor: str | None = None) -> dict[str, Any]:
    from ragops import promotion
    from ragops.airflow.alerting import run_link, send_event

    settings = task_settings()
    who, chosen = _approval(ti)
    by_person = (who or "nobody (no answer within prompts.approval_timeout_hours)") if decision["passed"] else None
    reason = run_library(promotion.reject, settings, decision, actor or f"airflow:{dag_id}", by_person)
    send_event(decision_alert(decision, "REJECTED", run_link(dag_id, run_id), rejected_by=by_person))
    return {"rejected": f"{decision['name']}@{decision['candidate_version']}", "reason": reason, "chosen": chosen,
            "still_waiting": announce_rest(outlet_events)}


def summary_text(d: dict[str, Any]) -> str:
    """Markdown for the approval form: the gate's figures."""
    lines = [f"**{d['name']}@{d['candidate_version']}** (candidate) vs **@{d['production_version']}** (production), "
             f"{d['questions']} questions, index {d['index']} v{d['index_version']}, gate `{d['profile']}`: "
             f"**{'PASSED' if d['passed'] else 'FAILED'}**", "",
             "| check | metric | rule | candidate | production | difference | 95% CI | |", "|---|---|---|---|---|---|---|---|"]
    for c in d["checks"]:
        ci = f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if c.get("ci") else ""
        lines.append(f"| {c['kind']} | {c['metric']} | {c['rule']} | {_num(c.get('candidate'))} | "
                     f"{_num(c.get('production'))} | {_num(c.get('difference'), True)} | {ci} | "
                     f"{'ok' if c['passed'] else 'FAIL'} |")
    for note in (d.get("refused"), d.get("note"), d.get("groundedness")):
        if note:
            lines += ["", f"**Note:** {note}"]
    return "\n".join(lines)


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return ""
    return f"{v:+.4f}" if signed else (f"{v:.4f}" if isinstance(v, float) else str(v))


def decision_alert(d: dict[str, Any], status: str, link: str, approver: str | None = None,
                   rejected_by: str | None = None) -> Any:
    from ragops.alerts import Alert, Figure

    figures = [Figure(metric=f"{c['metric']} ({c['kind']})", threshold=c["rule"],
                      value=None if c.get("candidate") is None else round(float(c["candidate"]), 4),
                      production=None if c.get("production") is None else round(float(c["production"]), 4),
                      difference=None if c.get("difference") is None else round(c["difference"], 4),
                      ci=f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if c.get("ci") else None, passed=c["passed"])
               for c in d["checks"]]
    ref = f"{d['name']}@{d['candidate_version']}"
    if status == "PROMOTED":
        headline = f"{ref} is now production (was @{d['production_version']})"
        summary = (f"The candidate passed gate '{d['profile']}' against production on the same {d['questions']} "
                   "questions and index version" + (f", and {approver} approved it." if approver else ".")
                   + f" Roll back with `ragops prompts rollback {d['name']}`.")
    elif rejected_by:
        headline = f"{ref} not promoted: {rejected_by} rejected it"
        summary = f"The gate passed, but {rejected_by} did not approve; production stays @{d['production_version']}."
    elif d.get("refused"):
        headline = f"{ref} refused by gate '{d['profile']}': the generator cannot see the change"
        summary = f"Production stays @{d['production_version']}; nothing was evaluated. {d['refused']}."
    else:
        failed = ", ".join(f"{c['metric']} ({c['kind']})" for c in d["failed"])
        headline = f"{ref} rejected by gate '{d['profile']}': {failed}"
        summary = (f"Production stays @{d['production_version']}. A non-regression check fails when the whole "
                   "confidence interval of the per-question difference is below zero and the drop exceeds the "
                   "margin; thresholds and budgets are absolute.")
    if d.get("note"):
        summary += f" Note: {d['note']}."
    if d.get("groundedness"):
        summary += f" {d['groundedness']}."
    runs = f"{d['candidate_run']} vs {d['production_run']}" if d.get("candidate_run") else "none (refused before)"
    return Alert(event="prompt", status=status, where=f"promote_prompt · {d['name']}", headline=headline,
                 severity="info" if status == "PROMOTED" else "warning", summary=summary, figures=figures,
                 dedupe=False,
                 facts=[("prompt", d["name"]), ("candidate", ref), ("production", f"{d['name']}@{d['production_version']}"),
                        ("dataset", d["dataset"]), ("index", f"{d['index']} v{d['index_version']}"),
                        ("eval runs", runs)],
                 items=[{"title": f"{w['id']}: {w['question']}", "detail": f"drop {w['drop']:.3f} · answer: "
                                                                           f"{w['answer'][:300]}"}
                        for w in d.get("worst_questions", [])] if status != "PROMOTED" else [],
                 links=[("Airflow run", link)])
