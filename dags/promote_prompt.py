"""
### promote_prompt

Decides whether a new prompt version replaces `production`: candidate and production answer the
same golden questions on the same index version with the same generator settings, and a gate
profile from the settings (`gates.<profile>`) decides: absolute thresholds on the candidate,
non-regression against production (paired bootstrap interval of each metric's per-question
difference; a check fails when the drop is significant and beyond the margin), and a latency
and cost budget.

**When**: a new version is registered (Asset `ragops://prompts/versions` from `sync_prompts`), or by hand.

Tasks: `prepare` (which candidate) → `evaluate` (both eval runs and the gate) → `decide`
(branch: `route` when the gate decides alone, `approval` when a person must too) → `approval` (only when approval is required: a person answers Approve or Reject in the
Airflow UI's Required Actions; no answer within `prompts.approval_timeout_hours` = Reject) →
`promote` (moves `production` in one transaction, audit entry and history row, `prompt`
e-mail) or `reject` (records the failing checks and the questions that regressed most, `prompt`
e-mail). A failed gate is a decision, not a failed task. After a promotion, `nightly_eval`
compares with the pre-promotion nightly runs and can roll back (`prompts.auto_rollback`).

**Consumes** prompt versions (`include/prompts/<name>/v<N>.yaml`), a golden set, the live index.
**Produces** two eval runs (purpose `candidate` and `adhoc`, never part of the nightly baseline),
the decision in the prompt's history (`ragops prompts history NAME`), the audit log and an e-mail.

**Connections**: `smtp_default`; `llm_default` for `openai` prompts and judge metrics;
`chroma_default` in server mode.
**Params**: `prompt`, `candidate_version`, `dataset`, `gate_profile`, `require_approval`.
Settings: `include/config/ragops.yaml` (`prompts.*`, `gates.*`, `eval.*`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from ragops.airflow.alerting import RagopsSmtpNotifier
from ragops.airflow.approval import ApprovalBranchOperator
from ragops.airflow.assets import PROMPT_UPDATES, PROMPT_VERSIONS
from ragops.airflow.callbacks import record_failure
from ragops.airflow.common import DEFAULT_ARGS
from ragops.config import load_settings

SETTINGS = load_settings()  # YAML only: no database, no Connection, no model at parse time
PROMPT_NAMES = sorted(p.name for p in SETTINGS.prompts_dir.iterdir() if p.is_dir()) \
    if SETTINGS.prompts_dir.is_dir() else []
DEFAULT_PROMPT = SETTINGS.eval.default_prompt.partition("@")[0]


@dag(
    dag_id="promote_prompt",
    schedule=[PROMPT_VERSIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragops", "prompts"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=[record_failure, RagopsSmtpNotifier()],
    params={
        "prompt": Param(DEFAULT_PROMPT, type="string", pattern=r"^[a-z0-9][a-z0-9_-]*$", title="Prompt",
                        description=f"Prompt name (a folder of {SETTINGS.prompts.dir}): "
                                    f"{', '.join(PROMPT_NAMES) or 'none yet'}. An Asset-triggered run uses the "
                                    "prompt of the new version."),
        "candidate_version": Param(0, type="integer", minimum=0, title="Candidate version",
                                   description="0 = the oldest registered version newer than production that no "
                                               "gate has decided yet."),
        "dataset": Param(None, type=["null", "string"], title="Golden dataset",
                         description="JSONL question set; empty = prompts.dataset, else eval.default_dataset."),
        "gate_profile": Param(SETTINGS.prompts.gate, type="string", enum=sorted(SETTINGS.gates), title="Gate profile",
                              description="Thresholds, non-regression margin and budgets (gates.<profile>)."),
        "require_approval": Param(None, type=["null", "boolean"], title="Require human approval",
                                  description="Empty = the gate profile's require_approval, else "
                                              "prompts.require_approval. A passed gate then waits for a person."),
    },
)
def promote_prompt() -> None:
    @task
    def prepare(params=None, run_id=None, triggering_asset_events=None) -> dict:
        from ragops.airflow import promotion

        return promotion.prepare(params, run_id, triggering_asset_events)

    @task
    def evaluate(prep: dict, dag_run=None) -> dict:
        from ragops.airflow import promotion
        from ragops.airflow.common import run_type

        return promotion.evaluate(prep, run_type(dag_run))

    @task.branch
    def decide(decision: dict) -> str | None:
        """approval (a person decides), route (the gate decides), or nothing to do."""
        from ragops.airflow import promotion

        return promotion.branch(decision)

    @task.branch
    def route(decision: dict) -> str:
        return "promote" if decision["passed"] else "reject"

    approval = ApprovalBranchOperator(
        task_id="approval",
        subject="Promote {{ ti.xcom_pull(task_ids='evaluate')['name'] }}@"
                "{{ ti.xcom_pull(task_ids='evaluate')['candidate_version'] }} to production?",
        body="{{ ti.xcom_pull(task_ids='evaluate')['summary'] }}",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "promote", "Reject": "reject"},
        defaults=["Reject"],
        response_timeout=timedelta(hours=SETTINGS.prompts.approval_timeout_hours),
    )

    # the decision is read from XCom, not passed: these run only after route or approval chose them
    # outlets: versions still waiting after this decision are announced again (one candidate per run)
    @task(trigger_rule="none_failed_min_one_success", outlets=[PROMPT_UPDATES])
    def promote(dag=None, run_id=None, dag_run=None, ti=None, outlet_events=None) -> dict:
        from ragops.airflow import promotion
        from ragops.airflow.common import actor

        return promotion.promote(ti.xcom_pull(task_ids="evaluate"), dag.dag_id, run_id, ti, outlet_events,
                                 actor(dag_run))

    @task(trigger_rule="none_failed_min_one_success", outlets=[PROMPT_UPDATES])
    def reject(dag=None, run_id=None, dag_run=None, ti=None, outlet_events=None) -> dict:
        from ragops.airflow import promotion
        from ragops.airflow.common import actor

        return promotion.reject(ti.xcom_pull(task_ids="evaluate"), dag.dag_id, run_id, ti, outlet_events,
                                actor(dag_run))

    decision = evaluate(prepare())
    promoted, rejected = promote(), reject()
    routed = route(decision)
    decide(decision) >> [approval, routed]
    approval >> [promoted, rejected]
    routed >> [promoted, rejected]


promote_prompt()
