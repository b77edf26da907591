"""Glue of the nightly_eval DAG: one library call per task, plus the regression e-mail."""

from __future__ import annotations

import logging
import re
from typing import Any

from ragops.airflow.assets import EVAL_REPORTS, eval_asset, index_from_uri
from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def _index_from_events(events: Any) -> str | None:
    """The index whose Asset update triggered this run (None for cron or manual runs)."""
    if not events:
        return None
    for asset in events:
        uri = getattr(asset, "uri", None) or str(asset)
        name = index_from_uri(uri)
        if name:
            return name
    return None


def evaluate(params: dict[str, Any], run_id: str, run_type: str, triggering_asset_events: Any,
             outlet_events: Any) -> dict[str, Any]:
    from ragops.airflow.hooks import LlmHook
    from ragops.evaluation.runner import run_eval
    from ragops.registry import load_prompt

    settings = task_settings()
    triggered_by = _index_from_events(triggering_asset_events)
    index = triggered_by or params.get("index") or settings.ingest.default_index
    dataset = params.get("dataset") or None
    if triggered_by:  # an ingest of some index: use that index's own golden set, if it has one
        dataset = settings.golden_set(index)
        if dataset is None:
            log.info("index %s was updated but has no golden set (indexes.%s.golden in the settings); "
                     "nothing to evaluate", index, index)
            return {"skipped": f"no golden set for index {index}", "index": index}
    prompt = params.get("prompt") or settings.eval.default_prompt
    sample = int(params.get("sample_size") or 0)
    # only runs of the production prompt on every question form the baseline (compared by resolved
    # version, so rag_answer@1 and rag_answer@production are the same prompt when production is v1)
    chosen, default = run_library(lambda: (load_prompt(settings, prompt),
                                           load_prompt(settings, settings.eval.default_prompt)))
    nightly = ((chosen.name, chosen.version) == (default.name, default.version) and sample == 0
               and not params.get("question_ids"))
    eval_run_id = "nightly_eval__" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    summary = run_library(run_eval, settings, dataset, chosen, index,
                          sample_size=sample, run_id=eval_run_id, trigger=f"airflow:{run_type}",
                          purpose="nightly" if nightly else "adhoc", question_ids=params.get("question_ids") or None,
                          llm=LlmHook.optional(settings.eval.llm_conn_id),
                          # the index's own questions (not a dataset a person chose) come with the reviewed ones
                          include_reviewed=bool(triggered_by) or not params.get("dataset"),
                          origin={"dag_id": "nightly_eval", "run_id": run_id, "task_id": "evaluate"})
    key = {k: summary["metrics"].get(k) for k in settings.eval.watch_metrics}
    if outlet_events is not None:
        outlet_events[EVAL_REPORTS].add(eval_asset(index), extra={
            "eval_run_id": eval_run_id, "status": summary["status"], "report": f"{summary['output_dir']}/report.html",
            "metrics": key})
    return {"eval_run_id": eval_run_id, "index": index, "status": summary["status"], "metrics": key,
            "questions": summary["counts"]["questions"], "report": f"{summary['output_dir']}/report.html"}


def compare(result: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """Compare with the rolling baseline; e-mail on a significant regression. A regression is a
    finding, not a task failure."""
    from ragops.airflow.alerting import run_link, send_event
    from ragops.alerts import Alert, Figure
    from ragops.gates import LOWER_IS_BETTER, check_regression

    if result.get("skipped"):
        return {"verdict": "skipped", "reason": result["skipped"]}
    settings = task_settings()
    verdict = run_library(check_regression, settings, result["eval_run_id"])
    out = {"verdict": verdict["verdict"], "regressed": verdict["regressed"],
           "baseline_runs": len(verdict["baseline_runs"]), "unlike_baseline": verdict.get("unlike_baseline", False)}
    if verdict.get("note"):
        out["note"] = verdict["note"]
    if verdict.get("model_change"):
        out["model_change"] = verdict["model_change"]
        out["model_alert"] = send_event(model_alert(result, verdict, run_link(dag_id, run_id)))
    if verdict["verdict"] != "regression":
        log.info("no significant regression (%s) against %d baseline run(s)", verdict["verdict"],
                 len(verdict["baseline_runs"]))
        return out
    pct = int(round(settings.eval.confidence * 100))
    figures = [Figure(metric=c["metric"], value=round(c["current"], 4), production=round(c["baseline"], 4),
                      difference=round(c["difference"], 4), ci=f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                      threshold=f"{'rise' if c['metric'] in LOWER_IS_BETTER else 'drop'} > "
                                f"{settings.eval.regression_margin}", passed=not c["regressed"])
               for c in verdict["checks"]]
    worst = ", ".join(f"{c['metric']} {c['difference']:+.3f}" for c in verdict["checks"] if c["regressed"])
    alert = Alert(
        event="eval", status="REGRESSION", where=f"nightly_eval · index {result['index']}",
        headline=f"significant drop in {worst}", severity="warning",
        summary=(f"Eval run {result['eval_run_id']} scored lower than the per-question mean of the last "
                 f"{len(verdict['baseline_runs'])} nightly run(s) on the same questions. A metric regresses when "
                 f"the whole {pct}% paired bootstrap interval of the difference is below zero and the drop is "
                 f"larger than {settings.eval.regression_margin}."
                 + (f" Note: {verdict['note']}." if verdict.get("note") else "")),
        figures=figures,
        figure_headers=["metric", "rule", "this run", "baseline", "difference", f"{pct}% CI", ""],
        facts=[("eval run", result["eval_run_id"]), ("index", result["index"]),
               ("questions", str(result["questions"])), ("report", result["report"]),
               ("baseline runs", ", ".join(verdict["baseline_runs"]))],
        items=[{"title": f"{w['id']}: {w['question']}", "detail": f"drop {w['drop']:.3f} · answer: {w['answer'][:300]}"}
               for w in verdict["worst_questions"]],
        links=[("Airflow run", run_link(dag_id, run_id))],
    )
    out["alert"] = send_event(alert)
    from ragops.promotion import after_promotion

    rolled = run_library(after_promotion, settings, result["eval_run_id"], verdict, f"airflow:{dag_id}")
    if rolled:
        out["prompt_rollback"] = rolled
        send_event(rollback_alert(rolled, run_link(dag_id, run_id)))
    return out


def model_alert(result: dict[str, Any], verdict: dict[str, Any], link: str) -> Any:
    """The endpoint now answers with another model than the last nightly run's: every figure from
    here on measures a different model, whatever the prompt and the requested name say."""
    from ragops.alerts import Alert

    change = verdict["model_change"]
    before, after = ", ".join(change["from"]), ", ".join(change["to"])
    return Alert(event="model", status="MODEL CHANGED", where=f"nightly_eval · index {result['index']}",
                 headline=f"the served model changed: {before} -> {after}", severity="warning",
                 summary=(f"Eval run {result['eval_run_id']} was answered by {after}; the previous nightly run by "
                          f"{before}. The endpoint changed the model behind the requested name (a new snapshot, "
                          "a swapped file, another deployment). "
                          + (verdict.get("note") or "The nightly comparison uses runs of the same model only.")),
                 facts=[("eval run", result["eval_run_id"]), ("index", result["index"]),
                        ("served before", before), ("served now", after),
                        ("baseline runs", ", ".join(verdict["baseline_runs"]) or "(none)"),
                        ("report", result["report"])],
                 links=[("Airflow run", link)], dedupe=False)  # each change of model is news


def rollback_alert(r: dict[str, Any], link: str) -> Any:
    from ragops.alerts import Alert

    ref = f"{r['name']}@{r['version']}"
    if r["rolled_back"]:
        status, headline = "ROLLED BACK", f"{r['name']}@production rolled back from v{r['version']} to v{r['to']}"
        summary = ("The nightly evaluation after this version's promotion dropped significantly against the nightly "
                   f"runs before it ({', '.join(r['regressed'])}), so production was moved back "
                   "(prompts.auto_rollback). Inspect with `ragops prompts history` and the eval report.")
    else:
        status, headline = "REGRESSED", f"{ref} regressed after its promotion (auto-rollback is off)"
        summary = (f"Nightly run {r['run_id']} dropped significantly against the runs before the promotion "
                   f"({', '.join(r['regressed'])}). Roll back with `ragops prompts rollback {r['name']}`.")
    return Alert(event="prompt", status=status, where=f"nightly_eval · {r['name']}", headline=headline,
                 severity="critical", summary=summary, dedupe=False,
                 facts=[("prompt", r["name"]), ("promoted version", ref),
                        ("versions before", ", ".join(f"v{v}" for v in r["baseline_versions"])),
                        ("eval run", r["run_id"])], links=[("Airflow run", link)])
