"""A manual rollback: return stacks to a recorded release (default: the previous healthy one),
exactly, health-gated, under the deploy locks. The flow ``rollback-homelab`` wires it."""

from __future__ import annotations

from model.desired import DesiredState
from model.errors import UsageError
from tasks.engine.host_pool import HostPool
from tasks.engine.release_history import rollback_target
from tasks.engine.report import RestoreResult
from tasks.engine.results import gather_hosts
from tasks.engine.step_set import Steps
from tasks.engine.undo import RollbackJournal, StackUndo
from tasks.host_commands.release_list import parse_releases_listing


def rollback_hosts(desired: DesiredState, hosts: list[str] | None) -> list[str]:
    """The hosts a rollback touches, in inventory order; unknown names are a usage error."""
    inv = desired.inventory
    unknown = sorted(set(hosts or ()) - set(inv.hosts))
    if unknown:
        raise UsageError(f"unknown host(s) {', '.join(unknown)} (known: {', '.join(inv.hosts)})")
    return [h for h in inv.hosts if not hosts or h in hosts]


async def roll_back(pool: HostPool, desired: DesiredState, steps: Steps, *, hosts: list[str],
                    stacks: list[str] | None, to_release: str | None) -> list[RestoreResult]:
    """Every host at once; on each, its stacks one by one. Sorted by host and stack."""
    journal = RollbackJournal()
    done = await gather_hosts(hosts, lambda host: _one_host(pool, desired, steps, journal, host=host,
                                                            stacks=stacks, to_release=to_release))
    if done.failed:
        raise next(iter(done.failed.values()))
    rows = [row for host_rows in done.succeeded.values() for row in host_rows]
    return sorted(rows, key=lambda r: (r.host, r.stack))


async def _one_host(pool: HostPool, desired: DesiredState, steps: Steps, journal: RollbackJournal, *,
                    host: str, stacks: list[str] | None, to_release: str | None) -> list[RestoreResult]:
    inv = desired.inventory
    current, records = parse_releases_listing(
        await steps.list_releases(pool, host, inv.state_dir(host), list(stacks or ())))
    rows = []
    for stack in sorted(current):
        target = rollback_target(records.get(stack, []), current[stack], to_release)
        row = dict(host=host, stack=stack, from_release=current[stack], to_release=target.id if target else None)
        if target is None:
            rows.append(RestoreResult(**row, result="failed",
                                      detail=f"no release {to_release or 'before the current one'}"))
            continue
        if target.id == current[stack]:
            rows.append(RestoreResult(**row, result="unchanged", detail="already the current release"))
            continue
        # a staging copy's checks are in the staging inventory
        home = desired.staging if desired.staging and stack in desired.staging.stacks else desired
        spec = home.inventory.stack(stack) if stack in home.stacks else None
        undone = next((r for r in records.get(stack, []) if r.id == current[stack]), None)
        await steps.restore(StackUndo(
            pool=pool, journal=journal, host=host, state_dir=inv.state_dir(host), stack=stack,
            release=current[stack] or "", previous=target, undone_files=undone.files if undone else {},
            services=tuple(target.services),
            checks=spec.health.checks if spec else [],
            health_timeout_s=home.inventory.health_timeout_s(stack) if spec else inv.defaults.health_timeout_s))
        ok = (host, stack) not in journal.failed
        rows.append(RestoreResult(**row, result="restored" if ok else "failed", detail=journal.entries[(host, stack)]))
    return rows
