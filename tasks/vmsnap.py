"""Proxmox snapshots as deploy steps: taken before a ``snapshot: true`` phase changes a host,
reverted only if the phase's failure policy rolls the phase (or the run) back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prefect import task
from prefect.cache_policies import NONE

from deployments.inventory import Inventory
from tasks.errors import HomelabError
from tasks.snapshots import ProxmoxSettings, ProxmoxSnapshots, VmRef, settings_from_env


@dataclass
class SnapshotLog:
    """What happened to each snapshot, for the run report."""

    entries: list[dict] = field(default_factory=list)

    def note(self, **entry: object) -> None:
        self.entries.append(entry)


def proxmox_settings(inventory: Inventory) -> ProxmoxSettings | None:
    section = inventory.proxmox
    if section and section.block:
        from blocks.proxmox import ProxmoxAccess

        return ProxmoxAccess.load(section.block).settings()
    return settings_from_env()


@dataclass
class SnapshotRevert:
    client: ProxmoxSnapshots
    log: SnapshotLog
    phase: str
    host: str
    vm: VmRef
    name: str
    start: bool

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self.client.rollback, self.vm, self.name, start=self.start)
            self.log.note(phase=self.phase, host=self.host, vm=str(self.vm), name=self.name, result="reverted")
        except Exception as exc:
            self.log.note(phase=self.phase, host=self.host, vm=str(self.vm), name=self.name,
                          result="revert FAILED", error=str(exc))


@task(name="snapshot-vm", task_run_name="snapshot {revert.host} {revert.name}", cache_policy=NONE,
      persist_result=False)
async def snapshot_vm(revert: SnapshotRevert, vmstate: bool, keep: int) -> None:
    """Take the snapshot (the phase does not start without it), then prune our old ones.
    ``revert.run`` is its undo, staged on the phase's held transaction."""
    await asyncio.to_thread(revert.client.create, revert.vm, revert.name, vmstate=vmstate,
                            description=f"homelab-orchestrator: before phase {revert.phase}")
    revert.log.note(phase=revert.phase, host=revert.host, vm=str(revert.vm), name=revert.name, result="taken")
    try:
        await asyncio.to_thread(revert.client.prune, revert.vm, keep)
    except HomelabError as exc:  # an old snapshot left behind is no reason to stop the deploy
        revert.log.note(phase=revert.phase, host=revert.host, vm=str(revert.vm), name=revert.name,
                        result="prune failed", error=str(exc))
