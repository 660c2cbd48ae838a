"""Applying a plan: phases in order; within a phase, hosts in parallel and each host's
stacks in parallel up to ``max_parallel``. Every host's result is collected before the
phase is judged; a failed phase stops the run (later phases are reported ``not-run``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from deployments.desired import DesiredState
from tasks.compose import compose_down, releases_dir
from tasks.errors import HomelabError
from tasks.health import container_logs
from tasks.plan import ORPHANS, Change, Plan
from tasks.releases import ReleaseRecord, new_release_id, utc_now
from tasks.remote import HostPool, current_phase
from tasks.report import StackResult
from tasks.steps import health_gate, record_release, stage, start_release


async def apply_plan(pool: HostPool, desired: DesiredState, plan: Plan, flow_run_id: str | None,
                     prune: bool = False) -> list[StackResult]:
    results: list[StackResult] = []
    stopped: str | None = None
    for phase in plan.phases:
        changes = plan.phase(phase)
        if stopped:
            results += [_not_run(c, f"phase {stopped} failed") for c in changes]
            continue
        current_phase.set(phase)
        phase_results = await _run_phase(pool, desired, changes, flow_run_id, prune)
        results += phase_results
        if any(not r.ok for r in phase_results):
            stopped = phase
    return results


def _not_run(change: Change, why: str) -> StackResult:
    return StackResult(change.phase, change.host, change.stack, change.action, "not-run", reason=why,
                       release=change.current_release)


async def _run_phase(pool: HostPool, desired: DesiredState, changes: list[Change], flow_run_id: str | None,
                     prune: bool) -> list[StackResult]:
    by_host: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_host[change.host].append(change)

    async def host_lane(host: str, lane: list[Change]) -> list[StackResult]:
        limit = asyncio.Semaphore(desired.inventory.defaults.max_parallel)

        async def one(change: Change) -> StackResult:
            async with limit:
                return await _apply_change(pool, desired, change, flow_run_id, prune)

        return list(await asyncio.gather(*(one(c) for c in lane)))

    lanes = await asyncio.gather(*(host_lane(h, lane) for h, lane in by_host.items()))
    order = {(c.host, c.stack): i for i, c in enumerate(changes)}
    return sorted((r for lane in lanes for r in lane), key=lambda r: order[(r.host, r.stack)])


async def _apply_change(pool: HostPool, desired: DesiredState, change: Change, flow_run_id: str | None,
                        prune: bool) -> StackResult:
    if change.action == "unchanged":
        return StackResult(change.phase, change.host, change.stack, "unchanged", "unchanged",
                           reason=change.reason, release=change.current_release)
    if change.phase == ORPHANS:
        return await _retire(pool, desired, change, prune)
    return await deploy_stack(pool, desired, change, flow_run_id)


async def deploy_stack(pool: HostPool, desired: DesiredState, change: Change, flow_run_id: str | None) -> StackResult:
    """Upload, images, up, health gate, record: the runbook for one stack on one host."""
    inv = desired.inventory
    stack = desired.stacks[change.stack]
    spec = inv.stack(stack.name)
    host, state_dir = change.host, inv.state_dir(change.host)
    release = new_release_id()
    started = time.monotonic()
    result = StackResult(change.phase, host, stack.name, change.action, "failed", reason=change.reason,
                         release=release)
    image_map: dict[str, str] = {}
    try:
        image_map = await stage(pool, host, state_dir, stack.name, release, stack.compose, stack.images, spec.pull)
        await start_release(pool, host, state_dir, stack.name, release)
        gate = await health_gate(pool, host, stack.name, stack.services, spec.health.checks,
                                 inv.health_timeout_s(stack.name), spec.health.containers)
        result.probe_output = gate.probe_output or None
        if gate.ok:
            result.result = "healthy"
        else:
            result.error = f"health gate failed: {gate.reason}"
            result.logs = await container_logs(pool[host], stack.name)
    except HomelabError as exc:
        result.error = str(exc)
        result.logs = await container_logs(pool[host], stack.name) if pool[host].connected else None
    record = ReleaseRecord(
        id=release, stack=stack.name, host=host, commit=desired.commit, config_hash=stack.config_hash,
        images=image_map, created_at=utc_now(), flow_run_id=flow_run_id,
        status="active" if result.result == "healthy" else "failed", source=desired.source)
    try:
        await record_release(pool, state_dir, record, inv.defaults.keep_releases)
    except HomelabError as exc:
        if result.result == "healthy":
            result.result, result.error = "failed", f"healthy, but the release record was not written: {exc}"
    result.duration_s = time.monotonic() - started
    return result


async def _retire(pool: HostPool, desired: DesiredState, change: Change, prune: bool) -> StackResult:
    if not prune:
        return StackResult(change.phase, change.host, change.stack, "remove", "kept",
                           reason=change.reason + " (run with --prune to remove it)", release=change.current_release)
    started = time.monotonic()
    transport = pool[change.host]
    result = StackResult(change.phase, change.host, change.stack, "remove", "removed", reason=change.reason,
                         release=change.current_release)
    try:
        await transport.run(compose_down(change.stack))
        current = f"{releases_dir(desired.inventory.state_dir(change.host), change.stack)}/current"
        await transport.run(["rm", "-f", "--", current])
    except HomelabError as exc:
        result.result, result.error = "failed", str(exc)
    result.duration_s = time.monotonic() - started
    return result
