"""The release pipeline: stage the changed stacks on the staging host, run their smoke tests, ask
for approval, then run the production phases in order.

- ``--environment staging`` stops after the smoke tests.
- A failure in staging (a health gate or a smoke test) ends the run ``failed``: the staging
  run is undone, and production is untouched.
- A rejection or a timeout at the gate ends the run ``not-approved`` (Prefect state
  ``Completed``, named ``NotApproved``), with production untouched.
- A run that needs neither staging nor approval is one locked deploy, as before.

Notices (started, approval needed, succeeded, failed, rolled back, not approved) go out in the
background and never slow or fail the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.input import acreate_flow_run_input
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import Completed, State

from flows.agent_gates import AGENTS_NOTE, PhaseVerifier, blocks_production, review_markdown, review_plan
from flows.approval import SUMMARY_KEY, Decision, ask_approval
from flows.audited import audited_run
from flows.locked_deploy import deploy_locked
from flows.notices import RunNotices
from flows.run_signals import NOT_APPROVED, RunSignals, outcome_of, run_events, signalling
from model.actors import approver
from model.agents import PlanReviewHook
from model.approval import YES_TRIGGERS, Environment, approval_needed
from model.desired import DesiredState
from model.errors import DeployFailed, UsageError
from model.policies import FailurePolicy
from model.staging import production_name, staging_name
from model.triggers import trigger_from_tags
from tasks.engine import audit, progress
from tasks.engine.agent_hooks import HookDecision
from tasks.engine.notify import Kind
from tasks.engine.plan import ORPHANS, Change, Plan
from tasks.engine.preview import preview_plan
from tasks.engine.release_plan import approval_markdown, plan_summary
from tasks.engine.report import DeployReport
from tasks.engine.smoke import SmokeResult, smoke_summary, smoke_table_markdown, smoke_table_text
from tasks.engine.smoke_gate import SmokeGate


def run_trigger() -> str:
    return trigger_from_tags(flow_run.get_tags() or [])


def run_link(run_id: str) -> str | None:
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None


async def release(desired: DesiredState, *, environment: Environment = "production", skip_staging: bool = False,
                  yes: bool = False, full: bool = True, prune: bool = False, on_failure: FailurePolicy | None = None,
                  refresh_images: bool = False, lock_wait_s: float = 90) -> dict | State:
    run_id = str(flow_run.get_id())
    trigger = run_trigger()
    notices = RunNotices(desired.inventory, f"{desired.source} \u2192 {environment}", run_link(run_id))
    async with audited_run(), signalling(desired, environment=environment, trigger=trigger) as signals:
        commit = (desired.commit or "working tree")[:12]
        notices.send(Kind.STARTED, f"{trigger} run of {desired.source} (commit {commit})")
        pipeline = Pipeline(desired=desired, run_id=run_id, trigger=trigger, environment=environment, notices=notices,
                            deploy=dict(prune=prune, on_failure=on_failure, refresh_images=refresh_images,
                                        lock_wait_s=lock_wait_s),
                            full=full, signals=signals)
        try:
            outcome = await pipeline.run(skip_staging=skip_staging, yes=yes)
        finally:
            await notices.drain()  # before the last push: failed notices are counted
        if notices.agent_decisions and isinstance(outcome, dict):
            outcome[AGENTS_NOTE] = [*outcome.get(AGENTS_NOTE, []), *notices.agent_decisions]
        await signals.finish(*outcome_of(outcome))
        return outcome


class Pipeline:
    def __init__(self, *, desired: DesiredState, run_id: str, trigger: str, environment: Environment,
                 notices: RunNotices, deploy: dict, full: bool, signals: RunSignals):
        self.desired = desired
        self.run_id = run_id
        self.trigger = trigger
        self.environment = environment
        self.notices = notices
        self.deploy = deploy
        self.full = full
        self.signals = signals
        self.started = time.monotonic()
        self.notes: dict = {"environment": environment, "trigger": trigger}  # extra fields of the report
        self.smoke: list[SmokeResult] = []
        self.staging_report: dict | None = None

    def _audit(self, event: str, **fields: object) -> None:
        audit.append(event, flow_run_id=self.run_id, commit=self.desired.commit, trigger=self.trigger, **fields)

    async def run(self, *, skip_staging: bool, yes: bool) -> dict | State:
        desired, policy = self.desired, self.desired.inventory.approval
        if skip_staging:
            self._audit("staging.skipped", environment=self.environment)
            get_run_logger().warning("--skip-staging: no staging deploy and no smoke tests for this run (audited)")
            self.notes["staging"] = {"result": "skipped"}
        staging = None if skip_staging else desired.staging
        if self.environment == "staging" and staging is None:
            raise UsageError("nothing to stage: no stack has a staging form (compose.staging.yaml or `staging:`)"
                             if not skip_staging else "--environment staging with --skip-staging does nothing")
        may_ask, _ = approval_needed(policy, environment=self.environment, trigger=self.trigger,
                                     changed_phases=list(desired.inventory.phases), yes=yes)
        reviewer = desired.inventory.agents.plan_review if self.environment == "production" else None
        if staging is None and not may_ask and reviewer is None:
            self._audit_yes(yes)
            return await self._production(desired, self.full)

        plan = await preview_plan(desired, full=self.full, refresh_images=self.deploy["refresh_images"])
        changed = [c for c in plan.pending if c.phase != ORPHANS]
        pending = [c for c in plan.pending if c.phase != ORPHANS or self.deploy["prune"]]  # what production does
        if staging is not None:
            names = self._to_stage(staging, changed)
            if names:
                await self._stage(staging.restricted(names))
        if self.environment == "staging":
            assert self.staging_report is not None
            return self.staging_report

        needed, why = approval_needed(policy, environment=self.environment, trigger=self.trigger,
                                      changed_phases={c.phase for c in pending}, yes=yes)
        self.notes["approval"] = {"needed": needed, "why": why}
        markdown = self._form(plan, why)
        review = await self._review(reviewer, pending, markdown) if reviewer and pending else None
        if review and reviewer and blocks_production(review, reviewer):
            return self._not_approved(Decision(approved=False, reason=review.describe(),
                                               approver=f"agent {review.agent or 'plan_review'}"))
        if not needed:
            self._audit_yes(yes)
            return await self._production(desired, self.full)
        if section := review_markdown(review):
            markdown = self._form(plan, why, section)
        decision = await self._ask(markdown, plan_summary(pending, desired.commit), policy.timeout_s)
        if not decision.approved:
            return self._not_approved(decision)
        if decision.phases:
            unknown = sorted(set(decision.phases) - set(desired.inventory.phases))
            if unknown:
                get_run_logger().warning("approval names unknown phase(s) %s; ignored", ", ".join(unknown))
            allowed = {s for s, phase in desired.inventory.stack_phase().items() if phase in decision.phases}
            return await self._production(desired.restricted(allowed), full=False)
        return await self._production(desired, self.full)

    def _form(self, plan: Plan, why: str, agent_review: str = "") -> str:
        """The approval form's description: the plan, staging, smoke tests and the agent's review."""
        return approval_markdown(plan, self.desired, trigger=self.trigger, why=why, agent_review=agent_review,
                                 smoke_table=smoke_table_markdown(self.smoke) if self.smoke else "",
                                 staging_note=self._staging_note())

    async def _review(self, reviewer: PlanReviewHook, pending: Sequence[Change], markdown: str) -> HookDecision:
        return await review_plan(self.desired, reviewer, run_id=self.run_id, trigger=self.trigger,
                                 environment=self.environment, changes=pending, markdown=markdown, notes=self.notes)

    def _audit_yes(self, yes: bool) -> None:
        if yes and self.trigger in YES_TRIGGERS:
            self._audit("approval.skipped", why=YES_TRIGGERS[self.trigger])

    def _to_stage(self, staging: DesiredState, changed: Sequence[Change]) -> list[str]:
        """Staging runs: every staging copy (its plan skips what is current). Production runs:
        the copies of the stacks that change."""
        if self.environment == "staging":
            return list(staging.stacks)
        return [name for name in dict.fromkeys(staging_name(c.stack) for c in changed) if name in staging.stacks]

    def _staging_note(self) -> str:
        report = self.staging_report
        if not report:
            return "no stack of this plan has a staging copy"
        stacks = ", ".join(f"{s['stack']} {s['result']}" for s in report["stacks"])
        return f"{report['result']} on {self.desired.inventory.staging_host()}: {stacks}"

    async def _stage(self, staging: DesiredState) -> None:
        """Deploy the staging copies, then their smoke tests; any failure undoes the staging run
        and raises DeployFailed (production untouched)."""
        gate = SmokeGate(staging, self.desired.inventory)
        try:
            report = await deploy_locked(staging, started=time.monotonic(), full=False, on_failure="rollback-all",
                                         refresh_images=self.deploy["refresh_images"],
                                         lock_wait_s=self.deploy["lock_wait_s"], verify=gate, kind="staging",
                                         notes=self.notes,
                                         events=self.signals.events if self.environment == "staging"
                                         else run_events(staging, "staging", self.trigger))
        except DeployFailed as exc:
            report = exc.report if isinstance(exc.report, DeployReport) else None
            if report is None:
                raise
            await self._publish_smoke(gate.results)
            failed = replace(report, notes={**report.notes, "smoke": [r.to_json() for r in gate.results],
                                            "production": "untouched"})
            self.notices.report(failed, "staging (production untouched)")
            self._audit("staging.failed", result="failed")
            raise DeployFailed(f"staging failed, production untouched: {report.summary()}", failed) from None
        await self._publish_smoke(gate.results)
        self.smoke = gate.results
        self.notes["smoke"] = [r.to_json() for r in gate.results]
        self.staging_report = replace(report, notes={**report.notes, **self.notes}).to_json()
        self.notes["staging"] = {"result": "success", "stacks": [
            {"stack": production_name(s.stack), "host": s.host, "result": s.result, "release": s.release}
            for s in report.stacks]}
        if self.environment == "staging":
            self.signals.stacks = report.stacks
            self.notices.report(report, "staging")

    async def _publish_smoke(self, results: list[SmokeResult]) -> None:
        if results:
            await acreate_markdown_artifact(key="smoke-tests", description=smoke_summary(results),
                                            markdown="# Smoke tests\n\n" + smoke_table_markdown(results))

    async def _ask(self, markdown: str, summary: str, timeout_s: float) -> Decision:
        await acreate_flow_run_input(key=SUMMARY_KEY, value=summary)
        link = self.notices.link
        self._audit("approval.requested", summary=summary)
        self.signals.events.approval_requested(summary, link, f"homelab approve {self.run_id}", timeout_s)
        self.notices.send(Kind.APPROVAL_NEEDED, f"{summary}\nApprove in the Prefect UI or run: homelab approve "
                                                f"{self.run_id}", smoke_table_text(self.smoke) if self.smoke else "")
        progress.announce(f"Waiting for approval (up to {timeout_s:g} s): {summary}\n"
                          f"  Prefect UI: {link or '(no UI URL configured)'}\n"
                          f"  or: homelab approve {self.run_id} [--reject] [--reason TEXT]")
        get_run_logger().warning("waiting for approval: %s; answer in the UI or with `homelab approve %s`",
                                 summary, self.run_id)
        decision = await ask_approval(markdown, timeout_s)
        self._audit("approval.answered", **decision.to_json(),
                    **({"actor": approver(decision.approver)} if decision.approver else {}))
        self.notes["approval"] |= decision.to_json()
        return decision

    def _not_approved(self, decision: Decision) -> State:
        what = "timed out" if decision.timed_out else "rejected"
        why = decision.reason or what
        by = f" by {decision.approver}" if decision.approver else ""
        self.notices.send(Kind.NOT_APPROVED, f"production untouched: {what}{by}: {why}")
        result = {"result": NOT_APPROVED, "flow_run_id": self.run_id, "source": self.desired.source,
                  "commit": self.desired.commit, "reason": why, **self.notes, "stacks": []}
        return Completed(name="NotApproved", message=f"not approved{by}: {why}; production untouched", data=result)

    async def _production(self, desired: DesiredState, full: bool) -> dict:
        try:
            check = PhaseVerifier(desired, run_id=self.run_id, notes=self.notes) \
                if desired.inventory.agents.verify else None
            report = await deploy_locked(desired, started=self.started, full=full, notes=self.notes,
                                         events=self.signals.events, phase_check=check, **self.deploy)
        except DeployFailed as exc:
            if isinstance(exc.report, DeployReport):
                self.notices.report(exc.report, "production")
            raise
        self.signals.stacks = report.stacks
        self.notices.report(report, "production")
        return report.to_json()
