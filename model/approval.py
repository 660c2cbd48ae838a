"""When a production run must wait for a person (the inventory's ``approval:`` policy).

By default every production run that changes something asks; a run that changes nothing never
does. ``not_needed`` exempts triggers (manual, webhook, nightly, agent) and phases; ``--yes`` exempts a
manual CLI run, and ``auto_approve`` a run the DeploymentOrchestratorAgent started (both audited by
the caller).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from model.inventory import ApprovalPolicy

Environment = Literal["production", "staging"]
YES_TRIGGERS = {"manual": "--yes", "agent": "auto_approve"}  # trigger -> the flag that skips the gate for it


def approval_needed(policy: ApprovalPolicy, *, environment: Environment, trigger: str,
                    changed_phases: Collection[str], yes: bool = False) -> tuple[bool, str]:
    """(needed, why) for the audit log and the run's report."""
    if environment != "production":
        return False, "a staging run stops after its smoke tests"
    if not changed_phases:
        return False, "the run changes nothing"
    if yes and trigger in YES_TRIGGERS:
        return False, f"{YES_TRIGGERS[trigger]} on {'an' if trigger == 'agent' else 'a'} {trigger} run"
    if trigger in policy.not_needed.triggers:
        return False, f"the policy needs no approval for {trigger} runs"
    asking = sorted(set(changed_phases) - set(policy.not_needed.phases))
    if not asking:
        return False, f"the policy needs no approval for changes in {', '.join(sorted(changed_phases))}"
    return True, f"{trigger} run changes phase(s) {', '.join(asking)}"
