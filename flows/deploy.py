"""deploy-homelab: pre-flight, plan, then phases in order, each health-gated."""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from deployments.desired import load_desired_state
from deployments.inventory import FailurePolicy
from tasks.errors import DeployFailed, PreflightFailed
from tasks.plan import Plan, make_plan
from tasks.remote import HostPool
from tasks.report import DeployReport
from tasks.rollout import Rollout, apply_plan
from tasks.steps import survey_host
from tasks.survey import ssh_targets, survey_hosts


@flow(name="deploy-homelab", persist_result=False, validate_parameters=True)
async def deploy_homelab(inventory: str = "deployments/homelab.yaml", ref: str | None = None,
                         only: list[str] | None = None, prune: bool = False,
                         on_failure: FailurePolicy | None = None) -> dict:
    """Deploy the inventory (at git ``ref`` if given); only the stacks in ``only`` if given."""
    started = time.monotonic()
    desired = load_desired_state(inventory, ref, only)
    async with HostPool(ssh_targets(desired)) as pool:
        surveys, problems = await survey_hosts(pool, desired, survey_host)
        if problems:
            raise PreflightFailed(problems)
        plan = make_plan(desired, surveys, full=not only)
        if plan.pending:
            await publish_plan(plan)
        run = Rollout(pool, desired, surveys, flow_run.get_id(), prune=prune, on_failure=on_failure)
        results = await apply_plan(run, plan)
        report = DeployReport(desired.source, desired.commit, flow_run.get_id(), results,
                              pool.remote_seconds(), time.monotonic() - started)
    await acreate_markdown_artifact(key="deploy-report", markdown=report.markdown(),
                                    description=report.summary())
    if not report.ok:
        raise DeployFailed(report.summary(), report)
    return report.to_json()


async def publish_plan(plan: Plan) -> None:
    rows = ["| phase | host | stack | action | reason |", "|---|---|---|---|---|"]
    rows += [f"| {c.phase} | {c.host} | {c.stack} | {c.action} | {c.reason} |" for c in plan.changes]
    pending = len(plan.pending)
    await acreate_markdown_artifact(key="deploy-plan", markdown="\n".join(["# Plan", "", *rows]),
                                    description=f"{pending} change(s)")
