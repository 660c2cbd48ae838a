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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import get_args

from deployments.desired import DesiredState
from deployments.inventory import FailurePolicy
from tasks.compose import compose_down, releases_dir
from tasks.errors import HomelabError
from tasks.facts import HostSurvey
from tasks.health import container_logs
from tasks.held import Held, Outcome
from tasks.plan import ORPHANS, Change, Plan
from tasks.releases import ReleaseRecord, new_release_id, utc_now
from tasks.remote import HostPool, current_phase
from tasks.report import StackResult
from tasks.snapshots import ProxmoxSnapshots, VmRef, snapshot_name
from tasks.steps import health_gate, record_release, stage, start
from tasks.undo import RollbackJournal, StackUndo
from tasks.vmsnap import SnapshotLog, SnapshotRevert, proxmox_settings, snapshot_vm

POLICIES = get_args(FailurePolicy)


@dataclass
class Rollout:
    pool: HostPool
    desired: DesiredState
    surveys: dict[str, HostSurvey]
    flow_run_id: str | None
    prune: bool = False
    on_failure: str | None = None  # overrides every phase's policy
    journal: RollbackJournal = field(default_factory=RollbackJournal)
    snapshot_log: SnapshotLog = field(default_factory=SnapshotLog)
    _proxmox: ProxmoxSnapshots | None = None

    def proxmox(self) -> ProxmoxSnapshots:
        if self._proxmox is None:
            settings = proxmox_settings(self.desired.inventory)
            if settings is None:
                raise HomelabError("this phase takes Proxmox snapshots, but no credentials are configured: set "
                                   "`proxmox.block` in the inventory or PROXMOX_URL, PROXMOX_TOKEN_ID and "
                                   "PROXMOX_TOKEN_SECRET (and PROXMOX_CA_FILE)")
            self._proxmox = ProxmoxSnapshots(settings)
        return self._proxmox

    def policy(self, phase: str) -> str:
        if self.on_failure:
            return self.on_failure
        spec = self.desired.inventory.phases.get(phase)
        return spec.on_failure if spec else "halt"


async def apply_plan(run: Rollout, plan: Plan) -> list[StackResult]:
    results: list[StackResult] = []
    failed_phases: list[str] = []
    stop_reason: str | None = None
    kept: list[PhaseHeld] = []  # per phase, the still-open transactions: snapshots and healthy stacks
    try:
        for phase in plan.phases:
            changes = plan.phase(phase)
            blocked = stop_reason or _blocked_by(run.desired, phase, failed_phases)
            if blocked:
                results += [_not_run(c, blocked) for c in changes]
                continue
            current_phase.set(phase)
            snaps, snapshot_error = await _take_snapshots(run, phase, changes)
            if snapshot_error:
                phase_results, held = [_not_run(c, snapshot_error) for c in changes], []
                for r in phase_results:
                    r.result, r.error = ("failed", snapshot_error) if r.action != "unchanged" else ("unchanged", None)
            else:
                phase_results, held = await _run_phase(run, changes)
            results += phase_results
            kept.append(PhaseHeld([h for h in held if not h.unwound], snaps))
            if any(r.result == "failed" for r in phase_results):
                failed_phases.append(phase)
                policy = run.policy(phase)
                if policy == "rollback-phase":
                    await _unwind(kept[-1:])
                elif policy == "rollback-all":
                    await _unwind(kept)
                if policy != "continue":
                    stop_reason = f"phase {phase} failed (policy {policy})"
    finally:
        # Whatever the policy did not undo is kept.
        await asyncio.gather(*(h.commit() for phase_held in kept for h in [*phase_held.stacks, *phase_held.snapshots]))
    return _with_rollbacks(results, run.journal)


@dataclass
class PhaseHeld:
    stacks: list[Held]
    snapshots: list[Held]


async def _unwind(phases: list[PhaseHeld]) -> None:
    """Undo in reverse: the latest phase first; within a phase, hosts in parallel, the stacks
    first and then the VM snapshots taken before it."""
    for phase_held in reversed(phases):
        await asyncio.gather(*(h.rollback() for h in phase_held.stacks))
        await asyncio.gather(*(h.rollback() for h in phase_held.snapshots))


async def _take_snapshots(run: Rollout, phase: str, changes: list[Change]) -> tuple[list[Held], str | None]:
    """Snapshot the Proxmox VM of every host this phase will change. Returns the open
    transactions, and an error if any snapshot could not be taken (the phase must not start)."""
    spec = run.desired.inventory.phases.get(phase)
    inv = run.desired.inventory
    hosts = sorted({c.host for c in changes if c.action != "unchanged" and inv.hosts[c.host].proxmox})
    if not spec or not spec.snapshot or not hosts:
        return [], None
    try:
        client = run.proxmox()
    except HomelabError as exc:
        return [], str(exc)
    name = snapshot_name(run.flow_run_id or "manual", phase)
    section = inv.proxmox
    keep = section.keep_snapshots if section else 3
    start = section.start_after_rollback if section else True
    held = []
    for host in hosts:
        vm = inv.hosts[host].proxmox
        revert = SnapshotRevert(client, run.snapshot_log, phase, host, VmRef(vm.node, vm.vmid, vm.kind), name, start)
        held.append(Held(lambda revert=revert: _snapshot(revert, spec.vmstate, keep)))
    outcomes = await asyncio.gather(*(h.result() for h in held), return_exceptions=True)
    errors = [f"snapshot of {host} failed: {o}" for host, o in zip(hosts, outcomes, strict=True)
              if isinstance(o, BaseException)]
    taken = [h for h, o in zip(held, outcomes, strict=True) if not isinstance(o, BaseException)]
    for h in held:
        if h not in taken:
            await asyncio.gather(h.task, return_exceptions=True)  # collect the failed task
    if errors:  # the phase will not start: nothing to revert, keep what was taken
        await asyncio.gather(*(h.commit() for h in taken))
        return [], "; ".join(errors)
    return taken, None


async def _snapshot(revert: SnapshotRevert, vmstate: bool, keep: int) -> Outcome[None]:
    await snapshot_vm(revert, vmstate, keep)
    return Outcome(None, revert.run)


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
    for r in results:
        note = journal.entries.get((r.host, r.stack))
        if note is None:
            continue
        r.rollback = note
        if r.result == "healthy":
            r.result = "rolled-back"
        if (r.host, r.stack) in journal.failed:
            r.result = "failed"
            r.error = (r.error + "; " if r.error else "") + note
    return results


def _not_run(change: Change, why: str) -> StackResult:
    return StackResult(change.phase, change.host, change.stack, change.action, "not-run", reason=why,
                       release=change.current_release)


async def _run_phase(run: Rollout, changes: list[Change]) -> tuple[list[StackResult], list[Held]]:
    by_host: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_host[change.host].append(change)
    held: list[Held] = []

    async def host_lane(lane: list[Change]) -> list[StackResult]:
        limit = asyncio.Semaphore(run.desired.inventory.defaults.max_parallel)

        async def one(change: Change) -> StackResult:
            async with limit:
                if change.action == "unchanged":
                    return StackResult(change.phase, change.host, change.stack, "unchanged", "unchanged",
                                       reason=change.reason, release=change.current_release)
                if change.phase == ORPHANS:
                    return await _retire(run, change)
                deploy = Held(lambda: deploy_stack(run, change))
                held.append(deploy)
                try:
                    return await deploy.result()
                except Exception as exc:
                    return StackResult(change.phase, change.host, change.stack, change.action, "failed",
                                       reason=change.reason, error=f"internal error: {exc!r}")

        return list(await asyncio.gather(*(one(c) for c in lane)))

    lanes = await asyncio.gather(*(host_lane(lane) for lane in by_host.values()))
    order = {(c.host, c.stack): i for i, c in enumerate(changes)}
    return sorted((r for lane in lanes for r in lane), key=lambda r: order[(r.host, r.stack)]), held


async def deploy_stack(run: Rollout, change: Change) -> Outcome[StackResult]:
    """Stage, up, health gate, record: the runbook for one stack on one host. Returns the
    result and the undo; ``Held`` stages the undo on the stack's transaction and rolls it
    back at once if the stack failed, so it returns to its previous release."""
    inv, desired = run.desired.inventory, run.desired
    stack = desired.stacks[change.stack]
    spec = inv.stack(stack.name)
    host, state_dir = change.host, inv.state_dir(change.host)
    previous = run.surveys[host].releases.get(stack.name)
    release = new_release_id()
    started = time.monotonic()
    result = StackResult(change.phase, host, stack.name, change.action, "failed", reason=change.reason,
                         release=release)
    image_map: dict[str, str] = {}
    undo = StackUndo(run.pool, run.journal, host, state_dir, stack.name, release, previous,
                     tuple(previous.services) if previous else (), spec.health.checks,
                     inv.health_timeout_s(stack.name))
    marker = json.dumps({"release": release, "previous": previous.id if previous else None,
                         "flow_run_id": run.flow_run_id, "started_at": utc_now(), "commit": desired.commit})
    armed = False  # the host changed (compose up was attempted): a failure must be undone
    try:
        image_map = await stage(run.pool, host, state_dir, stack.name, release, stack.compose, stack.images,
                                spec.pull, stack.env_files)
        armed = True
        await start(run.pool, host, state_dir, stack.name, release, marker, sorted(stack.env_files))
        gate = await health_gate(run.pool, host, stack.name, stack.services, spec.health.checks,
                                 inv.health_timeout_s(stack.name), spec.health.containers)
        result.probe_output = gate.probe_output or None
        if not gate.ok:
            result.error = f"health gate failed: {gate.reason}"
    except Exception as exc:
        result.error = str(exc) or type(exc).__name__
    if result.error:
        result.logs = await container_logs(run.pool[host], stack.name) if run.pool[host].connected else None
    record = ReleaseRecord(
        id=release, stack=stack.name, host=host, commit=desired.commit, config_hash=stack.config_hash,
        images=image_map, created_at=utc_now(), flow_run_id=run.flow_run_id,
        status="failed" if result.error else "active", source=desired.source, services=list(stack.services),
        secret_versions=stack.secret_versions, env_files=sorted(stack.env_files))
    try:
        await record_release(run.pool, state_dir, record, inv.defaults.keep_releases,
                             previous.id if previous else None)
    except HomelabError as exc:
        result.error = result.error or f"healthy, but the release record was not written: {exc}"
    result.duration_s = time.monotonic() - started
    if not result.error:
        result.result = "healthy"
    return Outcome(result, undo.run if armed else None, failed=bool(result.error))


async def _retire(run: Rollout, change: Change) -> StackResult:
    if not run.prune:
        return StackResult(change.phase, change.host, change.stack, "remove", "kept",
                           reason=change.reason + " (run with --prune to remove it)", release=change.current_release)
    started = time.monotonic()
    transport = run.pool[change.host]
    result = StackResult(change.phase, change.host, change.stack, "remove", "removed", reason=change.reason,
                         release=change.current_release)
    try:
        await transport.run(compose_down(change.stack))
        current = f"{releases_dir(run.desired.inventory.state_dir(change.host), change.stack)}/current"
        await transport.run(["rm", "-f", "--", current])
    except HomelabError as exc:
        result.result, result.error = "failed", str(exc)
    result.duration_s = time.monotonic() - started
    return result
