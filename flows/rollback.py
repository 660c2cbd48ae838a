"""rollback-homelab: return stacks to a recorded release (default: the previous healthy one)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.audited import audited_run
from flows.reporting import publish_report
from model.desired import load_desired_state
from model.errors import DeployFailed
from tasks.engine import audit, metrics
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.locks import hold_hosts
from tasks.engine.manual_rollback import roll_back, rollback_hosts
from tasks.engine.prefect_slots import prefect_host_slots
from tasks.engine.report import RollbackReport
from tasks.host_commands.lock import LockOwner
from tasks.steps import PREFECT_STEPS


@flow(name="rollback-homelab", persist_result=False)
async def rollback_homelab(inventory: str = "deployments/homelab.yaml", hosts: list[str] | None = None,
                           stacks: list[str] | None = None, to_release: str | None = None,
                           lock_wait_s: float = 90) -> dict:
    async with audited_run():
        return await _roll_back(inventory, hosts, stacks, to_release, lock_wait_s)


async def _roll_back(inventory: str, hosts: list[str] | None, stacks: list[str] | None, to_release: str | None,
                     lock_wait_s: float) -> dict:
    run_id = str(flow_run.get_id())
    desired = load_desired_state(inventory)
    targets = rollback_hosts(desired, hosts)
    owner = LockOwner.for_run(run_id, desired.commit)
    async with HostPool([t for t in ssh_targets(desired, all_hosts=True) if t.name in targets]) as pool, \
            hold_hosts(pool, desired, owner, lock_wait_s, PREFECT_STEPS.survey, hosts=targets), \
            prefect_host_slots(targets, lock_wait_s):
        rows = await roll_back(pool, desired, PREFECT_STEPS, hosts=targets, stacks=stacks, to_release=to_release)
    report = RollbackReport(flow_run_id=run_id, stacks=rows)
    await metrics.push_manual_rollbacks(desired.inventory, sum(r.result == "restored" for r in rows))
    await publish_report(report)
    audit.append("rollback.finished", flow_run_id=run_id, result="success" if report.ok else "failed",
                 stacks=[{k: r.to_json()[k] for k in ("host", "stack", "from", "to", "result")} for r in rows])
    if not report.ok:
        raise DeployFailed("manual rollback failed", report)
    return report.to_json()
