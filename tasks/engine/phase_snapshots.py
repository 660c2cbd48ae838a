"""Proxmox snapshots as deploy steps: taken before a ``snapshot: true`` phase changes a host,
reverted only if the phase's failure policy rolls the phase (or the run) back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from model.errors import HomelabError
from model.inventory import Inventory
from tasks.engine.held_transaction import Held, Outcome
from tasks.engine.results import gather_hosts
from tasks.integrations.proxmox.client import ProxmoxSnapshots
from tasks.integrations.proxmox.names import snapshot_name
from tasks.integrations.proxmox.settings import ProxmoxSettings, settings_from_env
from tasks.integrations.proxmox.vm import VmRef

NO_CREDENTIALS = ("this phase takes Proxmox snapshots, but no credentials are configured: set `proxmox.block` in "
                  "the inventory or PROXMOX_URL, PROXMOX_TOKEN_ID and PROXMOX_TOKEN_SECRET (and PROXMOX_CA_FILE)")


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


def open_proxmox(inventory: Inventory) -> ProxmoxSnapshots:
    settings = proxmox_settings(inventory)
    if settings is None:
        raise HomelabError(NO_CREDENTIALS)
    return ProxmoxSnapshots(settings)


@dataclass(frozen=True, kw_only=True)
class VmSnapshot:
    """One snapshot of one host's VM, taken before a phase; ``revert`` is its undo."""

    client: ProxmoxSnapshots
    log: SnapshotLog
    phase: str
    host: str
    vm: VmRef
    name: str
    start_after_revert: bool
    vmstate: bool
    keep: int

    def note(self, result: str, **extra: object) -> None:
        self.log.note(phase=self.phase, host=self.host, vm=str(self.vm), name=self.name, result=result, **extra)

    async def revert(self) -> None:
        try:
            await asyncio.to_thread(self.client.rollback, self.vm, self.name, start=self.start_after_revert)
            self.note("reverted")
        except Exception as exc:
            self.note("revert FAILED", error=str(exc))


async def take_snapshot(snap: VmSnapshot) -> None:
    """Take the snapshot (the phase does not start without it), then prune our old ones."""
    await asyncio.to_thread(snap.client.create, snap.vm, snap.name, vmstate=snap.vmstate,
                            description=f"homelab-orchestrator: before phase {snap.phase}")
    snap.note("taken")
    try:
        await asyncio.to_thread(snap.client.prune, snap.vm, snap.keep)
    except HomelabError as exc:  # an old snapshot left behind is no reason to stop the deploy
        snap.note("prune failed", error=str(exc))


SnapshotStep = Callable[[VmSnapshot], Awaitable[None]]


async def snapshot_phase(client: Callable[[], ProxmoxSnapshots], inventory: Inventory, log: SnapshotLog,
                         *, phase: str, hosts: list[str], run_id: str, take: SnapshotStep,
                         ) -> tuple[list[Held], str | None]:
    """Snapshot the VM of each of ``hosts`` before ``phase`` changes them. Returns the open
    transactions (their undo reverts the VM), and an error if any snapshot could not be taken:
    then the phase must not start, and the snapshots that were taken are kept, not reverted."""
    try:
        proxmox = client()
    except HomelabError as exc:
        return [], str(exc)
    section, spec = inventory.proxmox, inventory.phases[phase]
    name = snapshot_name(run_id, phase)
    held: dict[str, Held] = {}
    for host in hosts:
        vm = inventory.hosts[host].proxmox
        assert vm is not None
        snap = VmSnapshot(client=proxmox, log=log, phase=phase, host=host, vm=VmRef(vm.node, vm.vmid, vm.kind),
                          name=name, start_after_revert=section.start_after_rollback if section else True,
                          vmstate=spec.vmstate, keep=section.keep_snapshots if section else 3)
        held[host] = Held(lambda snap=snap: _staged(take, snap))
    taken = await gather_hosts(held, lambda host: held[host].result())
    for host in taken.failed:
        await asyncio.gather(held[host].task, return_exceptions=True)  # collect the failed task
    kept = [held[host] for host in taken.succeeded]
    if taken.failed:
        await asyncio.gather(*(h.commit() for h in kept))
        return [], "; ".join(f"snapshot of {host} failed: {exc}" for host, exc in taken.failed.items())
    return kept, None


async def _staged(take: SnapshotStep, snap: VmSnapshot) -> Outcome[None]:
    await take(snap)
    return Outcome(None, snap.revert)
