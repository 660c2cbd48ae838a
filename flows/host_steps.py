"""host-steps: a worker host's side of a deploy. A deploy claims the host's standby run, or
starts a run of its own (see ``tasks/engine/worker_session.py`` and ``worker_standby.py``);
the run serves the orchestrator's orders until told to end, each by the same step as in SSH
mode (a Prefect task, so the UI shows it), run here behind a local transport. When it ends it
starts the host's next standby.

It refuses to serve an orchestrator of another code version: the two sides exchange the
engine's own values, so they must run the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from model.errors import HomelabError, HostUnreachable
from model.masking import MASKER
from tasks.engine.code_version import code_version
from tasks.engine.host_pool import HostPool
from tasks.engine.local_transport import LocalTransport
from tasks.engine.undo import RollbackJournal
from tasks.engine.worker_session import CHILD_HEARTBEAT_S, HEARTBEAT_KEY, Order, poll_interval
from tasks.engine.worker_standby import ensure_standby, wait_for_claim
from tasks.engine.worker_wire import KEY_ENV, ORDER_PREFIX, open_order, reply_prefix, seal
from tasks.steps import PREFECT_STEPS

PARENT_CHECK_EVERY_S = 5.0


class VersionMismatch(HomelabError):
    pass


@flow(name="host-steps", persist_result=False, log_prints=False)
async def host_steps(host: str, version: str, parent_run_id: str = "", idle_timeout_s: float = 900) -> dict:
    """Serve the deploy ``parent_run_id``'s steps for ``host`` on this machine; with no
    ``parent_run_id``, stand by until a deploy claims this run."""
    mine = code_version()
    if version != mine:
        raise VersionMismatch(f"the worker on {host} runs homelab-orchestrator {mine} and the orchestrator runs "
                              f"{version}: run `homelab worker upgrade --host {host}`")
    key = os.environ.get(KEY_ENV, "").encode()
    if not key:
        raise HomelabError(f"{KEY_ENV} is not set in the worker's environment (see `homelab worker install`)")
    me = str(flow_run.get_id())
    async with get_client() as client:
        if not parent_run_id:
            parent_run_id = await wait_for_claim(client, me, host, key, mine) or ""
            if not parent_run_id:
                return {"host": host, "orders": 0, "standby": True}
            get_run_logger().info("claimed by the deploy run %s", parent_run_id)
    try:
        served = await serve_orders(me, parent_run_id, host, key, idle_timeout_s)
    finally:
        # the next deploy's run starts now, after this deploy's work, not during the next one
        try:
            async with get_client() as client:
                await ensure_standby(client, host, mine, after=me)
        except Exception as exc:  # the next deploy starts a run of its own
            get_run_logger().warning("could not start the next standby run: %s", exc)
    return {"host": host, "orders": served, "parent_run_id": parent_run_id}


@dataclass
class LastReply:
    """When the last reply went out: the next order is likely near, so look soon."""
    at: float = field(default_factory=time.monotonic)


async def serve_orders(me: str, parent_run_id: str, host: str, key: bytes, idle_timeout_s: float) -> int:
    pool = HostPool([], others={host: LocalTransport(host)})
    running: set[asyncio.Task] = set()
    seen: set[str] = set()
    served, last_order, last_parent_check = 0, time.monotonic(), 0.0
    replied = LastReply()
    last_beat, beats = time.monotonic(), 0
    async with get_client() as client:
        while True:
            found = await client.filter_flow_run_input(me, ORDER_PREFIX, limit=100, exclude_keys=seen)
            orders = []
            for item in found:
                seen.add(item.key)
                orders.append((item.key.removeprefix(ORDER_PREFIX), open_order(item.value, key)))
            for order_id, order in sorted(orders, key=lambda o: o[1].name == "end"):
                if order.name == "end":
                    await asyncio.gather(*running)
                    return served
                MASKER.add(*order.secrets)
                task = asyncio.create_task(_answer(client, parent_run_id, host, key, pool, order_id, order, replied))
                running.add(task)
                task.add_done_callback(running.discard)
                served += 1
                last_order = time.monotonic()
            if not running and time.monotonic() - last_order > idle_timeout_s:
                get_run_logger().warning("no order for %ss: the orchestrator's run is gone; ending", idle_timeout_s)
                return served
            if running and time.monotonic() - last_beat > CHILD_HEARTBEAT_S:
                last_beat, beats = time.monotonic(), beats + 1
                await client.create_flow_run_input(parent_run_id, f"{reply_prefix(host)}{HEARTBEAT_KEY}{beats}", "1")
            if time.monotonic() - last_parent_check > PARENT_CHECK_EVERY_S:
                last_parent_check = time.monotonic()
                if await _parent_ended(client, parent_run_id):
                    await asyncio.gather(*running)
                    return served
            await asyncio.sleep(poll_interval(time.monotonic() - max(last_order, replied.at)))


async def _parent_ended(client, parent_run_id: str) -> bool:
    with contextlib.suppress(Exception):
        state = (await client.read_flow_run(parent_run_id)).state
        return state is not None and state.is_final()
    return False


async def _answer(client, parent_run_id: str, host: str, key: bytes, pool: HostPool, order_id: str,
                  order: Order, replied: LastReply) -> None:
    try:
        reply: tuple = ("ok", await _run(pool, host, order))
    except HostUnreachable as exc:
        reply = ("error", ("unreachable", MASKER.mask(str(exc))))
    except Exception as exc:  # the orchestrator judges it, as it would judge the SSH step's failure
        reply = ("error", ("step", MASKER.mask(str(exc)) or type(exc).__name__))
    await client.create_flow_run_input(parent_run_id, f"{reply_prefix(host)}{order_id}", seal(reply, key))
    replied.at = time.monotonic()


async def _run(pool: HostPool, host: str, order: Order) -> Any:
    if order.name == "run":
        (argv,) = order.args
        return await pool[host].run(argv, check=False, **order.kwargs)
    if order.name in ("undo", "restore"):
        (undo,) = order.args
        journal = RollbackJournal()
        await getattr(PREFECT_STEPS, order.name)(replace(undo, pool=pool, journal=journal))
        return journal
    step = getattr(PREFECT_STEPS, order.name, None)
    if step is None:
        raise HomelabError(f"unknown order {order.name!r}")
    return await step(pool, *order.args, **order.kwargs)
