"""Standby host-steps runs: a worker host's next run, started ahead, so a deploy does not wait
for the host to start a Python process (seconds, more on a busy host).

Each host keeps one run of its ``host-steps`` deployment in standby: tagged ``standby``, with
no parent, idle but for a slow look at its own inputs. A deploy claims one by writing the
input ``claim`` (sealed with the host's key) on it. The server holds an input key once per
run, so of two deploys that claim the same standby one gets a conflict and tries the next:
the claim is atomic. The claimed run answers with an ack on the deploy's run and then serves
its orders as a run started for it would. Every run that served a deploy starts the next
standby when it ends (once: the successor's idempotency key is its own id), so its start-up
happens after the deploy, not during the next one.

A standby whose process is gone (killed with its worker) still reads Running; a claim it does
not ack within ``CLAIM_ACK_S`` marks it crashed, and the deploy takes the next standby or
starts a run of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from model.errors import HomelabError
from tasks.engine.worker_wire import FLOW_NAME, deployment_name, open_order, reply_prefix, seal

STANDBY_TAG = "standby"
CLAIMED_TAG = "claimed"
CLAIM_KEY = "claim"
CLAIM_ACK_S = 5.0  # a Running standby that has not acked a claim by then is gone
STANDBY_POLL_S = 0.5  # how often a standby looks for its claim (the claim's latency, idle API load)
STATE_CHECK_S = 5.0  # how often a standby checks that it was not cancelled (an upgrade replaces it)
STANDBY_LIFETIME_S = 6 * 3600.0  # then it hands over to a fresh one: no run is open for days


def ack_key(host: str, standby_run_id: str) -> str:
    return f"{reply_prefix(host)}claimed-{standby_run_id}"


async def open_standbys(client, host: str, version: str | None = None) -> list:
    """The host's unclaimed standby runs (of ``version``, when given), Running ones first."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    runs = await client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[host])),
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[STANDBY_TAG]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[
                StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]))),
        limit=20)
    runs = [r for r in runs if not r.parameters.get("parent_run_id") and r.parameters.get("host") == host
            and (version is None or r.parameters.get("version") == version)]
    return sorted(runs, key=lambda r: (not r.state.is_running(), -(r.created.timestamp() if r.created else 0)))


async def create_standby(host: str, version: str, after: str = "") -> str:
    """Start the host's next standby run; ``after`` (the run that starts it) makes it once-only."""
    from prefect.deployments import run_deployment

    run = await run_deployment(deployment_name(host), timeout=0, as_subflow=False, tags=[STANDBY_TAG],
                               parameters={"host": host, "version": version}, flow_run_name=f"standby-{host}",
                               idempotency_key=f"standby-after-{after}" if after else None)
    return str(run.id)


async def ensure_standby(client, host: str, version: str, after: str = "") -> str | None:
    """A standby for the host's next deploy, unless one is open already; its id when started."""
    if [r for r in await open_standbys(client, host, version) if str(r.id) != after]:
        return None
    return await create_standby(host, version, after)


async def retire_standbys(client, host: str, message: str) -> int:
    """Cancel the host's open standbys (their worker was restarted: their processes are gone)."""
    from prefect.states import Cancelled

    runs = await open_standbys(client, host)
    for run in runs:
        with contextlib.suppress(Exception):
            await client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
    return len(runs)


# ------------------------------------------------------------------ the orchestrator's side


async def claim_standby(client, host: str, parent_run_id: str, key: bytes, version: str) -> tuple[str, bool] | None:
    """(run id, already running) of a standby of ``host`` now serving ``parent_run_id``, or None."""
    from prefect.exceptions import PrefectHTTPStatusError

    for run in await open_standbys(client, host, version):
        try:
            await client.create_flow_run_input(run.id, CLAIM_KEY, seal(parent_run_id, key))
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code in (404, 409):  # another deploy's claim, or the run was deleted
                continue
            raise
        if not run.state.is_running():
            return str(run.id), False  # it reads the claim when its worker starts it
        if await _acked(client, parent_run_id, ack_key(host, str(run.id)), CLAIM_ACK_S):
            return str(run.id), True
        await mark_crashed(client, str(run.id), f"claimed by {parent_run_id} but silent for {CLAIM_ACK_S:g}s: "
                                                f"its process is gone (killed with its worker?)")
    return None


async def _acked(client, parent_run_id: str, key: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await client.filter_flow_run_input(parent_run_id, key, limit=1, exclude_keys=set()):
            return True
        await asyncio.sleep(0.05)
    return False


async def mark_crashed(client, flow_run_id: str, message: str) -> None:
    from prefect.states import Crashed

    with contextlib.suppress(Exception):
        await client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


# ------------------------------------------------------------------ the standby's side


async def wait_for_claim(client, me: str, host: str, key: bytes, version: str,
                         lifetime_s: float = STANDBY_LIFETIME_S, poll_s: float = STANDBY_POLL_S) -> str | None:
    """The deploy that claimed this standby (acked), or None: cancelled (its worker was
    replaced), or its time is up (then a fresh standby takes over)."""
    deadline, last_state_check = time.monotonic() + lifetime_s, time.monotonic()
    while time.monotonic() < deadline:
        found = await client.filter_flow_run_input(me, CLAIM_KEY, limit=1, exclude_keys=set())
        if found:
            parent_run_id = _parent_of(open_order(found[0].value, key))
            await client.create_flow_run_input(parent_run_id, ack_key(host, me), seal(me, key))
            await _show_claimed(client, me, host, parent_run_id)
            return parent_run_id
        if time.monotonic() - last_state_check > STATE_CHECK_S:
            last_state_check = time.monotonic()
            state = (await client.read_flow_run(me)).state
            if state is None or not state.is_running():
                return None
        await asyncio.sleep(poll_s)
    await ensure_standby(client, host, version, after=me)
    return None


async def _show_claimed(client, me: str, host: str, parent_run_id: str) -> None:
    """In the UI (and to other deploys' searches) the run is now the deploy's, not a standby."""
    with contextlib.suppress(Exception):
        run = await client.read_flow_run(me)
        await client.update_flow_run(me, name=f"{host}-for-{parent_run_id[:8]}",
                                     tags=[*(t for t in run.tags if t != STANDBY_TAG), CLAIMED_TAG],
                                     parameters={**run.parameters, "parent_run_id": parent_run_id})


def _parent_of(claim: Any) -> str:
    if not isinstance(claim, str) or not claim:
        raise HomelabError(f"a claim names the deploy's run id, not {type(claim).__name__}")
    return claim
