"""
### check_drift

Asks whether the index and the golden questions still represent what users ask and what the
corpus holds, and whether quality is sliding slowly.

**When**: nightly (`drift.schedule`, after `nightly_eval`) and on manual trigger.

**Checks** (each can be chosen with the `checks` Param):
- `corpus`: the live collection's chunk vectors against a reference snapshot (taken by
  rebuild_index when a version starts serving, by the first check after a prompt promotion, or a
  named one): MMD² (RBF kernel), a domain
  classifier's cross-validated ROC AUC with its threshold set by permutation, and the distance of
  the centroids; every p-value from a permutation test, Bonferroni over the tests.
- `documents`: chunk length and chunks-per-document distributions (PSI and KS), document and chunk
  counts, and the quarantine rate of ingests (one-sided Fisher test).
- `queries`: the query log's current window against its reference window, with the same tests;
  negative user feedback, when logged.
- `gaps`: the share of current queries whose best chunk is below `drift.gap_threshold`, with the
  uncovered queries clustered so a person sees which documents are missing.
- `quality`: each watched nightly eval metric against control limits from the runs before it
  (3-sigma, EWMA, run rule), so a slow decline is caught even when every night passes its gate.

**Produces** a check in the state store (`ragops drift history` / `show`), every breach in the
audit log (`drift_breach`), `report.html` (plots) and `results.json` under
`<data_dir>/drift/<check>/`, a `drift` e-mail on a breach, and, when enabled, a targeted run of
`nightly_eval` on the golden questions nearest the drifted region.

Tasks: `check` → `notify` (the e-mail; a separate task, so an SMTP retry never repeats the check);
`check` → `plan_targeted` (skips what follows when there is nothing to evaluate) → `targeted_eval`
(triggers `nightly_eval` with `question_ids`; such runs never join the nightly baseline).

**Connections**: `smtp_default` (e-mail); `chroma_default` in server mode.
**Params**: `index`, `checks`, `methods`, `reference`, `reference_window`, `current_window`,
`sample_size`, `permutations`, `seed`, `targeted_eval`.
Settings: `include/config/ragops.yaml` (`drift.*`). Query log schema: docs/drift.md.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS
from ragops.config import DRIFT_CHECKS, DRIFT_METHODS, load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
D = SETTINGS.drift
INDEXES = sorted(SETTINGS.indexes) or [SETTINGS.ingest.default_index]
WINDOW = r"^\s*[1-9][0-9]*\s*[mhdw]\s*$"  # m = minutes


@dag(
    dag_id="check_drift",
    schedule=CronTriggerTimetable(D.schedule, timezone=D.timezone) if D.schedule else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "drift"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "index": Param(SETTINGS.ingest.default_index, type="string", enum=INDEXES, title="Index",
                       description="Index whose corpus, queries and quality are checked."),
        "checks": Param(list(D.checks), type="array", items={"type": "string", "enum": list(DRIFT_CHECKS)},
                        uniqueItems=True, minItems=1, title="Checks",
                        description="corpus, documents, queries, gaps, quality (default: drift.checks)."),
        "methods": Param(list(D.methods), type="array", items={"type": "string", "enum": list(DRIFT_METHODS)},
                         uniqueItems=True, minItems=1, title="Methods",
                         description="Two-sample tests on embeddings: mmd, classifier, centroid. Each is judged at "
                                     "alpha / number of methods."),
        "reference": Param("last", type="string", minLength=1, title="Reference snapshot",
                           description="'last' = the snapshot of the last index swap or prompt promotion (taken now "
                                       "if missing); or the name of a snapshot (`ragops drift snapshots`)."),
        "reference_window": Param(D.reference_window, type="string", pattern=WINDOW, title="Reference window",
                                  description="Queries of this long before the current window, e.g. 7d, 2w, 12h."),
        "current_window": Param(D.current_window, type="string", pattern=WINDOW, title="Current window",
                                description="The newest queries, ending at the run's data interval end (scheduled) or "
                                            "now (manual), e.g. 1d."),
        "sample_size": Param(D.sample_size, type="integer", minimum=50, maximum=20000, title="Sample size",
                             description="Vectors (and queries) per side; sampled with the seed, recorded with the check."),
        "permutations": Param(D.permutations, type="integer", minimum=19, maximum=5000, title="Permutations",
                              description="Resamples behind every p-value (raised when too few to reach the level)."),
        "seed": Param(D.seed, type="integer", minimum=0, title="Seed", description="Seed of every sample and test."),
        "targeted_eval": Param(D.targeted_eval, type="boolean", title="Targeted evaluation",
                               description="On a corpus, query or gap breach, run nightly_eval on the golden "
                                           "questions nearest the drifted region."),
    },
)
def check_drift() -> None:
    @task
    def check(params=None, run_id=None, dag_run=None, data_interval_end=None) -> dict:
        from ragops.airflow import drift
        from ragops.airflow.common import actor, run_type

        return drift.run(params, run_id, run_type(dag_run), data_interval_end, actor(dag_run))

    @task
    def notify(result: dict, dag=None, run_id=None) -> dict:
        from ragops.airflow import drift

        return drift.notify(result, dag.dag_id, run_id)

    @task.short_circuit
    def plan_targeted(result: dict) -> dict | None:
        from ragops.airflow import drift

        return drift.targeted_conf(result)

    result = check()
    notify(result)
    TriggerDagRunOperator(
        task_id="targeted_eval",
        trigger_dag_id="nightly_eval",
        conf=plan_targeted(result),
        trigger_run_id="drift__{{ run_id }}",
        skip_when_already_exists=True,  # a retry does not start a second targeted run
        wait_for_completion=False,
    )


check_drift()
