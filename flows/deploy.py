"""deploy-homelab: pre-flight, plan, then phases in order, each health-gated."""

from __future__ import annotations

import asyncio
import time

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from deployments.desired import load_desired_state
from deployments.inventory import FailurePolicy
from tasks import audit
from tasks.errors import DeployFailed
from tasks.facts import HostSurvey
from tasks.locks import LockOwner, hold_hosts, prefect_host_slots
from tasks.plan import Plan, make_plan
from tasks.remote import HostPool
from tasks.report import DeployReport
from tasks.rollout import Rollout, apply_plan
from tasks.steps import survey_host
from tasks.survey import ssh_targets
from tasks.vaultsync import resolve_secrets


@flow(name="deploy-homelab", persist_result=False, validate_parameters=True)
async def deploy_homelab(inventory: str = "deployments/homelab.yaml", ref: str | None = None,
                         only: list[str] | None = None, prune: bool = False,
                         on_failure: FailurePolicy | None = None, lock_wait_s: float = 90) -> dict:
    """Deploy the inventory (at git ``ref`` if given); only the stacks in ``only`` if given."""
    started = time.monotonic()
    desired = load_desired_state(inventory, ref, only)
    desired = await asyncio.to_thread(resolve_secrets, desired)  # Vault problems stop the run here
    owner = LockOwner.for_run(flow_run.get_id(), desired.commit)
    async with HostPool(ssh_targets(desired)) as pool, \
            hold_hosts(pool, desired, owner, lock_wait_s, survey_host) as surveys:
        interrupted = report_interrupted(surveys)
        plan = make_plan(desired, surveys, full=not only)
        if plan.pending:
            await publish_plan(plan)
        run = Rollout(pool, desired, surveys, flow_run.get_id(), prune=prune, on_failure=on_failure)
        # Prefect's per-host slots, for the hosts this run will change (a no-op changes none)
        async with prefect_host_slots(sorted({c.host for c in plan.pending}), lock_wait_s):
            results = await apply_plan(run, plan)
        report = DeployReport(desired.source, desired.commit, flow_run.get_id(), results,
                              pool.remote_seconds(), time.monotonic() - started, interrupted,
                              run.snapshot_log.entries)
    await acreate_markdown_artifact(key="deploy-report", markdown=report.markdown(),
                                    description=report.summary())
    audit.append("deploy.finished", flow_run_id=str(flow_run.get_id()), source=desired.source, commit=desired.commit,
                 result="success" if report.ok else "failed",
                 stacks={f"{s.host}/{s.stack}": s.result for s in report.stacks if s.result != "unchanged"})
    if not report.ok:
        raise DeployFailed(report.summary(), report)
    return report.to_json()


def report_interrupted(surveys: dict[str, HostSurvey]) -> list[dict]:
    """Deploys a killed run left half-done; the plan redeploys them, health-gated."""
    found = [{"host": host, "stack": stack, **marker} for host, facts in surveys.items()
             for stack, marker in facts.pending.items()]
    for item in found:
        get_run_logger().warning("interrupted deploy found: %s on %s, release %s by flow run %s (started %s); "
                                 "redeploying it health-gated", item["stack"], item["host"], item.get("release"),
                                 item.get("flow_run_id"), item.get("started_at"))
    return found


async def publish_plan(plan: Plan) -> None:
    rows = ["| phase | host | stack | action | reason |", "|---|---|---|---|---|"]
    rows += [f"| {c.phase} | {c.host} | {c.stack} | {c.action} | {c.reason} |" for c in plan.changes]
    pending = len(plan.pending)
    await acreate_markdown_artifact(key="deploy-plan", markdown="\n".join(["# Plan", "", *rows]),
                                    description=f"{pending} change(s)")
