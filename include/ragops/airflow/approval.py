"""The approval step of promote_prompt: Airflow's HITLBranchOperator, plus the answer (who, what,
when) kept in XCom so the promote/reject task can record the approver in the prompt's history."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator


class ApprovalBranchOperator(HITLBranchOperator):
    """Approve -> ``promote``, Reject -> ``reject``; no answer in time -> the defaults (Reject)."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            user = event.get("responded_by_user")  # None when the timeout chose the defaults
            context["ti"].xcom_push(key="response", value={
                "chosen_options": list(event.get("chosen_options") or []),
                "responded_by": (dict(user) if isinstance(user, dict) else {"name": str(user)}) if user else None,
                "responded_at": str(event.get("responded_at"))})
        return super().execute_complete(context=context, event=event)
