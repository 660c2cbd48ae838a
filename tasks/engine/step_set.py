"""The steps a run is made of, as one value: plain async functions by default, or the Prefect
tasks of ``tasks/steps.py`` (so the UI shows each step) when a flow runs them.

The engine calls steps only through a ``Steps``; it never imports Prefect tasks itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tasks.engine import stack_steps
from tasks.engine.hooks import run_hook
from tasks.engine.image_refresh import read_fresh
from tasks.engine.phase_snapshots import take_snapshot
from tasks.engine.preflight import read_survey
from tasks.engine.release_history import read_history
from tasks.engine.smoke import run_smoke_tests
from tasks.engine.undo import StackUndo, restore

Step = Callable[..., Awaitable[Any]]


async def run_undo(undo: StackUndo) -> None:
    """A failed or rolled-back stack's undo (a transaction's on_rollback hook: plain, not a task)."""
    await undo.run()


@dataclass(frozen=True, kw_only=True)
class Steps:
    survey: Step = read_survey
    stage: Step = stack_steps.stage
    start: Step = stack_steps.start
    health_gate: Step = stack_steps.health_gate
    record: Step = stack_steps.record_release
    snapshot: Step = take_snapshot
    restore: Step = restore
    list_releases: Step = read_history
    refresh_images: Step = read_fresh
    hook: Step = run_hook
    undo: Step = run_undo
    smoke: Step = run_smoke_tests


PLAIN_STEPS = Steps()
