"""
### sync_prompts

Registers new prompt versions: every valid `include/prompts/<name>/v<N>.yaml` that is not in the
registry yet is recorded with its content hash, author and change message, and from then on is
immutable. A registered file that was edited, or a new file that fails validation (undeclared or
unused variables, bad template syntax, unknown fields), fails the run with the file, the problem
and the fix (the valid new versions are registered anyway).

**Produces** an event of the Asset `ragops://prompts/versions` (through the alias `ragops_prompt_updates`,
only when versions were registered) with the new versions in its extra, which triggers
`promote_prompt`. The first registration of a prompt points `production` at its newest
version.

**Connections**: `smtp_default` (failure e-mail). **Params**: none.
Settings: `include/config/ragops.yaml` (`prompts.dir`, `prompts.sync_schedule`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.assets import PROMPT_UPDATES
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time


@dag(
    dag_id="sync_prompts",
    schedule=SETTINGS.prompts.sync_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "prompts"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
)
def sync_prompts() -> None:
    @task(outlets=[PROMPT_UPDATES])
    def sync(outlet_events=None) -> dict:
        from ragops.airflow import promotion

        return promotion.sync(outlet_events)

    sync()


sync_prompts()
