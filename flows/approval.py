"""The approval gate: the run pauses with Prefect's ``pause_flow_run(wait_for_input=...)``, so the
UI shows the plan (the pause's description) and renders the form; ``homelab approve`` answers
the same form through the API. A rejection or a timeout is an answer, not a crash."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass

from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

PAUSE_KEY = "homelab-approval"
SUMMARY_KEY = "homelab-approval-summary"  # a flow run input: `homelab pending` shows it
POLL_ENV = "HOMELAB_APPROVAL_POLL_S"  # how often the paused run looks for an answer


class Approval(RunInput):
    """The form the Prefect UI shows on a run that waits for approval."""

    approve: bool = Field(False, title="Approve", description="Tick to deploy to production; leave it to reject.")
    reason: str = Field("", title="Reason", description="Why (kept in the audit log).")
    approver: str = Field("", title="Your name", description="Who answers (Prefect does not say who you are).")
    phases: list[str] | None = Field(None, title="Only these production phases",
                                     description="Allow only these phases. Empty: every phase of the plan.")


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str
    approver: str
    phases: list[str] | None = None
    timed_out: bool = False

    def to_json(self) -> dict:
        return asdict(self)


SERVER_GRACE_S = 300  # the server's pause outlives ours, so the run can still end as not-approved


async def ask_approval(description: str, timeout_s: float) -> Decision:
    """Pause until someone answers or ``timeout_s`` passes; the answer as a Decision.

    The run times itself out: once Prefect's own pause has expired, the server fails any
    further state of the run, and a timeout would read as a crash."""
    from prefect.exceptions import FlowPauseTimeout

    poll_s = float(os.environ.get(POLL_ENV, "2"))
    try:
        async with asyncio.timeout(timeout_s):
            answer = await apause_flow_run(wait_for_input=Approval.with_initial_data(description=description),
                                           timeout=round(timeout_s) + SERVER_GRACE_S,
                                           poll_interval=poll_s,  # type: ignore[arg-type]
                                           key=PAUSE_KEY)
    except (TimeoutError, FlowPauseTimeout):
        return Decision(approved=False, reason=f"no answer within {timeout_s:g} s", approver="", timed_out=True)
    assert answer is not None
    return Decision(approved=answer.approve, reason=answer.reason, approver=answer.approver or "unknown",
                    phases=answer.phases or None)
