"""Per-host deploy locks (Kamal's mkdir lock, with an owner) plus Prefect concurrency.

The host lock is an atomic ``mkdir <state_dir>/lock`` holding ``owner.json``: flow run id,
user, orchestrator host and pid, start time, commit. The survey takes it in the same round
trip when it is free; otherwise hosts are locked one by one in name order (no deadlock
between two runs), waiting up to ``lock_wait_s``. A lock whose owner is gone is stale: it is
broken, with an audit record. Gone means: its process died on this machine (same machine id,
boot and pid namespace; the pid is absent or names a process started later), or Prefect says
its flow run is finished, crashed or cancelled. A hostname proves nothing (clones and
host-network containers share one), and an owner file without the machine fields (older
ones) is never judged by its pid: ``homelab unlock`` is for those. On top, Prefect's per-host
slots (``prefect_slots.py``) keep two runs off one host through Prefect itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from model.desired import DesiredState
from model.errors import HomelabError, PreflightFailed, UsageError
from tasks.engine import audit, metrics
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.preflight import SurveyFn, survey_hosts
from tasks.host_commands.lock import (
    LockOwner,
    LockSnapshot,
    Machine,
    describe_owner,
    parse_lock_snapshot,
    parse_owner,
    parse_unlock,
    pid_exists,
    process_start,
    release_lock,
    show_lock,
    take_lock,
    this_machine,
    unlock_if,
)
from tasks.host_commands.survey import HostSurvey


class LockHeld(HomelabError):
    exit_code = 5

    def __init__(self, host: str, owner: dict | None, waited_s: float):
        self.host, self.owner = host, owner
        who = describe_owner(owner)
        super().__init__(f"{host}: deploy lock held by {who}; waited {waited_s:.0f}s. If that run is really gone, "
                         f"run `homelab unlock --host {host}`")


async def stale_reason(owner: dict | None, here: Machine | None = None) -> str | None:
    """Why the lock's owner is gone, or None if it may still be running."""
    if not owner:
        return None
    return process_gone(owner, here or this_machine()) or await _flow_run_finished(owner.get("flow_run_id"))


def process_gone(owner: dict, here: Machine, start_of: Callable[[int], int | None] = process_start,
                 exists: Callable[[int], bool | None] = pid_exists) -> str | None:
    """Why the owner's orchestrator process is certainly gone, or None: alive, or not ours to tell.
    Only a pid from this machine id, boot and pid namespace is judged (elsewhere it names
    another process space), and only with the start time that tells it from a reused pid."""
    pid, start = owner.get("pid"), owner.get("pid_start")
    if not (here.known and _is_int(pid) and _is_int(start)):
        return None
    if (owner.get("machine_id"), owner.get("boot_id"), owner.get("pid_ns")) != (
            here.machine_id, here.boot_id, here.pid_ns):
        return None
    now = start_of(pid)
    where = f"its orchestrator process {pid} on {owner.get('host')}"
    if now is None:
        # unreadable is not absent: /proc may hide other users' processes (hidepid)
        return f"{where} is gone" if exists(pid) is False else None
    if now != start:
        return f"{where} is gone (pid {pid} now names a process started at tick {now}, not {start})"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _flow_run_finished(flow_run_id: str | None) -> str | None:
    """Prefect's word that the run is over. A run unknown to Prefect proves nothing: it may report
    to another server, and its process is judged by ``process_gone`` where it can be."""
    if not flow_run_id:
        return None
    from prefect import get_client

    try:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
    except Exception:
        return None
    if run.state and run.state.is_final():
        return f"flow run {flow_run_id} is {run.state.type.value.lower()}"
    return None


async def acquire_in_order(pool: HostPool, desired: DesiredState, hosts: list[str], owner: LockOwner,
                           wait_s: float) -> list[str]:
    """Lock ``hosts`` one by one in name order; on failure release what was taken."""
    taken: list[str] = []
    try:
        for host in sorted(hosts):
            await _acquire(pool, desired.inventory.state_dir(host), host, owner, wait_s)
            taken.append(host)
    except BaseException:
        await release_all(pool, desired, taken, owner.flow_run_id)
        raise
    return taken


async def _acquire(pool: HostPool, state_dir: str, host: str, owner: LockOwner, wait_s: float) -> None:
    started = time.monotonic()
    while True:
        out = (await pool[host].run(take_lock(state_dir, owner.to_json()))).stdout
        if "@@acquired" in out:
            return
        holder = parse_owner(out)
        reason = await stale_reason(holder)
        if reason:
            audit.append("lock.broken", host=host, owner=holder, reason=reason, by=owner.flow_run_id)
            # only if it still names that owner: another run may have broken it and taken it already
            await pool[host].run(release_lock(state_dir, str(holder.get("flow_run_id"))))
            continue
        if time.monotonic() - started >= wait_s:
            raise LockHeld(host, holder, time.monotonic() - started)
        await asyncio.sleep(1)


async def release_all(pool: HostPool, desired: DesiredState, hosts: list[str], flow_run_id: str) -> None:
    async def one(host: str) -> None:
        with contextlib.suppress(HomelabError):
            await pool[host].run(release_lock(desired.inventory.state_dir(host), flow_run_id))

    await asyncio.gather(*(one(h) for h in hosts))


@contextlib.asynccontextmanager
async def hold_hosts(pool: HostPool, desired: DesiredState, owner: LockOwner, wait_s: float,
                     read: SurveyFn, hosts: list[str] | None = None) -> AsyncIterator[dict[str, HostSurvey]]:
    """Survey every targeted host (taking free locks in the same round trip), judge pre-flight,
    and lock the rest in order. Yields the facts, read under the lock."""
    hosts = hosts or desired.targeted_hosts()
    started = time.monotonic()
    surveys, problems = await survey_hosts(pool, desired, read, lock_owner=owner.to_json(), hosts=hosts)
    locked = [h for h, s in surveys.items() if s.lock_acquired]
    try:
        if problems:
            raise PreflightFailed(problems)
        if len(locked) < len(hosts):
            await release_all(pool, desired, locked, owner.flow_run_id)
            locked = []
            locked = await acquire_in_order(pool, desired, hosts, owner, wait_s)
            surveys, problems = await survey_hosts(pool, desired, read, hosts=hosts)  # facts may have changed
            if problems:
                raise PreflightFailed(problems)
        metrics.record_lock_wait(hosts, time.monotonic() - started)
        audit.append("deploy.locked", flow_run_id=owner.flow_run_id, hosts=sorted(hosts))
        try:
            yield surveys
        finally:
            audit.append("deploy.unlocking", flow_run_id=owner.flow_run_id, hosts=sorted(hosts))
    finally:
        # every host, not just those we know we locked: a survey cut off after taking a lock
        # must not leave it behind; the release is owner-checked, so this is safe
        await release_all(pool, desired, hosts, owner.flow_run_id)


CHANGED = "the lock changed owner since it was shown; not removed"
ConfirmFn = Callable[[str, LockSnapshot], bool]


@dataclass(frozen=True)
class Unlocked:
    """What ``homelab unlock`` did on one host."""
    host: str
    outcome: str  # free | removed | kept (not confirmed) | changed | failed
    shown: LockSnapshot | None = None  # the lock as shown to the user; None: it was free
    detail: str = ""

    @property
    def message(self) -> str:
        was = f" (was {describe_owner(self.shown.owner)})" if self.shown else ""
        return {"free": "lock is free", "removed": f"lock removed{was}", "kept": "lock kept",
                "changed": f"{CHANGED}; run `homelab unlock --host {self.host}` again to see its owner",
                }.get(self.outcome, f"unlock failed: {self.detail}")


async def force_unlock(desired: DesiredState, hosts: list[str],
                       confirm: ConfirmFn = lambda host, shown: True) -> dict[str, Unlocked]:
    """``homelab unlock``: read each host's deploy lock, let ``confirm`` show it (and say yes),
    then remove it only if its owner file is still exactly the one shown (audited)."""
    unknown = [h for h in hosts if h not in desired.inventory.hosts]
    if unknown:
        raise UsageError(f"unknown host(s): {', '.join(unknown)}")
    async with HostPool(t for t in ssh_targets(desired, all_hosts=True) if t.name in hosts) as pool:
        return {name: await _unlock_one(pool, desired.inventory.state_dir(name), name, confirm) for name in hosts}


async def _unlock_one(pool: HostPool, state_dir: str, host: str, confirm: ConfirmFn) -> Unlocked:
    try:
        shown = parse_lock_snapshot((await pool[host].run(show_lock(state_dir), check=False)).stdout)
        if shown is None:
            return Unlocked(host, "free")
        if not confirm(host, shown):
            return Unlocked(host, "kept", shown)
        done = await pool[host].run(unlock_if(state_dir, shown.digest), check=False)
    except HomelabError as exc:  # one host's failure must not hide what happened on the others
        return Unlocked(host, "failed", detail=str(exc))
    outcome, _ = parse_unlock(done.stdout)
    if outcome == "removed":
        audit.append("lock.forced", host=host, owner=shown.owner, owner_sha256=shown.digest)
    if outcome == "unknown":
        said = (done.stderr or done.stdout).strip()[-300:]
        return Unlocked(host, "failed", shown, f"`unlock-if` exited {done.exit_status}: {said}")
    return Unlocked(host, outcome, shown)
