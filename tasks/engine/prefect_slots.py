"""Prefect's half of the deploy locks: one global concurrency slot per host the run changes.

A limit ``homelab-host-<name>`` (created on first use, limit 1) per host; a killed run's slots
come back when its lease runs out (60 s, the server's minimum).

The slots are taken with the client's lease calls, not with ``prefect.concurrency``: its
acquisition service sometimes takes about 2 s to hand over a free slot (3 of 40 back-to-back
acquisitions on an idle server, against 0.01 s for the API call itself), which every changing
deploy would pay. A held slot is polled for with a short backoff, and the lease is renewed
while the run holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from tasks.engine.locks import LockHeld

log = logging.getLogger("homelab.locks")

LEASE_S = 60
RENEW_EVERY_S = 20
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0


def slot_names(hosts: list[str]) -> list[str]:
    return [f"homelab-host-{h}" for h in sorted(hosts)]


@contextlib.asynccontextmanager
async def prefect_host_slots(hosts: list[str], wait_s: float) -> AsyncIterator[None]:
    """Hold one slot of each host's Prefect global concurrency limit (created if missing)."""
    from prefect import get_client

    if not hosts:
        yield
        return
    names = slot_names(hosts)
    async with get_client() as client:
        await _ensure_limits(client, names)
        lease = await _acquire(client, names, hosts, wait_s)
        renewing = asyncio.create_task(_renew(client, lease))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await client.release_concurrency_slots_with_lease(lease_id=lease)
            except Exception as exc:  # the lease lapses by itself within LEASE_S
                log.warning("Prefect host slots not released (they free themselves in %d s): %s", LEASE_S,
                            type(exc).__name__)


async def _ensure_limits(client: Any, names: list[str]) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    existing = {limit.name for limit in await client.read_global_concurrency_limits(limit=200)}
    for name in names:
        if name not in existing:
            with contextlib.suppress(Exception):  # another run may create it at the same time
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


async def _acquire(client: Any, names: list[str], hosts: list[str], wait_s: float) -> Any:
    """The lease id of one slot on every limit at once; LockHeld once ``wait_s`` passed."""
    import httpx

    deadline = time.monotonic() + wait_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=names, slots=1, mode="concurrency", lease_duration=LEASE_S)
            return response.json()["lease_id"]
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423 Locked: another run holds a slot
                raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockHeld(", ".join(hosts), {"flow_run_id": "another Prefect flow run (global concurrency "
                                              f"limits {', '.join(names)})"}, wait_s)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE_S)


async def _renew(client: Any, lease: Any) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY_S)
        try:
            await client.renew_concurrency_lease(lease_id=lease, lease_duration=LEASE_S)
        except Exception as exc:  # a missed renewal is retried; the host-side lock still holds
            log.warning("Prefect host slot lease not renewed: %s", type(exc).__name__)
