"""secrets-sync and secrets-check: keep every host's rendered env files equal to Vault."""

from __future__ import annotations

import asyncio

from prefect import flow
from prefect.runtime import flow_run

from deployments.desired import load_desired_state
from tasks import audit
from tasks.errors import DeployFailed
from tasks.locks import LockOwner, hold_hosts
from tasks.remote import HostPool
from tasks.steps import survey_host
from tasks.survey import ssh_targets
from tasks.vaultsync import find_drift, fix_drift, resolve_secrets


@flow(name="secrets-check", persist_result=False)
async def check_secrets(inventory: str = "deployments/homelab.yaml") -> dict:
    """Which host/stack/file differs from Vault (by SHA-256; values never leave the hosts)."""
    desired = await asyncio.to_thread(resolve_secrets, load_desired_state(inventory))
    async with HostPool(ssh_targets(desired)) as pool:
        drift = await find_drift(pool, desired)
    return {"drift": [{"host": d.host, "stack": d.stack, "file": d.file, "state": d.state} for d in drift]}


@flow(name="secrets-sync", persist_result=False)
async def sync_secrets(inventory: str = "deployments/homelab.yaml", lock_wait_s: float = 90) -> dict:
    """Rewrite every drifted env file from Vault; returns what was fixed."""
    desired = await asyncio.to_thread(resolve_secrets, load_desired_state(inventory))
    owner = LockOwner.for_run(flow_run.get_id(), desired.commit)
    # under the deploy locks: a deploy or a rotation must not race the rewrite
    async with HostPool(ssh_targets(desired)) as pool, \
            hold_hosts(pool, desired, owner, lock_wait_s, survey_host):
        drift = await find_drift(pool, desired)
        await fix_drift(pool, desired, drift)
        left = await find_drift(pool, desired)
    fixed = [d.where for d in drift]
    audit.append("secrets.synced", flow_run_id=str(flow_run.get_id()), fixed=fixed)
    report = {"result": "success" if not left else "failed", "flow_run_id": str(flow_run.get_id()),
              "fixed": fixed, "still_drifted": [d.where for d in left]}
    if left:
        raise DeployFailed("secrets still drifted after sync", report)
    return report
