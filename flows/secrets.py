"""secrets-sync and secrets-check: keep every host's rendered env files equal to Vault."""

from __future__ import annotations

import asyncio

from prefect import flow
from prefect.runtime import flow_run

from flows.reporting import publish_report
from model.desired import load_desired_state
from model.errors import DeployFailed
from tasks.engine import audit
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.locks import hold_hosts
from tasks.engine.report import FileResult, SyncReport
from tasks.engine.secrets_sync import check_drift, find_drift, fix_drift, resolve_secrets
from tasks.host_commands.lock import LockOwner
from tasks.steps import PREFECT_STEPS


@flow(name="secrets-check", persist_result=False)
async def check_secrets(inventory: str = "deployments/homelab.yaml") -> dict:
    """Which host/stack/file differs from Vault (by SHA-256; values never leave the hosts)."""
    drift = await check_drift(load_desired_state(inventory))
    return {"drift": [d.to_json() for d in drift]}


@flow(name="secrets-sync", persist_result=False)
async def sync_secrets(inventory: str = "deployments/homelab.yaml", lock_wait_s: float = 90) -> dict:
    """Rewrite every drifted env file from Vault; returns what was fixed."""
    run_id = str(flow_run.get_id())
    desired = await asyncio.to_thread(resolve_secrets, load_desired_state(inventory))
    owner = LockOwner.for_run(run_id, desired.commit)
    # under the deploy locks: a deploy or a rotation must not race the rewrite
    async with HostPool(ssh_targets(desired)) as pool, \
            hold_hosts(pool, desired, owner, lock_wait_s, PREFECT_STEPS.survey):
        drift = await find_drift(pool, desired)
        await fix_drift(pool, desired, drift)
        left = {d.where for d in await find_drift(pool, desired)}
    report = SyncReport(flow_run_id=run_id, stacks=[
        FileResult(host=d.host, stack=d.stack, file=d.file, result="still drifted" if d.where in left else "rewritten")
        for d in drift])
    audit.append("secrets.synced", flow_run_id=run_id, fixed=[d.where for d in drift])
    await publish_report(report)
    if not report.ok:
        raise DeployFailed("secrets still drifted after sync", report)
    return report.to_json()
