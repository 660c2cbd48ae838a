"""rollback-homelab: return stacks to a recorded release (default: the previous healthy one)."""

from __future__ import annotations

import asyncio

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from deployments.desired import load_desired_state
from tasks import audit
from tasks.errors import DeployFailed, UsageError
from tasks.history import list_releases, parse_releases_listing, rollback_target
from tasks.locks import LockOwner, hold_hosts, prefect_host_slots
from tasks.remote import HostPool
from tasks.steps import REMOTE, survey_host
from tasks.survey import ssh_targets
from tasks.undo import RollbackJournal, StackUndo


@task(name="restore-release", task_run_name="restore {undo.stack}@{undo.host}", cache_policy=NONE,
      persist_result=False)
async def restore(undo: StackUndo) -> None:
    await undo.run()


@task(name="list-releases", task_run_name="releases {host}", **REMOTE)
async def read_history(pool: HostPool, host: str, state_dir: str, stacks: list[str]) -> str:
    return (await pool[host].run(list_releases(state_dir, stacks))).stdout


@flow(name="rollback-homelab", persist_result=False)
async def rollback_homelab(inventory: str = "deployments/homelab.yaml", hosts: list[str] | None = None,
                           stacks: list[str] | None = None, to_release: str | None = None,
                           lock_wait_s: float = 90) -> dict:
    desired = load_desired_state(inventory)
    inv = desired.inventory
    unknown = sorted(set(hosts or ()) - set(inv.hosts))
    if unknown:
        raise UsageError(f"unknown host(s) {', '.join(unknown)} (known: {', '.join(inv.hosts)})")
    targets = [h for h in inv.hosts if not hosts or h in hosts]
    journal = RollbackJournal()
    rows: list[dict] = []
    owner = LockOwner.for_run(flow_run.get_id(), desired.commit)
    async with HostPool([t for t in ssh_targets(desired, all_hosts=True) if t.name in targets]) as pool, \
            hold_hosts(pool, desired, owner, lock_wait_s, survey_host, hosts=targets):

        async def one_host(host: str) -> None:
            listing = await read_history(pool, host, inv.state_dir(host), list(stacks or ()))
            current, records = parse_releases_listing(listing)
            for stack in sorted(current):
                target = rollback_target(records.get(stack, []), current[stack], to_release)
                row = {"host": host, "stack": stack, "from": current[stack], "to": target.id if target else None}
                if target is None:
                    row |= {"result": "failed", "detail": f"no release {to_release or 'before the current one'}"}
                elif target.id == current[stack]:
                    row |= {"result": "unchanged", "detail": "already the current release"}
                else:
                    spec = inv.stack(stack) if stack in desired.stacks else None
                    await restore(StackUndo(pool, journal, host, inv.state_dir(host), stack, current[stack] or "",
                                            target, tuple(target.services), spec.health.checks if spec else [],
                                            inv.health_timeout_s(stack) if spec else inv.defaults.health_timeout_s))
                    ok = (host, stack) not in journal.failed
                    row |= {"result": "restored" if ok else "failed", "detail": journal.entries[(host, stack)]}
                rows.append(row)

        async with prefect_host_slots(targets, lock_wait_s):
            await asyncio.gather(*(one_host(h) for h in targets))
    report = {"result": "success" if all(r["result"] != "failed" for r in rows) else "failed",
              "flow_run_id": str(flow_run.get_id()), "stacks": sorted(rows, key=lambda r: (r["host"], r["stack"]))}
    audit.append("rollback.finished", flow_run_id=report["flow_run_id"], result=report["result"],
                 stacks=[{k: r[k] for k in ("host", "stack", "from", "to", "result")} for r in rows])
    if report["result"] != "success":
        raise DeployFailed("manual rollback failed", report)
    return report
