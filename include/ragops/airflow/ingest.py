"""Task glue for the ingest_documents DAG: Params and run id in, one library call, small XCom out."""

from __future__ import annotations

import json
import logging
from typing import Any

from ragops.airflow.common import run_library, task_settings

log = logging.getLogger(__name__)


def plan(params: dict[str, Any], run_id: str, run_type: str = "manual") -> list[dict[str, Any]]:
    """Returns the batches to map over; the full plan is staged for the other tasks."""
    from ragops.indexing import plan_sync

    settings = task_settings()
    conn_id = params.get("source_conn_id") or None
    summary = run_library(
        plan_sync, settings, params["source"], params["index"], run_id, fs=source_fs(params["source"], conn_id),
        full_resync=bool(params.get("full_resync")), dry_run=bool(params.get("dry_run")),
        allow_mass_delete=bool(params.get("allow_mass_delete")),
        allow_create=params["index"] in (set(settings.indexes) or {settings.ingest.default_index}),
        trigger=f"airflow:{run_type}",
    )
    log.info("plan: %s", json.dumps({k: summary[k] for k in ("index", "source_id", "counts", "samples")}))
    return [{"run_id": run_id, "batch_no": b, "source_conn_id": conn_id} for b in summary["batches"]]


def source_fs(source: str, conn_id: str | None) -> Any:
    """The filesystem of a remote source with credentials from an Airflow Connection
    (ObjectStoragePath), or None to let fsspec resolve the URL on its own."""
    if not conn_id:
        return None
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(source, conn_id=conn_id).fs


def process(batch: dict[str, Any]) -> dict[str, Any]:
    from ragops.indexing import process_batch, read_plan

    settings = task_settings()
    fs = source_fs(read_plan(settings, batch["run_id"])["source"], batch.get("source_conn_id"))
    return run_library(process_batch, settings, batch["run_id"], batch["batch_no"], fs=fs)


def commit(run_id: str, outlet_events: Any, actor: str = "airflow") -> dict[str, Any]:
    from ragops.airflow.assets import INDEX_UPDATES, index_asset
    from ragops.indexing import commit_sync

    report = run_library(commit_sync, task_settings(), run_id, actor=actor)
    if report.get("dry_run"):
        log.info("dry run, nothing written: %s", json.dumps(report["plan"]["counts"]))
        return report
    if report["quarantine"]["documents"]:
        from ragops.airflow.alerting import send_event

        send_event(quarantine_alert(report))
    if report.get("pipeline_drift"):  # the settings' model or chunking changed: rebuild_index applies it
        from ragops.airflow.assets import PIPELINE_CHANGES, pipeline_asset

        log.warning("index %s: settings changed since its live version was built (%s); triggering rebuild_index",
                    report["index"], ", ".join(report["pipeline_drift"]))
        outlet_events[PIPELINE_CHANGES].add(pipeline_asset(report["index"]),
                                            extra={"changed": sorted(report["pipeline_drift"])})
    changed = report["chunks"]["upserted"] or report["chunks"]["deleted"] or report["chunks"]["repaired_orphans"]
    if changed:  # downstream DAGs (rebuild, eval) run only when the index really changed
        outlet_events[INDEX_UPDATES].add(index_asset(report["index"]),
                                         extra={"run_id": report["run_id"], "collection": report["collection"],
                                                "chunks": report["chunks"]})
    return report


def quarantine_alert(report: dict[str, Any]) -> Any:
    """A data-quality e-mail for documents quarantined by an otherwise successful sync."""
    from ragops.airflow.alerting import run_link
    from ragops.alerts import Alert

    q = report["quarantine"]
    n = q["documents"]
    return Alert(
        event="quality", status="QUARANTINED", where="ingest_documents.commit", severity="warning",
        headline=f"{n} document(s) quarantined in index {report['index']}",
        summary="These documents were not indexed (a previously indexed version, if any, keeps serving). "
                "Fix them at the source; the next sync picks them up. `ragops quarantine --run RUN` lists all.",
        facts=[("index", report["index"]), ("source", report["source_id"]), ("run", report["run_id"]),
               ("reasons", ", ".join(f"{k}: {v}" for k, v in q["reasons"].items())),
               ("unchanged since quarantined", str(q.get("still", 0))),
               ("repaired / indexed with a warning", "{} / {}".format(
                   (report.get("repairs") or {}).get("repaired_documents", 0),
                   (report.get("repairs") or {}).get("warned_documents", 0)))],
        items=[{"title": e["doc_id"], "detail": f"{e['reason']}: {e['detail']}"} for e in q["entries"]],
        links=[("Open the run in Airflow", run_link("ingest_documents", report["run_id"]))],
    )
