"""
### monitor_production

Watches the live RAG application through its traces (`ragops.app.answer`, `ragops ask`, or any
application writing with `ragops.tracing`).

**When**: hourly (`production.schedule`) and on manual trigger.

**Steps** (task `monitor`, one library call, safe to retry):
1. Load new trace and feedback lines into the state store (incremental per file, idempotent by
   trace id; bad lines skipped and counted by reason).
2. Online evaluation of a sample of new traces (`production.sample_rate`, capped per day by
   `production.daily_eval_cap`, every prompt version at least `production.min_per_version`):
   claim-level groundedness and hallucination, citation validity, PII, blocklist, instructions
   planted in retrieved text, and the LLM judge when `production.judge` is on.
3. Checks on the window (`production.window`): hallucination rate, negative feedback, refusal
   rate, the share of answers over the latency SLO (each a one-sided binomial test against its
   limit), cost per day against `production.daily_budget_usd` (unpriced models are unknown cost).

**Produces** a monitor run in the state store (`ragops monitor history` / `show`), each breach in
the audit log (`production_breach`), and a `production` e-mail with the worst traces (task
`notify`, separate so an SMTP retry never repeats the checks; identical alerts are folded).

**Connections**: `smtp_default` (e-mail); `llm_default` for the judge (optional);
`chroma_default` in server mode.
**Params**: `window`, `evaluate`, `sample_rate`, `daily_eval_cap`.
Settings: `include/config/ragops.yaml` (`production.*`). Trace schema: docs/production.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
P = SETTINGS.production
WINDOW = r"^\s*[1-9][0-9]*\s*[mhdw]\s*$"  # m = minutes
CRON = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}


@dag(
    dag_id="monitor_production",
    schedule=CronTriggerTimetable(CRON.get(P.schedule, P.schedule), timezone=P.timezone) if P.schedule else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "production"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "window": Param(P.window, type="string", pattern=WINDOW, title="Window",
                        description="Checks judge the traces of this long, ending now, e.g. 1d, 6h, 2w."),
        "evaluate": Param(True, type="boolean", title="Online evaluation",
                          description="Evaluate a sample of the new traces (groundedness, citations, safety)."),
        "sample_rate": Param(P.sample_rate, type="number", minimum=0, maximum=1, title="Sample rate",
                             description="Share of new traces evaluated (the decision is a hash of the trace id)."),
        "daily_eval_cap": Param(P.daily_eval_cap, type="integer", minimum=0, maximum=100000, title="Daily cap",
                                description="At most this many traces evaluated per UTC day."),
    },
)
def monitor_production() -> None:
    @task
    def monitor(params=None, run_id=None, dag_run=None) -> dict:
        from ragops.airflow import production
        from ragops.airflow.common import actor, run_type

        return production.run(params, run_id, run_type(dag_run), actor(dag_run))

    @task
    def notify(result: dict, dag=None, run_id=None) -> dict:
        from ragops.airflow import production

        return production.notify(result, dag.dag_id, run_id)

    notify(monitor())


monitor_production()
