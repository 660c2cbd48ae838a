"""One deploy under the host locks: secrets, pre-flight, plan, then phases in order, each
health-gated. The release pipeline calls it for staging and for production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from prefect import get_run_logger
from prefect.runtime import flow_run

from flows.reporting import publish_plan, publish_report
from model.desired import DesiredState
from model.errors import DeployFailed
from model.policies import FailurePolicy
from tasks.engine import audit
from tasks.engine.events import RunEvents
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.image_refresh import refresh_hosts
from tasks.engine.locks import hold_hosts
from tasks.engine.plan import Prepared, make_plan
from tasks.engine.prefect_slots import prefect_host_slots
from tasks.engine.report import DeployReport, StackResult
from tasks.engine.rollout import PhaseCheck, Rollout, Verify, apply_plan
from tasks.engine.secrets_sync import resolve_secrets
from tasks.engine.step_set import Steps
from tasks.engine.worker_session import worker_hosts, worker_runs, worker_steps, worker_transports
from tasks.host_commands.lock import LockOwner
from tasks.host_commands.survey import HostSurvey
from tasks.steps import PREFECT_STEPS


class UnderLocks(Protocol):
    """Work that must happen while the run holds the host locks (a secret rotation, a sync)."""

    async def before_plan(self, pool: HostPool, desired: DesiredState) -> Prepared: ...

    async def after_rollout(self, desired: DesiredState, results: Sequence[StackResult]) -> None: ...

    def to_json(self) -> dict: ...  # fields for the run's report


async def deploy_locked(desired: DesiredState, *, started: float, full: bool, prune: bool = False,
                        on_failure: FailurePolicy | None = None, refresh_images: bool = False,
                        lock_wait_s: float = 90, under_locks: UnderLocks | None = None, verify: Verify | None = None,
                        phase_check: PhaseCheck | None = None, kind: str = "deploy", notes: dict | None = None,
                        events: RunEvents | None = None) -> DeployReport:
    """The deploy itself: secrets, locks, facts, plan, phases, report. Raises DeployFailed
    (with the report) unless every stack is healthy. ``verify`` runs last, before anything is
    committed (staging's smoke tests); ``phase_check`` after each phase (the verifier agent);
    ``kind`` names the report (deploy, staging); ``events`` tells the agents of each phase and
    each failed or undone stack."""
    run_id = str(flow_run.get_id())
    owner = LockOwner.for_run(run_id, desired.commit)
    workers = worker_hosts(desired)
    steps = worker_steps(PREFECT_STEPS) if workers else PREFECT_STEPS
    # the worker hosts' runs start first: their start-up overlaps the secrets sync
    async with worker_transports(desired, run_id) as on_workers:
        desired = await asyncio.to_thread(resolve_secrets, desired)  # Vault problems stop the run here
        return await _deploy_on(desired, HostPool(ssh_targets(desired, worker_hosts=workers), others=on_workers),
                                steps, run_id=run_id, owner=owner, started=started, full=full, prune=prune,
                                on_failure=on_failure, refresh_images=refresh_images, lock_wait_s=lock_wait_s,
                                under_locks=under_locks, verify=verify, phase_check=phase_check, kind=kind,
                                notes=notes, events=events)


async def _deploy_on(desired: DesiredState, hosts: HostPool, steps: Steps, *, run_id: str, owner: LockOwner,
                     started: float, full: bool, prune: bool, on_failure: FailurePolicy | None, refresh_images: bool,
                     lock_wait_s: float, under_locks: UnderLocks | None, verify: Verify | None,
                     phase_check: PhaseCheck | None, kind: str, notes: dict | None,
                     events: RunEvents | None) -> DeployReport:
    async with hosts as pool, hold_hosts(pool, desired, owner, lock_wait_s, steps.survey) as surveys:
        redeploy = {}
        if under_locks:
            desired, redeploy = await under_locks.before_plan(pool, desired)
        interrupted = report_interrupted(surveys)
        fresh = await refresh_hosts(pool, desired, surveys, everything=refresh_images,
                                    read=steps.refresh_images)
        for warning in fresh.warnings:
            get_run_logger().warning("%s", warning)
        plan = make_plan(desired, surveys, full=full, fresh_images=fresh.ids, redeploy=redeploy)
        if plan.pending:
            await publish_plan(plan)
        run = Rollout(pool=pool, desired=desired, surveys=surveys, flow_run_id=run_id, steps=steps,
                      prune=prune, on_failure=on_failure, verify=verify, phase_check=phase_check, events=events)
        # Prefect's per-host slots, for the hosts this run will change (a no-op changes none)
        async with prefect_host_slots(sorted({c.host for c in plan.pending}), lock_wait_s):
            results = await apply_plan(run, plan)
        if under_locks:
            await under_locks.after_rollout(desired, results)
        report = DeployReport(kind=kind, source=desired.source, commit=desired.commit, flow_run_id=run_id,
                              stacks=results, remote_seconds=pool.remote_seconds(), wall_s=time.monotonic() - started,
                              interrupted=interrupted, snapshots=run.snapshot_log.entries,
                              notes={**(notes or {}), **(under_locks.to_json() if under_locks else {}),
                                     **({"worker_runs": runs} if (runs := worker_runs(pool)) else {})})
    await publish_report(report)
    audit.append(f"{kind}.finished", flow_run_id=run_id, source=desired.source, commit=desired.commit,
                 result="success" if report.ok else "failed",
                 stacks={f"{s.host}/{s.stack}": s.result for s in report.stacks if s.result != "unchanged"})
    if not report.ok:
        raise DeployFailed(report.summary(), report)
    return report


def report_interrupted(surveys: dict[str, HostSurvey]) -> list[dict]:
    """Deploys a killed run left half-done; the plan redeploys them, health-gated."""
    found = [{"host": host, "stack": stack, **marker} for host, facts in surveys.items()
             for stack, marker in facts.pending.items()]
    for item in found:
        get_run_logger().warning("interrupted deploy found: %s on %s, release %s by flow run %s (started %s); "
                                 "redeploying it health-gated", item["stack"], item["host"], item.get("release"),
                                 item.get("flow_run_id"), item.get("started_at"))
    return found
