"""Applying a plan: phases in dependency order; within a phase, hosts in parallel and each
host's stacks in parallel up to ``max_parallel``. Every result is collected before the phase
is judged (fabric's GroupResult); then the phase's failure policy decides.

Undo uses Prefect transactions: each stack deploy is a transaction (held open by ``Held``
until the run decides) whose ``on_rollback`` hook is the stack's undo, staged once compose-up
was attempted. A failing stack's own transaction always unwinds at once, so no host is left
on a half-deployed release. Then the phase's policy decides:

- ``halt``: stop; later phases are ``not-run``; everything else that succeeded stays.
- ``rollback-phase``: also undo every stack this phase changed; stop.
- ``rollback-all``: undo everything this run changed, in reverse; stop.
- ``continue``: keep going with the phases that do not depend on the failed one.

A production run may check each phase once its health gates passed (``phase_check``: the
verifier agent). A phase it fails is failed like a failed health gate: every stack the phase
deployed is undone at once, marked ``failed``, and the phase's policy decides the rest.

A run may end with a ``verify`` step (staging's smoke tests): once every phase passed, and before
anything is committed. The stacks it fails are ``failed``, and everything the run changed is
undone, as with ``rollback-all``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from model.desired import DesiredState
from tasks.engine import metrics, progress
from tasks.engine.busy_clock import current_phase
from tasks.engine.events import RunEvents
from tasks.engine.gpu_fit import gpu_need, gpu_turn
from tasks.engine.held_transaction import Held
from tasks.engine.host_pool import HostPool
from tasks.engine.phase_snapshots import SnapshotLog, open_proxmox, snapshot_phase
from tasks.engine.plan import ORPHANS, Change, Plan
from tasks.engine.report import StackResult
from tasks.engine.stack_deploy import StackRun, deploy_stack, retire_stack
from tasks.engine.step_set import PLAIN_STEPS, Steps
from tasks.engine.undo import RollbackJournal
from tasks.host_commands.survey import HostSurvey

# (pool, results, steps) -> {(host, stack): why it failed}; empty when all is well
Verify = Callable[[HostPool, list[StackResult], Steps], Awaitable[dict[tuple[str, str], str]]]
# (phase, its results) -> why the phase fails, or None when it passes
PhaseCheck = Callable[[str, list[StackResult]], Awaitable[str | None]]


@dataclass(kw_only=True)
class Rollout:
    pool: HostPool
    desired: DesiredState
    surveys: dict[str, HostSurvey]
    flow_run_id: str | None
    steps: Steps = PLAIN_STEPS
    prune: bool = False
    on_failure: str | None = None  # overrides every phase's policy
    journal: RollbackJournal = field(default_factory=RollbackJournal)
    snapshot_log: SnapshotLog = field(default_factory=SnapshotLog)
    verify: Verify | None = None
    phase_check: PhaseCheck | None = None
    events: RunEvents | None = None  # None: no Prefect events (plain runs, tests of the engine alone)

    def policy(self, phase: str) -> str:
        if self.on_failure:
            return self.on_failure
        spec = self.desired.inventory.phases.get(phase)
        return spec.on_failure if spec else "halt"

    def stack_run(self) -> StackRun:
        return StackRun(pool=self.pool, desired=self.desired, surveys=self.surveys, flow_run_id=self.flow_run_id,
                        steps=self.steps, journal=self.journal)


@dataclass
class PhaseHeld:
    """The still-open transactions of one phase: its healthy stacks and its VM snapshots."""

    stacks: list[Held]
    snapshots: list[Held]


async def apply_plan(run: Rollout, plan: Plan) -> list[StackResult]:
    results: list[StackResult] = []
    failed_phases: list[str] = []
    stop_reason: str | None = None
    undo_reason: str | None = None  # why the run undid healthy stacks: its policy, or verify
    checked_out: set[tuple[str, str]] = set()  # stacks undone because phase_check failed their phase
    kept: list[PhaseHeld] = []
    try:
        for phase in plan.phases:
            changes = plan.phase(phase)
            blocked = stop_reason or _blocked_by(run.desired, phase, failed_phases)
            if blocked:
                results += [_not_run(c, blocked) for c in changes]
                continue
            current_phase.set(phase)
            for change in changes:
                if change.action != "unchanged":
                    progress.note(phase, change.host, change.stack, "queued")
            started = time.monotonic()
            phase_results, held = await _run_phase_after_snapshots(run, phase, changes)
            phase_results = await _phase_checked(run, phase, phase_results, held, checked_out)
            results += phase_results
            kept.append(held)
            if any(r.result == "failed" for r in phase_results):
                failed_phases.append(phase)
                policy = run.policy(phase)
                stop_reason = await _apply_policy(policy, phase, kept)
                undo_reason = "policy" if policy in ("rollback-phase", "rollback-all") else undo_reason
            await _phase_ended(run, changes, phase_results, time.monotonic() - started)
        if run.verify is not None and not failed_phases:
            verified = await _verified(run, results, kept)
            undo_reason = "verify" if verified is not results else undo_reason
            results = verified
    finally:
        # Whatever the policy did not undo is kept.
        await asyncio.gather(*(h.commit() for phase_held in kept for h in [*phase_held.stacks, *phase_held.snapshots]))
    final = _with_rollbacks(results, run.journal)
    _undone(run, final, undo_reason, checked_out)
    return final


async def _phase_ended(run: Rollout, changes: list[Change], results: list[StackResult], seconds: float) -> None:
    """Tell the agents (events) and Prometheus (a push) that a phase ended."""
    if run.events is not None and any(c.action != "unchanged" for c in changes):
        run.events.phase_completed(changes[0].phase, results, seconds)
        before = {(c.host, c.stack): c.current_release for c in changes}
        for r in results:
            if r.result == "failed":
                run.events.stack_failed(r, before.get((r.host, r.stack)))
    await metrics.push_now()


def _undone(run: Rollout, results: list[StackResult], undo_reason: str | None,
            checked_out: set[tuple[str, str]]) -> None:
    """Count every change and tell why each undone stack was undone: its own failure
    (``failed-stack``), its phase failing the check (``verify``), or the run's ``undo_reason``
    (policy, verify)."""
    for r in results:
        own = "verify" if (r.host, r.stack) in checked_out else "failed-stack"
        why = (own if r.result == "failed" else undo_reason or "policy") if r.rollback else None
        metrics.record_stack(r, why)
        if why and run.events is not None:
            run.events.rolled_back(r, why)


async def _phase_checked(run: Rollout, phase: str, results: list[StackResult], held: PhaseHeld,
                         checked_out: set[tuple[str, str]]) -> list[StackResult]:
    """A phase whose health gates all passed, through ``phase_check``; a fail undoes its stacks."""
    deployed = [r for r in results if r.result == "healthy" and r.action != "unchanged"]
    if run.phase_check is None or not deployed or any(r.result == "failed" for r in results):
        return results
    try:
        why = await run.phase_check(phase, results)
    except Exception as exc:  # a broken check must not keep an unverified phase
        why = f"the phase check could not run: {exc!r}"
    if why is None:
        return results
    await asyncio.gather(*(h.rollback() for h in held.stacks))
    held.stacks.clear()
    undone = {(r.host, r.stack) for r in deployed}
    checked_out.update(undone)
    return [replace(r, result="failed", error=why) if (r.host, r.stack) in undone else r for r in results]


async def _verified(run: Rollout, results: list[StackResult], kept: list[PhaseHeld]) -> list[StackResult]:
    assert run.verify is not None
    try:
        failures = await run.verify(run.pool, results, run.steps)
    except Exception as exc:  # a broken check must not keep an unverified release
        failures = {(r.host, r.stack): f"verification could not run: {exc!r}" for r in results}
    if not failures:
        return results
    await _unwind(kept)
    return [replace(r, result="failed", error=failures[(r.host, r.stack)]) if (r.host, r.stack) in failures else r
            for r in results]


async def _apply_policy(policy: str, phase: str, kept: list[PhaseHeld]) -> str | None:
    """Undo what the policy says; returns why the run stops (None: it goes on)."""
    if policy == "rollback-phase":
        await _unwind(kept[-1:])
    elif policy == "rollback-all":
        await _unwind(kept)
    return None if policy == "continue" else f"phase {phase} failed (policy {policy})"


async def _run_phase_after_snapshots(run: Rollout, phase: str,
                                     changes: list[Change]) -> tuple[list[StackResult], PhaseHeld]:
    """The phase's snapshots first: if one cannot be taken, the phase does not start."""
    snaps, snapshot_error = await _take_snapshots(run, phase, changes)
    if snapshot_error:
        return [_not_started(c, snapshot_error) for c in changes], PhaseHeld([], [])
    phase_results, held = await _run_phase(run, changes)
    return phase_results, PhaseHeld([h for h in held if not h.unwound], snaps)


async def _take_snapshots(run: Rollout, phase: str, changes: list[Change]) -> tuple[list[Held], str | None]:
    inv = run.desired.inventory
    spec = inv.phases.get(phase)
    hosts = sorted({c.host for c in changes if c.action != "unchanged" and inv.hosts[c.host].proxmox})
    if not spec or not spec.snapshot or not hosts:
        return [], None
    return await snapshot_phase(lambda: open_proxmox(inv), inv, run.snapshot_log, phase=phase, hosts=hosts,
                                run_id=run.flow_run_id or "manual", take=run.steps.snapshot)


async def _unwind(phases: list[PhaseHeld]) -> None:
    """Undo in reverse: the latest phase first; within a phase, hosts in parallel, the stacks
    first and then the VM snapshots taken before it."""
    for phase_held in reversed(phases):
        await asyncio.gather(*(h.rollback() for h in phase_held.stacks))
        await asyncio.gather(*(h.rollback() for h in phase_held.snapshots))


def _blocked_by(desired: DesiredState, phase: str, failed: list[str]) -> str | None:
    """With ``continue``: a phase that (transitively) depends on a failed phase does not run."""
    phases = desired.inventory.phases
    todo, seen = list(phases[phase].depends_on) if phase in phases else [], set()
    while todo:
        dep = todo.pop()
        if dep in failed:
            return f"depends on failed phase {dep}"
        if dep not in seen and dep in phases:
            seen.add(dep)
            todo += phases[dep].depends_on
    return None


def _with_rollbacks(results: list[StackResult], journal: RollbackJournal) -> list[StackResult]:
    """Each result as the undo left it: ``rollback`` says what the undo did."""
    out = []
    for r in results:
        note = journal.entries.get((r.host, r.stack))
        if note is None:
            out.append(r)
        elif (r.host, r.stack) in journal.failed:
            out.append(replace(r, rollback=note, result="failed", error=(r.error + "; " if r.error else "") + note))
        else:
            out.append(replace(r, rollback=note, result="rolled-back" if r.result == "healthy" else r.result))
    return out


def _not_run(change: Change, why: str) -> StackResult:
    return StackResult.untouched(change, "not-run", reason=why)


def _not_started(change: Change, error: str) -> StackResult:
    """A stack of a phase that could not start (its snapshot failed): failed if it had a change."""
    if change.action == "unchanged":
        return replace(_not_run(change, error), result="unchanged")
    return replace(_not_run(change, error), result="failed", error=error)


async def _run_phase(run: Rollout, changes: list[Change]) -> tuple[list[StackResult], list[Held]]:
    by_host: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_host[change.host].append(change)
    held: list[Held] = []
    stack_run = run.stack_run()

    async def host_lane(lane: list[Change]) -> list[StackResult]:
        limit = asyncio.Semaphore(run.desired.inventory.defaults.max_parallel)
        gpu_lock = asyncio.Lock()  # GPU stacks one at a time: two model servers loading can exhaust a card

        async def one(change: Change) -> StackResult:
            need = gpu_need(run.desired, change.stack) if change.action != "unchanged" and change.phase != ORPHANS \
                else None
            gpu = gpu_turn(need, gpu_lock)
            async with limit, gpu:
                if change.action == "unchanged":
                    return StackResult.untouched(change, "unchanged")
                if change.phase == ORPHANS:
                    return await retire_stack(run.pool, run.desired, change, prune=run.prune,
                                              record=run.surveys[change.host].releases.get(change.stack))
                deploy = Held(lambda: deploy_stack(stack_run, change))
                held.append(deploy)
                try:
                    return await deploy.result()
                except Exception as exc:
                    return StackResult(phase=change.phase, host=change.host, stack=change.stack, action=change.action,
                                       result="failed", reason=change.reason, error=f"internal error: {exc!r}",
                                       from_release=change.current_release, images_from=change.current_images)

        return list(await asyncio.gather(*(one(c) for c in lane)))

    hosts_at_once = asyncio.Semaphore(run.desired.inventory.defaults.max_hosts_parallel)

    async def timed_lane(host: str, lane: list[Change]) -> list[StackResult]:
        if all(c.action == "unchanged" for c in lane):
            return await host_lane(lane)  # touches nothing: takes no host slot
        async with hosts_at_once:
            started = time.monotonic()
            try:
                return await host_lane(lane)
            finally:
                metrics.record_host_phase(host, lane[0].phase, time.monotonic() - started)

    lanes = await asyncio.gather(*(timed_lane(host, lane) for host, lane in by_host.items()))
    order = {(c.host, c.stack): i for i, c in enumerate(changes)}
    return sorted((r for lane in lanes for r in lane), key=lambda r: order[(r.host, r.stack)]), held
