"""One stack on one host: stage, up, health gate, record (the runbook), and retiring an orphan.

``deploy_stack`` returns the result and, once compose-up was attempted, the undo; ``Held``
stages the undo on the stack's transaction and rolls it back at once if the stack failed, so
it returns to its previous release.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

from model.desired import DesiredStack, DesiredState
from model.errors import HomelabError
from model.masking import MASKER
from model.releases import ReleaseRecord, new_release_id, utc_now
from tasks.engine import progress
from tasks.engine.health import container_logs
from tasks.engine.held_transaction import Outcome
from tasks.engine.hooks import HookOutcome
from tasks.engine.host_pool import HostPool
from tasks.engine.plan import Change
from tasks.engine.release_payload import payload, to_recreate
from tasks.engine.report import StackResult
from tasks.engine.stack_lock import run_locked
from tasks.engine.step_set import Steps
from tasks.engine.undo import RollbackJournal, StackUndo
from tasks.host_commands.compose import ComposeProject, compose_down, project_dir, release_project
from tasks.host_commands.leftovers import retire_stack_files
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
    hooks: dict[str, HookOutcome] = field(default_factory=dict)

    @property
    def data_touched(self) -> bool:
        """A migrate ran: the undo must run the restore hook too."""
        return "migrate" in self.hooks


async def deploy_stack(run: StackRun, change: Change) -> Outcome[StackResult]:
    inv, desired = run.desired.inventory, run.desired
    host = change.host
    stack = desired.stacks[change.stack].for_host(host)
    state_dir = inv.state_dir(host)
    previous = run.surveys[host].releases.get(stack.name)
    started = time.monotonic()
    record = new_record(run.desired, run.flow_run_id, stack, host, new_release_id())
    undo = StackUndo(pool=run.pool, journal=run.journal, host=host, state_dir=state_dir, stack=stack.name,
                     release=record.id, previous=previous, undone_files=record.files,
                     services=tuple(previous.services) if previous else (),
                     checks=inv.stack(stack.name).health.checks, health_timeout_s=inv.health_timeout_s(stack.name))
    attempt = await _attempt(run, change, stack, record, previous)
    progress.note(change.phase, host, stack.name, "failed" if attempt.error else "healthy")
    logs = None
    if attempt.error and run.pool[host].connected:
        logs = await container_logs(run.pool[host], stack.name)
    record = replace(record, images=attempt.images, status="failed" if attempt.error else "active",
                     hooks={name: outcome.to_record() for name, outcome in attempt.hooks.items()})
    if attempt.data_touched:
        undo = replace(undo, restore_hook=inv.stack(stack.name).hooks.restore)
    error = attempt.error
    try:
        await run.steps.record(run.pool, state_dir, record, inv.defaults.keep_releases,
                               previous.id if previous else None)
    except HomelabError as exc:
        error = error or f"healthy, but the release record was not written: {exc}"
    result = StackResult(phase=change.phase, host=host, stack=stack.name, action=change.action,
                         result="failed" if error else "healthy", reason=change.reason, release=record.id,
                         duration_s=time.monotonic() - started, error=error, logs=logs,
                         probe_output=attempt.probe_output, from_release=change.current_release,
                         images_from=change.current_images, images_to=tuple(sorted(set(stack.images.values()))))
    return Outcome(result, (lambda: run.steps.undo(undo)) if attempt.armed else None, failed=bool(error))


def new_record(desired: DesiredState, flow_run_id: str | None, stack: DesiredStack, host: str,
               release: str) -> ReleaseRecord:
    """The record of the release about to be made; images and status are filled in after."""
    return ReleaseRecord(
        id=release, stack=stack.name, host=host, commit=desired.commit, config_hash=stack.config_hash,
        images={}, created_at=utc_now(), flow_run_id=flow_run_id, status="pending", source=desired.source,
        services=list(stack.services), secret_versions=stack.secret_versions, env_files=sorted(stack.env_files),
        files=stack.files.manifest(), compose_files=list(stack.compose.compose_files),
        profiles=list(stack.compose.profiles), env=dict(stack.compose.env), project_dir=stack.project_dir,
        mounts={service: list(paths) for service, paths in stack.mounts.items()})


async def _attempt(run: StackRun, change: Change, stack: DesiredStack, record: ReleaseRecord,
                   previous: ReleaseRecord | None) -> _Attempt:
    """Stage, up and health gate; every failure becomes the attempt's error."""
    inv, steps = run.desired.inventory, run.steps
    host, state_dir = change.host, inv.state_dir(change.host)
    spec = inv.stack(stack.name)
    marker = json.dumps({"release": record.id, "previous": previous.id if previous else None,
                         "flow_run_id": run.flow_run_id, "started_at": utc_now(), "commit": run.desired.commit})
    project = release_project(state_dir, record)
    hooks = spec.hooks
    outcomes: dict[str, HookOutcome] = {}
    images: dict[str, str] = {}
    armed = False

    def step(name: str) -> None:
        progress.note(change.phase, host, stack.name, name)

    async def hook(name: str, where: ComposeProject) -> str | None:
        step(name)
        outcomes[name] = outcome = await steps.hook(run.pool, host, where, name, getattr(hooks, name),
                                                    state_dir=state_dir)
        return None if outcome.ok else f"{outcome.describe()}: {outcome.output.strip()[-800:]}"

    try:
        step("staging")
        upload = payload(stack, state_dir, previous)
        images = await steps.stage(run.pool, host, state_dir, stack.name, record.id, upload, stack.images, spec.pull)
        if hooks.backup and previous and (error := await hook("backup", release_project(state_dir, previous))):
            return _Attempt(error, None, images, armed, outcomes)
        armed = True
        step("starting")
        await steps.start(run.pool, host, state_dir, stack.name, record.id, marker, project,
                          list(upload.dropped), sorted(stack.env_files),
                          to_recreate(previous.files if previous else None, record.files, stack.mounts))
        if hooks.migrate and (error := await hook("migrate", project)):
            return _Attempt(error, None, images, armed, outcomes)
        step("health")
        gate = await steps.health_gate(run.pool, host, stack.name, stack.services, spec.health.checks,
                                       inv.health_timeout_s(stack.name), spec.health.containers)
    except Exception as exc:
        return _Attempt(MASKER.mask(str(exc)) or type(exc).__name__, None, images, armed, outcomes)
    error = None if gate.ok else f"health gate failed: {gate.reason}"
    return _Attempt(error, gate.probe_output or None, images, armed, outcomes)


async def retire_stack(pool: HostPool, desired: DesiredState, change: Change, *, prune: bool,
                       record: ReleaseRecord | None = None) -> StackResult:
    """An orphan (no longer placed on this host): with ``--prune`` taken down, and no file of it
    holding a secret is left (``record``, its current release, names its project directory);
    else kept."""
    fields = dict(phase=change.phase, host=change.host, stack=change.stack, action="remove",
                  release=change.current_release, from_release=change.current_release,
                  images_from=change.current_images)
    if not prune:
        return StackResult(**fields, result="kept", reason=change.reason + " (run with --prune to remove it)")
    started = time.monotonic()
    transport = pool[change.host]
    error = None
    state_dir = desired.inventory.state_dir(change.host)
    folder = project_dir(state_dir, change.stack, record.project_dir if record else None)
    try:
        await run_locked(transport, state_dir, change.stack,
                         retire_stack_files(state_dir, change.stack, folder, compose_down(change.stack)))
    except HomelabError as exc:
        error = str(exc)
    return StackResult(**fields, result="failed" if error else "removed", reason=change.reason, error=error,
                       duration_s=time.monotonic() - started)
