"""secrets-sync and secrets-check: keep every host's rendered env files equal to Vault."""

from __future__ import annotations

import time

from prefect import flow

from flows.audited import audited_run
from flows.locked_deploy import deploy_locked
from model.desired import load_desired_state
from tasks.engine import audit
from tasks.engine.secret_rotation import SecretRotation, stacks_to_rotate
from tasks.engine.secrets_sync import DriftRedeploy, check_drift


@flow(name="secrets-check", persist_result=False)
async def check_secrets(inventory: str = "deployments/homelab.yaml") -> dict:
    """Which host/stack/file differs from Vault (by SHA-256; values never leave the hosts)."""
    drift = await check_drift(load_desired_state(inventory))
    return {"drift": [d.to_json() for d in drift]}


@flow(name="secrets-sync", persist_result=False)
async def sync_secrets(inventory: str = "deployments/homelab.yaml", lock_wait_s: float = 90) -> dict:
    """Bring every env file that differs from Vault back in line: under the deploy locks, its
    stack is redeployed health-gated (and rolled back if it fails). Returns what was fixed."""
    started = time.monotonic()
    sync = DriftRedeploy()
    async with audited_run():
        report = await deploy_locked(load_desired_state(inventory), started=started, full=False,
                                     lock_wait_s=lock_wait_s, under_locks=sync)
        audit.append("secrets.synced", flow_run_id=report.flow_run_id, fixed=report.notes["fixed"])
    return report.to_json()


@flow(name="secrets-rotate", persist_result=False, validate_parameters=True)
async def rotate_secret(inventory: str, path: str, key: str, lock_wait_s: float = 90) -> dict:
    """A new random value for ``key`` at ``path``, all or nothing: the hosts of the stacks that
    read it are locked first, then Vault is written (check-and-set) and those stacks are
    redeployed health-gated. If one fails, they roll back and Vault gets the old value back."""
    started = time.monotonic()
    users = stacks_to_rotate(load_desired_state(inventory), path, key, inventory)
    async with audited_run():
        report = await deploy_locked(load_desired_state(inventory, only=users), started=started, full=False,
                                     lock_wait_s=lock_wait_s, under_locks=SecretRotation(path, key))
    return report.to_json()
