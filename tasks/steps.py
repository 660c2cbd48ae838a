"""The Prefect tasks a run is made of: one per remote step, so the UI shows each one.

Each wraps the engine's plain step of the same signature (the parameter names feed the task
run names). Retries apply to transient SSH failures only (``is_transient``); a failed health
gate is a result, not an exception, and is never retried. Connections are live objects, so
task inputs are never hashed or persisted.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from tasks.engine import stack_steps
from tasks.engine.hooks import run_hook
from tasks.engine.image_refresh import read_fresh
from tasks.engine.phase_snapshots import take_snapshot
from tasks.engine.preflight import read_survey
from tasks.engine.release_history import read_history
from tasks.engine.step_set import Steps
from tasks.engine.transport import is_transient
from tasks.engine.undo import restore


def _retry_if_transient(task, task_run, state) -> bool:
    return is_transient(state.data if isinstance(state.data, BaseException) else None)


LOCAL = {"cache_policy": NONE, "persist_result": False}
REMOTE = {**LOCAL, "retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": _retry_if_transient}

PREFECT_STEPS = Steps(
    survey=task(name="survey-host", task_run_name="survey {host}", **REMOTE)(read_survey),
    stage=task(name="stage-release", task_run_name="stage {stack}@{host}", **REMOTE)(stack_steps.stage),
    start=task(name="compose-up", task_run_name="up {stack}@{host}", **REMOTE)(stack_steps.start),
    health_gate=task(name="health-gate", task_run_name="health {stack}@{host}", **REMOTE)(stack_steps.health_gate),
    record=task(name="record-release", task_run_name="record {record.stack}@{record.host}",
                **REMOTE)(stack_steps.record_release),
    snapshot=task(name="snapshot-vm", task_run_name="snapshot {snap.host} {snap.name}", **LOCAL)(take_snapshot),
    restore=task(name="restore-release", task_run_name="restore {undo.stack}@{undo.host}", **LOCAL)(restore),
    list_releases=task(name="list-releases", task_run_name="releases {host}", **REMOTE)(read_history),
    hook=task(name="stack-hook", task_run_name="{name} {project.name}@{host}", **LOCAL)(run_hook),
    refresh_images=task(name="refresh-images", task_run_name="pull images {host}", **REMOTE)(read_fresh),
)
