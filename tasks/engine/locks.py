"""Per-host deploy locks (Kamal's mkdir lock, with an owner) plus Prefect concurrency.

The host lock is an atomic ``mkdir <state_dir>/lock`` holding ``owner.json``: flow run id,
user, orchestrator host and pid, start time, commit. The survey takes it in the same round
trip when it is free; otherwise hosts are locked one by one in name order (no deadlock
between two runs), waiting up to ``lock_wait_s``. A lock whose owner is gone (its process
died on this machine, or its flow run is finished, crashed, cancelled or unknown to Prefect)
is stale: it is broken, with an audit record. On top, Prefect's per-host slots
(``prefect_slots.py``) keep two runs off one host through Prefect itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

from model.desired import DesiredState
from model.errors import HomelabError, PreflightFailed, UsageError
from tasks.engine import audit
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.preflight import SurveyFn, survey_hosts
from tasks.host_commands.lock import (
    LockOwner,
    break_lock,
    describe_owner,
    parse_owner,
    read_lock_owner,
    release_lock,
    take_lock,
)
from tasks.host_commands.survey import HostSurvey


class LockHeld(HomelabError):
    exit_code = 5

    def __init__(self, host: str, owner: dict | None, waited_s: float):
        self.host, self.owner = host, owner
        who = describe_owner(owner)
        super().__init__(f"{host}: deploy lock held by {who}; waited {waited_s:.0f}s. If that run is really gone, "
                         f"run `homelab unlock --host {host}`")


async def stale_reason(owner: dict | None) -> str | None:
    """Why the lock's owner is gone, or None if it may still be running."""
    if not owner:
        return None
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return f"its orchestrator process {owner['pid']} on {owner['host']} is gone"
        except PermissionError:
            pass
    # Another machine's run may report to another Prefect server: "unknown here" proves nothing.
    local = owner.get("host") == socket.gethostname()
    return await _flow_run_gone(owner.get("flow_run_id"), unknown_is_gone=local)


async def _flow_run_gone(flow_run_id: str | None, unknown_is_gone: bool) -> str | None:
    if not flow_run_id:
        return None
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return f"flow run {flow_run_id} does not exist in Prefect" if unknown_is_gone else None
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
        audit.append("deploy.locked", flow_run_id=owner.flow_run_id, hosts=sorted(hosts))
        try:
            yield surveys
        finally:
            audit.append("deploy.unlocking", flow_run_id=owner.flow_run_id, hosts=sorted(hosts))
    finally:
        # every host, not just those we know we locked: a survey cut off after taking a lock
        # must not leave it behind; the release is owner-checked, so this is safe
        await release_all(pool, desired, hosts, owner.flow_run_id)


async def force_unlock(desired: DesiredState, hosts: list[str]) -> dict[str, dict | None]:
    """``homelab unlock``: break each host's deploy lock, whoever holds it (audited). Returns the
    owner each lock had (None: it was free)."""
    unknown = [h for h in hosts if h not in desired.inventory.hosts]
    if unknown:
        raise UsageError(f"unknown host(s): {', '.join(unknown)}")
    owners: dict[str, dict | None] = {}
    async with HostPool(t for t in ssh_targets(desired, all_hosts=True) if t.name in hosts) as pool:
        for name in hosts:
            state_dir = desired.inventory.state_dir(name)
            owners[name] = parse_owner((await pool[name].run(read_lock_owner(state_dir), check=False)).stdout)
            await pool[name].run(break_lock(state_dir))
            audit.append("lock.forced", host=name, owner=owners[name])
    return owners
