"""Prefect automations shipped as code; ``homelab serve`` applies them once its deployments exist.

``rollback-failed-stack``: on ``homelab.deploy.stack.failed``, run the ``rollback`` deployment for
that host and stack, back to the exact release that was current before the failed deploy (the
event's ``homelab.restore-release``). A run's own undo usually got there first; the rollback is
then a no-op ("unchanged"), and where that undo failed or the run died, this brings the stack
back. Only events that name a release to restore match: a stack's first deploy has none, and a
rollback "to the previous one" could go one release too far. Only production stacks match: a
staging copy (``<stack>-staging``) is not a stack of the inventory the rollback deployment serves.
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import EventTrigger, Posture

log = logging.getLogger("homelab.serve")

ROLLBACK_DEPLOYMENT = "rollback-homelab/rollback"
ROLLBACK_AUTOMATION = "homelab: roll back a failed stack"


def rollback_failed_stack(deployment_id: UUID) -> Automation:
    return Automation(
        name=ROLLBACK_AUTOMATION,
        description="A stack failed in a deploy: return it to the release it ran before (homelab rollback).",
        trigger=EventTrigger(
            expect={"homelab.deploy.stack.failed"},
            # production only: a staging copy is not a stack of the served inventory
            match={"prefect.resource.id": "homelab.stack.*", "homelab.restore-release": "*",
                   "homelab.environment": "production"},
            for_each={"prefect.resource.id"},  # one rollback per failed stack, not one per burst
            posture=Posture.Reactive, threshold=1, within=0),
        actions=[RunDeployment(
            source="selected", deployment_id=deployment_id,
            parameters={"hosts": ["{{ event.resource['homelab.host'] }}"],
                        "stacks": ["{{ event.resource['homelab.stack'] }}"],
                        "to_release": "{{ event.resource['homelab.restore-release'] }}"})])


async def apply_automations() -> None:
    """Create the shipped automations, or bring them up to date; never fails the caller."""
    try:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(ROLLBACK_DEPLOYMENT)
        wanted = rollback_failed_stack(deployment.id)
        try:
            existing = await Automation.aread(name=ROLLBACK_AUTOMATION)
        except ValueError:
            await wanted.acreate()
            log.info("automation created: %s", ROLLBACK_AUTOMATION)
            return
        wanted.id = existing.id
        wanted.enabled = existing.enabled  # an operator who disabled it keeps it disabled
        await wanted.aupdate()
    except Exception as exc:
        log.warning("automation %r not applied (%s: %s); the rollback deployment still works by hand",
                    ROLLBACK_AUTOMATION, type(exc).__name__, exc)
