"""The audit side of a flow run: every record it appends names who the run acts for (the
webhook delivery, the nightly schedule, the UI deployment, the CLI user), and at its end the
log's head is anchored in a Prefect variable (tasks/engine/audit_anchor.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prefect import get_run_logger
from prefect.runtime import deployment, flow_run

from model.actors import actor_for_run, current_user
from tasks.engine import audit


def run_actor() -> str:
    return actor_for_run(flow_run.get_tags() or [], deployment.get_name(), current_user())


async def anchor_quietly() -> None:
    """Anchor the head; a refusal (the anchored record is gone: tampering) is logged loudly, an
    unreachable Prefect quietly. Never raises: the run's own outcome stands."""
    try:
        found = await audit.anchor()
    except Exception as exc:
        get_run_logger().warning("audit anchor not written: %s", type(exc).__name__)
        return
    for problem in found.problems:
        get_run_logger().error("audit: %s", problem)


@contextlib.asynccontextmanager
async def audited_run() -> AsyncIterator[str]:
    """Inside: records name this run's actor. On the way out, success or not: the anchor."""
    with audit.acting_as(run_actor()) as actor:
        try:
            yield actor
        finally:
            await anchor_quietly()
