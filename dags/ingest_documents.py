"""
### ingest_documents

Keeps a Chroma index exactly in sync with a document source.

**Consumes** a source: a directory (Markdown, text, reStructuredText, HTML), a JSONL/Parquet record
file (a BEIR `corpus.jsonl` works as is) or an fsspec URL.
**Produces** the index's live Chroma collection and state-store records, and an Asset event
`ragops://index/<index>` (through the alias `ragops_index_updates`) when the index changed.
An index keeps the embedding model and chunking of its live version; when the settings ask for
others, the commit emits `ragops://pipeline/<index>` (alias `ragops_pipeline_changes`) and
`rebuild_index` applies them blue/green.

Tasks: `plan` (discover, hash, compare with the state store, stage batches) →
`process_batch` (mapped: parse, Great Expectations checks, token-aware chunking, embed new
chunks only) → `commit` (the single writer, pool `ragops_chroma_writer`: upsert, one state-store
transaction, delete stale vectors, self-check). Every task is safe to retry.

Failures send one e-mail per run through `smtp_default` (recipients in `alerts.recipients`);
quarantined documents send a `quality` e-mail.

**Connections**: `smtp_default` (alert e-mail); `chroma_default` when `chroma.mode` is `server` (host, port, password = token);
the one named in the `source_conn_id` Param for a remote source.
**Params**: `source`, `source_conn_id`, `index`, `full_resync`, `dry_run`, `allow_mass_delete`.
Settings: `include/config/ragops.yaml` (`ingest.*`, `chunking.*`, `quality.*`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.assets import INDEX_UPDATES, PIPELINE_CHANGES
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS, WRITER_POOL
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
INDEXES = sorted(SETTINGS.indexes) or [SETTINGS.ingest.default_index]


@dag(
    dag_id="ingest_documents",
    schedule=SETTINGS.ingest.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "ingest"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "source": Param(SETTINGS.ingest.default_source, type="string", minLength=1, title="Source",
                        description="Directory, .jsonl/.parquet file or fsspec URL (s3://, gs://, file://). "
                                    "Relative paths are relative to the project root."),
        "source_conn_id": Param(None, type=["null", "string"], title="Source connection",
                                description="Airflow Connection for a remote source URL (s3://, gs://, abfs://), "
                                            "used through ObjectStoragePath. Empty: local path or fsspec defaults."),
        "index": Param(SETTINGS.ingest.default_index, type="string", enum=INDEXES, title="Index",
                       description="Index to sync into (declared under `indexes:` in the settings file)."),
        "full_resync": Param(False, type="boolean", title="Full resync",
                             description="Re-parse and re-chunk every document and reconcile Chroma; "
                                         "embeds only vectors that are missing."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report what would be added, changed and deleted; write nothing."),
        "allow_mass_delete": Param(False, type="boolean", title="Allow mass delete",
                                   description="Allow deleting more than quality.max_delete_share of the "
                                               "source's documents (for example after a real clean-up)."),
    },
)
def ingest_documents() -> None:
    @task
    def plan(params=None, run_id=None, dag_run=None) -> list:
        from ragops.airflow import ingest
        from ragops.airflow.common import run_type

        return ingest.plan(params, run_id, run_type(dag_run))

    @task(max_active_tis_per_dagrun=4)
    def process_batch(batch: dict) -> dict:
        from ragops.airflow import ingest

        return ingest.process(batch)

    @task(pool=WRITER_POOL, outlets=[INDEX_UPDATES, PIPELINE_CHANGES], trigger_rule="none_failed")
    def commit(run_id=None, dag_run=None, outlet_events=None) -> dict:
        from ragops.airflow import ingest
        from ragops.airflow.common import actor

        return ingest.commit(run_id, outlet_events, actor(dag_run))

    batches = process_batch.expand(batch=plan())
    batches >> commit()


ingest_documents()
