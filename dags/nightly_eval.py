"""
### nightly_eval

Evaluates the production prompt on the live index every night, and whenever an index Asset
(`ragops://index/<name>`) is updated by an ingest or a rebuild.

**Consumes** a golden question set (JSONL, `eval.default_dataset`) plus, unless a person chose
a dataset, the index's reviewed production questions (`<production.reviewed_dir>/<index>.jsonl`,
from the LLMOps page's review queue: reported apart, never restarting the baseline), a prompt version
(`include/prompts/<name>/v<N>.yaml`) and the index's live Chroma collection.
**Produces** an eval run in the state store (per-question results, metrics), `metrics.json`,
`results.jsonl` and `report.html` under `<data_dir>/eval/<run>/`, and an Asset event
`ragops://eval/<index>` (through the alias `ragops_eval_reports`) with the key metrics.

Tasks: `evaluate` (retrieval, generation and every metric for each question) → `compare`
(paired bootstrap against the per-question mean of the last `eval.baseline_runs` nightly runs;
an `eval` e-mail with the figures and the worst questions on a significant regression). A
regression is a finding, not a failed task. Runs with a non-default prompt, a sample or a
question list are evaluated and compared but never become part of the baseline.

**Connections**: `smtp_default` (e-mail); `llm_default` (optional: an OpenAI-compatible endpoint
for prompts whose `model.provider` is `openai`, and for LLM-as-judge metrics); `chroma_default`
in server mode.
**Params**: `dataset`, `prompt`, `index`, `sample_size`, `question_ids`.
Settings: `include/config/ragops.yaml` (`eval.*`).
"""

from __future__ import annotations

import functools
import operator

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.assets import EVAL_REPORTS, index_asset
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
INDEXES = sorted(SETTINGS.indexes) or [SETTINGS.ingest.default_index]
INDEX_UPDATED = functools.reduce(operator.or_, [index_asset(i) for i in INDEXES])
SCHEDULE = (AssetOrTimeSchedule(timetable=CronTriggerTimetable(SETTINGS.eval.schedule, timezone=SETTINGS.eval.timezone),
                                assets=INDEX_UPDATED) if SETTINGS.eval.schedule else INDEX_UPDATED)


@dag(
    dag_id="nightly_eval",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "eval"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "dataset": Param(SETTINGS.eval.default_dataset, type="string", minLength=1, title="Golden dataset",
                         description="JSONL golden question set; relative paths are relative to the project "
                                     "root. Import a BEIR set with `ragops eval import-beir`."),
        "prompt": Param(SETTINGS.eval.default_prompt, type="string", pattern=r"^[a-z0-9][a-z0-9_-]*(@[A-Za-z0-9_-]+)?$",
                        title="Prompt", description="NAME@VERSION (e.g. rag_answer@2) or NAME@ALIAS "
                                                    "(production, latest). Only the default joins the baseline."),
        "index": Param(SETTINGS.ingest.default_index, type="string", enum=INDEXES, title="Index",
                       description="Index whose live version is evaluated (an Asset-triggered run uses the "
                                   "index that was updated)."),
        "sample_size": Param(0, type="integer", minimum=0, title="Sample size",
                             description="0 = every question; otherwise a seeded random sample of this many."),
        "question_ids": Param([], type="array", items={"type": "string"}, title="Question ids",
                              description="Evaluate only these question ids (empty = all)."),
    },
)
def nightly_eval() -> None:
    @task(outlets=[EVAL_REPORTS])
    def evaluate(params=None, run_id=None, dag_run=None, triggering_asset_events=None, outlet_events=None) -> dict:
        from ragops.airflow import evaluation
        from ragops.airflow.common import run_type

        return evaluation.evaluate(params, run_id, run_type(dag_run),
                                   triggering_asset_events, outlet_events)

    @task
    def compare(result: dict, dag=None, run_id=None) -> dict:
        from ragops.airflow import evaluation

        return evaluation.compare(result, dag.dag_id, run_id)

    compare(evaluate())


nightly_eval()
