"""Prefect's half of the deploy locks: one global concurrency slot per host the run changes.

A limit ``homelab-host-<name>`` (created on first use, limit 1) per host; a killed run's slots
come back when its lease runs out (60 s, the server's minimum).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tasks.engine.locks import LockHeld


def slot_names(hosts: list[str]) -> list[str]:
    return [f"homelab-host-{h}" for h in sorted(hosts)]


@contextlib.asynccontextmanager
async def prefect_host_slots(hosts: list[str], wait_s: float) -> AsyncIterator[None]:
    """Hold one slot of each host's Prefect global concurrency limit (created if missing)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.asyncio import concurrency

    names = slot_names(hosts)
    if not hosts:
        yield
        return
    async with get_client() as client:
        existing = {limit.name for limit in await client.read_global_concurrency_limits(limit=200)}
        for name in names:
            if name not in existing:
                with contextlib.suppress(Exception):  # another run may create it at the same time
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    async with contextlib.AsyncExitStack() as stack:
        try:
            # a killed run's slots come back when its lease (60 s, the server's minimum) runs out
            await stack.enter_async_context(
                concurrency(names, occupy=1, timeout_seconds=wait_s, lease_duration=60, strict=True))
        except TimeoutError:
            raise LockHeld(", ".join(hosts), {"flow_run_id": "another Prefect flow run (global concurrency "
                                              f"limits {', '.join(names)})"}, wait_s) from None
        yield
