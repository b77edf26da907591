"""Glue of the rebuild_index DAG: one library call per task, and the index e-mail."""

from __future__ import annotations

import logging
from typing import Any

from ragops.airflow.assets import INDEX_UPDATES, index_asset, index_from_uri
from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def _pipeline_trigger(events: Any) -> str | None:
    """The index whose settings change triggered this run (None for cron or manual runs)."""
    for asset in events or []:
        name = index_from_uri(getattr(asset, "uri", None) or str(asset), kind="pipeline")
        if name:
            return name
    return None


def run(params: dict[str, Any], actor: str, triggering_asset_events: Any, outlet_events: Any) -> dict[str, Any]:
    """Rebuild (or roll back) the index; emits the index Asset when another version starts serving."""
    from ragops.lifecycle import rebuild, rollback

    settings = task_settings()
    changed = _pipeline_trigger(triggering_asset_events)
    index = changed or params.get("index") or settings.ingest.default_index
    if params.get("action") == "rollback":
        to = int(params.get("rollback_to") or 0) or None
        result = run_library(rollback, settings, index, to, actor=actor)
        result["action"], result["swapped"], result["live"] = "rollback", True, result["to"]
    elif changed:  # the settings' model or chunking changed: apply them, once
        result = run_library(rebuild, settings, index, actor=actor, only_if_changed=True)
        result["action"] = "rebuild"
    else:
        result = run_library(rebuild, settings, index, actor=actor, model=params.get("embedding_model") or None,
                             profile=params.get("chunking_profile") or None, force=bool(params.get("force")),
                             backend=params.get("embedding_backend") or None)
        result["action"] = "rebuild"
    if result["swapped"] and outlet_events is not None:  # nightly_eval evaluates the version that now serves
        outlet_events[INDEX_UPDATES].add(index_asset(index), extra={"collection": result["live"],
                                                                    "action": result["action"]})
    return _small(result)


def _small(r: dict[str, Any]) -> dict[str, Any]:
    """What XCom carries to the notify task (no vectors, no long lists)."""
    keep = ("index", "action", "swapped", "skipped", "reasons", "live", "previous", "from", "to", "chunks",
            "documents", "live_documents", "reused", "embedded", "pipeline_change", "pipeline", "previous_pipeline",
            "retrieval", "deleted", "removed_partial", "elapsed_s", "copied", "removed", "across_pipelines",
            "sample_min_cosine", "force")
    return {k: r[k] for k in keep if k in r}


def notify(result: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """An `index` e-mail for a swap, a rejection or a rollback (nothing for a skipped run)."""
    from ragops.airflow.alerting import run_link, send_event

    if result.get("skipped"):
        log.info("no e-mail: %s", result["skipped"])
        return {"sent": False, "reason": result["skipped"]}
    settings = task_settings()
    alert = index_alert(result, settings.eval.regression_margin, run_link(dag_id, run_id))
    return send_event(alert)


def index_alert(r: dict[str, Any], margin: float, link: str) -> Any:
    from ragops.alerts import Alert, Figure
    from ragops.pipelines import describe

    index = r["index"]
    links = [("Airflow run", link)]
    if r["action"] == "rollback":
        how = ("its own chunks as of its retirement; its pipeline is pinned" if r.get("across_pipelines") else
               f"{r.get('copied', 0)} chunk(s) brought over from the live version, {r.get('removed', 0)} removed")
        return Alert(event="index", status="ROLLED BACK", severity="warning", dedupe=False, where=f"rebuild_index · index {index}",
                     headline=f"index {index} serves {r['to']} again (was {r['from']})",
                     summary=f"The alias moved back in one transaction: {how}.",
                     facts=[("index", index), ("from", r["from"]), ("to", r["to"])], links=links)
    figures: list[Figure] = []
    check = r.get("retrieval") or {}
    if check.get("live"):
        for m in ("hit_rate@5", "ndcg@10"):
            new, live = check["new"][m], check["live"][m]
            figures.append(Figure(metric=m, value=round(new, 4), production=round(live, 4),
                                  difference=round(new - live, 4), threshold=f">= live - {margin}",
                                  passed=new >= live - margin))
    facts = [("index", index), ("serving", r["live"]), ("pipeline", describe(r.get("pipeline"))),
             ("chunks", str(r.get("chunks"))), ("documents", f"{r.get('documents')}"
                                                              + (f" (live had {r['live_documents']})"
                                                                 if r.get("live_documents") is not None else "")),
             ("vectors", f"{r.get('reused', 0)} reused, {r.get('embedded', 0)} embedded"),
             ("sample cosine (min)", f"{r['sample_min_cosine']:.4f}" if r.get("sample_min_cosine") else "n/a"),
             ("golden questions", str(check.get("questions") or check.get("skipped") or "none configured"))]
    if r["swapped"]:
        facts.insert(2, ("previous", r["previous"]))
        return Alert(event="index", status="SWAPPED", severity="info", dedupe=False, where=f"rebuild_index · index {index}",
                     headline=f"index {index} now serves {r['live']} (was {r['previous']})",
                     summary=("The new version passed validation (ids and counts equal the state store, sampled "
                              "vectors equal their text's embedding, retrieval on the golden questions no worse "
                              "than live beyond the margin) and the alias moved in one transaction. "
                              f"Roll back with `ragops index rollback --index {index}` or the DAG's rollback action."
                              + (f" Old versions deleted: {', '.join(r['deleted'])}." if r.get("deleted") else "")),
                     figures=figures, facts=facts, links=links,
                     figure_headers=["metric", "rule", "new version", "live", "difference", "", ""])
    return Alert(event="index", status="REJECTED", severity="warning", dedupe=False, where=f"rebuild_index · index {index}",
                 headline=f"rebuild of index {index} rejected; {r['live']} keeps serving",
                 summary="The new version failed validation and was dropped; nothing changed for readers.",
                 figures=figures, facts=facts, links=links,
                 items=[{"title": "reason", "detail": reason} for reason in r.get("reasons", [])],
                 figure_headers=["metric", "rule", "new version", "live", "difference", "", ""])
