"""
### rebuild_index

Builds a new version of an index's Chroma collection (`<index>__v<N>`) blue/green, validates it
against the live version, and only then moves the alias (one state-store transaction). Also rolls
an index back to a retained version.

**When**: weekly (`rebuild.schedule`: reuses every stored vector, and dropping old versions
compacts Chroma), on manual trigger, and when an ingest finds that the settings' embedding model
or chunking changed for an index (Asset `ragops://pipeline/<index>`, emitted through the alias
`ragops_pipeline_changes`).

**How**: with the index's pipeline, the new version is written from the state store's chunks,
copying the stored vector of every unchanged chunk and embedding only the rest; with another
model or chunking profile the index's sources are read again and everything is embedded. The
new version must match the state store's ids and counts, its sampled vectors must equal a fresh
embedding of their text, and retrieval on the index's golden questions (hit rate@5, nDCG@10)
must be no worse than live by more than `eval.regression_margin`. A rejected version is dropped
and live keeps serving. The last `rebuild.keep` versions are kept for instant rollback. A killed
run leaves live untouched; the next run removes what it left.

**Consumes** the state store's chunks (or the index's sources), the live collection, the
index's golden set (`indexes.<name>.golden`). **Produces** the new live collection, its BM25
index, an audit entry (`index_swapped`, `index_rebuild_rejected`, `index_rolled_back`), an
`index` e-mail, and an Asset event `ragops://index/<index>` when another version serves (so
`nightly_eval` evaluates it).

Tasks: `rebuild` (pool `ragops_chroma_writer`: the rebuild or rollback) → `notify` (the e-mail;
a separate task, so an SMTP retry never repeats a rebuild) and → `snapshot` (the reference
snapshot `check_drift` compares the corpus with, taken when another version starts serving).

**Connections**: `smtp_default` (e-mail); `chroma_default` in server mode.
**Params**: `index`, `action`, `embedding_model`, `chunking_profile`, `embedding_backend`, `force`, `rollback_to`.
Settings: `include/config/ragops.yaml` (`rebuild.*`, `chunking.profiles`, `embedding.*`).
"""

from __future__ import annotations

import functools
import operator

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.assets import INDEX_UPDATES, pipeline_asset
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS, WRITER_POOL
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
INDEXES = sorted(SETTINGS.indexes) or [SETTINGS.ingest.default_index]
PROFILES = sorted(SETTINGS.chunking.profiles)
SETTINGS_CHANGED = functools.reduce(operator.or_, [pipeline_asset(i) for i in INDEXES])
SCHEDULE = (AssetOrTimeSchedule(timetable=CronTriggerTimetable(SETTINGS.rebuild.schedule,
                                                               timezone=SETTINGS.rebuild.timezone),
                                assets=SETTINGS_CHANGED) if SETTINGS.rebuild.schedule else SETTINGS_CHANGED)


@dag(
    dag_id="rebuild_index",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "index"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "index": Param(SETTINGS.ingest.default_index, type="string", enum=INDEXES, title="Index",
                       description="Index to rebuild or roll back (a settings-triggered run uses the index "
                                   "whose settings changed)."),
        "action": Param("rebuild", type="string", enum=["rebuild", "rollback"], title="Action",
                        description="rebuild: build, validate and swap in a new version. rollback: serve a "
                                    "retained earlier version again (see `ragops index status`)."),
        "embedding_model": Param(None, type=["null", "string"], title="Embedding model",
                                 description="Empty: keep the index's model. 'settings': follow embedding.model. "
                                             "Otherwise a model to pin: bundled:all-MiniLM-L6-v2 or a local "
                                             "sentence-transformers folder (nothing is downloaded). Another model "
                                             "re-reads the sources and embeds everything."),
        "chunking_profile": Param(None, type=["null", "string"], enum=[None, "settings", *PROFILES],
                                  values_display={None: "(keep the index's chunking)",
                                                  "settings": "settings: follow chunking.profile",
                                                  **{p: f"pin profile {p}" for p in PROFILES}},
                                  title="Chunking profile",
                                  description="Empty: keep the index's chunking. 'settings': follow "
                                              "chunking.profile. Otherwise a profile of chunking.profiles to pin."),
        "embedding_backend": Param(None, type=["null", "string"],
                                   enum=[None, "settings", "torch", "onnx", "openvino", "onnx-int8"],
                                   values_display={None: "(keep the index's backend)",
                                                   "settings": "settings: follow embedding.backend",
                                                   "onnx-int8": "onnx-int8 (quantised: faster, measured quality loss)"},
                                   title="Embedding backend",
                                   description="The runtime of the same model. Another backend embeds everything "
                                               "again (vectors of two backends never mix) and is validated by the "
                                               "gate before it serves."),
        "force": Param(False, type="boolean", title="Re-embed everything",
                       description="Embed every chunk again instead of reusing stored vectors (for vectors "
                                   "suspected to be damaged)."),
        "rollback_to": Param(0, type="integer", minimum=0, title="Roll back to version",
                             description="With action rollback: the version number (0 = the newest retired one)."),
    },
)
def rebuild_index() -> None:
    @task(pool=WRITER_POOL, outlets=[INDEX_UPDATES])
    def rebuild(params=None, dag_run=None, triggering_asset_events=None, outlet_events=None) -> dict:
        from ragops.airflow import rebuild as glue
        from ragops.airflow.common import actor

        return glue.run(params, actor(dag_run), triggering_asset_events, outlet_events)

    @task
    def notify(result: dict, dag=None, run_id=None) -> dict:
        from ragops.airflow import rebuild as glue

        return glue.notify(result, dag.dag_id, run_id)

    @task
    def snapshot(result: dict, dag_run=None) -> dict:
        from ragops.airflow import drift
        from ragops.airflow.common import actor

        return drift.snapshot_after_swap(result, actor(dag_run))

    result = rebuild()
    notify(result)
    snapshot(result)


rebuild_index()
