"""Release history: what each host keeps under ``releases/<stack>/``, and which release a
rollback returns to."""

from __future__ import annotations

from model.desired import DesiredState
from model.releases import ReleaseRecord
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.results import gather_hosts
from tasks.host_commands.release_list import list_releases, parse_releases_listing


async def read_history(pool: HostPool, host: str, state_dir: str, stacks: list[str]) -> str:
    """The raw listing of ``stacks`` (all if empty) on ``host``; parse it with ``parse_releases_listing``."""
    return (await pool[host].run(list_releases(state_dir, stacks))).stdout


def rollback_target(records: list[ReleaseRecord], current: str | None, wanted: str | None) -> ReleaseRecord | None:
    """The release to return to: ``wanted`` if given, else the newest healthy one before ``current``."""
    if wanted:  # a release of a stack pruned from the host has no files left to return to
        return next((r for r in records if r.id == wanted and r.status != "removed"), None)
    older = [r for r in records if current is None or r.id < current]
    return next((r for r in older if r.status in ("active", "rolled-back")), None)


async def collect_releases(desired: DesiredState) -> dict:
    """``homelab releases``: every host's release records, newest first, with the current one."""
    inv = desired.inventory
    async with HostPool(ssh_targets(desired, all_hosts=True)) as pool:
        listed = await gather_hosts(inv.hosts, lambda h: read_history(pool, h, inv.state_dir(h), []))
    if listed.failed:
        raise next(iter(listed.failed.values()))
    out: dict = {"hosts": {}}
    for host, listing in listed.succeeded.items():
        current, records = parse_releases_listing(listing)
        out["hosts"][host] = {stack: {"current": current.get(stack), "releases": [
            {"id": r.id, "status": r.status, "commit": r.commit, "created_at": r.created_at,
             "flow_run_id": r.flow_run_id} for r in records.get(stack, [])]} for stack in sorted(current)}
    return out
