"""``homelab secrets scrub``: files holding secrets that nothing needs any more, on every host.

Per host, two round trips: the release records (for the project directory of stacks the
inventory no longer names), then the scrub script (``leftovers.scrub``), which lists the
leftovers or, holding the host's deploy lock, removes them. Removals are audited by path,
never by content.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from model.desired import DesiredState
from tasks.engine import audit
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.results import gather_hosts
from tasks.host_commands.leftovers import Leftover, ScrubAnswer, parse_scrub, scrub
from tasks.host_commands.lock import LockOwner, describe_owner, parse_owner
from tasks.host_commands.release_list import list_releases, parse_releases_listing


@dataclass(frozen=True)
class HostScrub:
    host: str
    leftovers: tuple[Leftover, ...] = ()  # listed (dry run) or removed
    failed: tuple[Leftover, ...] = ()
    deployed: tuple[str, ...] = ()  # unplaced stacks still deployed: left to `homelab deploy --prune`
    error: str | None = None  # the host could not be scrubbed (unreachable, busy)

    @property
    def clean(self) -> bool:
        return not self.failed and self.error is None

    def to_json(self) -> dict:
        return {"host": self.host, "leftovers": [item.to_json() for item in self.leftovers],
                "failed": [item.to_json() for item in self.failed], "deployed": list(self.deployed),
                "error": self.error}


def placements(desired: DesiredState, host: str) -> tuple[list[str], dict[str, str]]:
    """The stacks placed on ``host`` and the project directories they name (where not the default)."""
    placed = [name for name, stack in desired.stacks.items() if host in stack.hosts]
    dirs = {name: d for name in placed if (d := desired.stacks[name].for_host(host).project_dir)}
    return placed, dirs


async def scrub_host(pool: HostPool, desired: DesiredState, host: str, *, dry_run: bool, owner: str) -> HostScrub:
    state_dir = desired.inventory.state_dir(host)
    placed, dirs = placements(desired, host)
    _, records = parse_releases_listing((await pool[host].run(list_releases(state_dir))).stdout)
    for stack, history in records.items():  # a stack no longer placed: its newest record says where it ran
        if stack not in placed and history and history[0].project_dir:
            dirs[stack] = history[0].project_dir
    done = await pool[host].run(scrub(state_dir, placed, dirs, remove=not dry_run, owner_json=owner), check=False)
    answer: ScrubAnswer = parse_scrub(done.stdout)
    if answer.busy:
        holder = describe_owner(parse_owner(done.stdout.partition("@@busy")[2]))
        return HostScrub(host, error=f"deploy lock held by {holder}; nothing was removed: run the scrub again "
                                     "when that run is done")
    if not done.ok:
        return HostScrub(host, answer.found, answer.failed, answer.deployed,
                         error=f"scrub exited {done.exit_status}: {(done.stderr or done.stdout).strip()[-300:]}")
    return HostScrub(host, answer.found, answer.failed, answer.deployed)


async def scrub_secrets(desired: DesiredState, *, dry_run: bool) -> list[HostScrub]:
    """Every host of the inventory at once; one host's failure does not stop the others."""
    inv = desired.inventory
    owner = LockOwner.for_run(f"scrub-{uuid.uuid4()}", desired.commit).to_json()
    async with HostPool(ssh_targets(desired, all_hosts=True)) as pool:
        done = await gather_hosts(inv.hosts, lambda h: scrub_host(pool, desired, h, dry_run=dry_run, owner=owner))
    out = [HostScrub(h, error=str(o)) if isinstance(o, Exception) else o for h, o in done.outcomes.items()]
    removed = {r.host: [item.path for item in r.leftovers] for r in out if r.leftovers}
    if not dry_run and (removed or any(r.failed for r in out)):
        audit.append("secrets.scrubbed", removed=removed,
                     failed={r.host: [item.path for item in r.failed] for r in out if r.failed})
    return out
