"""Where the run consults the J-Jeco agents of the inventory's ``agents:`` section.

- ``review_plan``: project_manager reads the production plan before the approval gate. Its
  concerns (or a reject the policy only annotates) go into the approval form; a reject with
  ``on_reject: block`` ends the run not-approved, production untouched.
- ``PhaseVerifier``: verifier reads each production phase's results once its health gates
  passed. A ``fail`` fails the phase like a failed health gate: its changed stacks are undone
  and the phase's failure policy decides the rest.
- ``rewrite_notice``: communicator may rewrite a notice before it is sent.

Every decision lands in ``notes["agents"]`` (the run's report), the audit log and the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from model.agents import NotifyHook, PlanReviewHook
from model.desired import DesiredState
from tasks.engine.agent_hooks import HookDecision, consult
from tasks.engine.plan import Change
from tasks.engine.report import StackResult
from tasks.integrations.notify.notice import Notice

AGENTS_NOTE = "agents"


def decisions(notes: dict) -> list[dict]:
    return notes.setdefault(AGENTS_NOTE, [])


async def review_plan(desired: DesiredState, hook: PlanReviewHook, *, run_id: str, trigger: str, environment: str,
                      changes: Sequence[Change], markdown: str, notes: dict) -> HookDecision:
    payload = {"flow_run_id": run_id, "commit": desired.commit, "source": desired.source, "trigger": trigger,
               "environment": environment, "plan_markdown": markdown,
               "plan": {"changes": [c.to_dict() for c in changes]}}
    decision = await consult("plan_review", hook, payload, flow_run_id=run_id, commit=desired.commit)
    decisions(notes).append(decision.to_json())
    return decision


def blocks_production(decision: HookDecision, hook: PlanReviewHook) -> bool:
    return decision.decision == "reject" and hook.on_reject == "block"


def review_markdown(decision: HookDecision | None) -> str:
    """The approval form's section on the agent's review (empty when it approved cleanly)."""
    if decision is None or (decision.decision == "approve" and not decision.failure):
        return ""
    who = decision.agent or "plan_review"
    if decision.failure:
        head = f"**{who} could not review the plan** ({decision.failure}); {decision.outcome}: {decision.decision}."
    else:
        head = f"**{who} answered `{decision.decision}`.**"
    return head + (f"\n\n> {decision.text}" if decision.text else "")


class PhaseVerifier:
    """The rollout's per-phase check for production runs (``Rollout.phase_check``)."""

    def __init__(self, desired: DesiredState, *, run_id: str, notes: dict):
        hook = desired.inventory.agents.verify
        assert hook is not None
        self.hook = hook
        self.desired = desired
        self.run_id = run_id
        self.notes = notes
        self.so_far: list[StackResult] = []

    async def __call__(self, phase: str, results: list[StackResult]) -> str | None:
        """None: the phase passed; else why it failed."""
        changed = [r for r in results if r.result != "unchanged"]
        self.so_far += results
        payload = {"flow_run_id": self.run_id, "commit": self.desired.commit, "source": self.desired.source,
                   "phase": phase, "results": [r.to_json() for r in changed],
                   "probes": [{"host": r.host, "stack": r.stack, "output": r.probe_output} for r in changed],
                   "report": {"stacks": [r.to_json() for r in self.so_far]}}
        decision = await consult("verify", self.hook, payload, flow_run_id=self.run_id, commit=self.desired.commit,
                                 phase=phase)
        decisions(self.notes).append({**decision.to_json(), "phase": phase})
        if decision.decision == "pass":
            return None
        return f"verifier: {decision.describe()}"


async def rewrite_notice(hook: NotifyHook | None, notice: Notice, *, notes: list[dict]) -> Notice:
    """The communicator's text, or the notice as it was when it keeps it or fails."""
    if hook is None:
        return notice
    payload = {"kind": str(notice.kind), "title": notice.title, "summary": notice.summary, "details": notice.details,
               "link": notice.link}
    decision = await consult("notify", hook, payload, kind=str(notice.kind))
    notes.append(decision.to_json())
    if decision.decision != "rewrite":
        return notice
    return replace(notice, summary=decision.text or notice.summary,
                   details=notice.details if decision.details is None else decision.details)
