"""``homelab plan``: the deploy's own first half (secrets, survey, pre-flight, plan) without
taking locks or changing anything, and without Prefect."""

from __future__ import annotations

import logging

from model.desired import DesiredState
from model.errors import PreflightFailed
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.image_refresh import refresh_hosts
from tasks.engine.plan import Plan, make_plan
from tasks.engine.preflight import survey_hosts
from tasks.engine.secrets_sync import resolve_secrets


async def preview_plan(desired: DesiredState, *, full: bool, refresh_images: bool = False) -> Plan:
    """``full`` is False for ``--only`` runs, which never propose removals."""
    desired = resolve_secrets(desired)
    async with HostPool(ssh_targets(desired)) as pool:
        surveys, problems = await survey_hosts(pool, desired)
        if problems:
            raise PreflightFailed(problems)
        fresh = await refresh_hosts(pool, desired, surveys, everything=refresh_images)
    for warning in fresh.warnings:
        logging.getLogger("homelab").warning("%s", warning)
    return make_plan(desired, surveys, full=full, fresh_images=fresh.ids)
