"""One stack on one host: stage, up, health gate, record (the runbook), and retiring an orphan.

``deploy_stack`` returns the result and, once compose-up was attempted, the undo; ``Held``
stages the undo on the stack's transaction and rolls it back at once if the stack failed, so
it returns to its previous release.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from model.desired import DesiredState
from model.errors import HomelabError
from model.releases import ReleaseRecord, new_release_id, utc_now
from tasks.engine.health import container_logs
from tasks.engine.held_transaction import Outcome
from tasks.engine.host_pool import HostPool
from tasks.engine.plan import Change
from tasks.engine.report import StackResult
from tasks.engine.step_set import Steps
from tasks.engine.undo import RollbackJournal, StackUndo
from tasks.host_commands.compose import compose_down
from tasks.host_commands.layout import current_file
from tasks.host_commands.survey import HostSurvey


@dataclass(frozen=True, kw_only=True)
class StackRun:
    """What deploying one stack needs from the run."""

    pool: HostPool
    desired: DesiredState
    surveys: dict[str, HostSurvey]
    flow_run_id: str | None
    steps: Steps
    journal: RollbackJournal


@dataclass(frozen=True)
class _Attempt:
    error: str | None
    probe_output: str | None
    images: dict[str, str]
    armed: bool  # compose up was attempted: a failure must be undone


async def deploy_stack(run: StackRun, change: Change) -> Outcome[StackResult]:
    inv, desired = run.desired.inventory, run.desired
    stack, host = desired.stacks[change.stack], change.host
    previous = run.surveys[host].releases.get(stack.name)
    release = new_release_id()
    started = time.monotonic()
    undo = StackUndo(pool=run.pool, journal=run.journal, host=host, state_dir=inv.state_dir(host), stack=stack.name,
                     release=release, previous=previous, services=tuple(previous.services) if previous else (),
                     checks=inv.stack(stack.name).health.checks, health_timeout_s=inv.health_timeout_s(stack.name))
    attempt = await _attempt(run, change, release, previous)
    logs = None
    if attempt.error and run.pool[host].connected:
        logs = await container_logs(run.pool[host], stack.name)
    record = ReleaseRecord(
        id=release, stack=stack.name, host=host, commit=desired.commit, config_hash=stack.config_hash,
        images=attempt.images, created_at=utc_now(), flow_run_id=run.flow_run_id,
        status="failed" if attempt.error else "active", source=desired.source, services=list(stack.services),
        secret_versions=stack.secret_versions, env_files=sorted(stack.env_files))
    error = attempt.error
    try:
        await run.steps.record(run.pool, inv.state_dir(host), record, inv.defaults.keep_releases,
                               previous.id if previous else None)
    except HomelabError as exc:
        error = error or f"healthy, but the release record was not written: {exc}"
    result = StackResult(phase=change.phase, host=host, stack=stack.name, action=change.action,
                         result="failed" if error else "healthy", reason=change.reason, release=release,
                         duration_s=time.monotonic() - started, error=error, logs=logs,
                         probe_output=attempt.probe_output)
    return Outcome(result, undo.run if attempt.armed else None, failed=bool(error))


async def _attempt(run: StackRun, change: Change, release: str, previous: ReleaseRecord | None) -> _Attempt:
    """Stage, up and health gate; every failure becomes the attempt's error."""
    inv, steps = run.desired.inventory, run.steps
    stack, host, state_dir = run.desired.stacks[change.stack], change.host, inv.state_dir(change.host)
    spec = inv.stack(stack.name)
    marker = json.dumps({"release": release, "previous": previous.id if previous else None,
                         "flow_run_id": run.flow_run_id, "started_at": utc_now(), "commit": run.desired.commit})
    images: dict[str, str] = {}
    armed = False
    try:
        images = await steps.stage(run.pool, host, state_dir, stack.name, release, stack.compose, stack.images,
                                   spec.pull, stack.env_files)
        armed = True
        await steps.start(run.pool, host, state_dir, stack.name, release, marker, sorted(stack.env_files))
        gate = await steps.health_gate(run.pool, host, stack.name, stack.services, spec.health.checks,
                                       inv.health_timeout_s(stack.name), spec.health.containers)
    except Exception as exc:
        return _Attempt(str(exc) or type(exc).__name__, None, images, armed)
    error = None if gate.ok else f"health gate failed: {gate.reason}"
    return _Attempt(error, gate.probe_output or None, images, armed)


async def retire_stack(pool: HostPool, desired: DesiredState, change: Change, *, prune: bool) -> StackResult:
    """An orphan (no longer placed on this host): taken down with ``--prune``, else kept."""
    fields = dict(phase=change.phase, host=change.host, stack=change.stack, action="remove",
                  release=change.current_release)
    if not prune:
        return StackResult(**fields, result="kept", reason=change.reason + " (run with --prune to remove it)")
    started = time.monotonic()
    transport = pool[change.host]
    error = None
    try:
        await transport.run(compose_down(change.stack))
        await transport.run(["rm", "-f", "--", current_file(desired.inventory.state_dir(change.host), change.stack)])
    except HomelabError as exc:
        error = str(exc)
    return StackResult(**fields, result="failed" if error else "removed", reason=change.reason, error=error,
                       duration_s=time.monotonic() - started)
