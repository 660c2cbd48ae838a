"""The remote steps of one stack's deploy: stage, start, health gate, record.

Plain async functions; ``tasks/steps.py`` wraps each as a Prefect task (one per step, so the
UI shows each one), and a run picks its versions through ``step_set.Steps``.
"""

from __future__ import annotations

import time

from model.errors import RemoteCommandError
from model.inventory import HealthCheck
from model.releases import ReleaseRecord
from tasks.engine import metrics
from tasks.engine.health import GateResult, wait_healthy
from tasks.engine.host_pool import HostPool
from tasks.engine.release_payload import Payload
from tasks.engine.stack_lock import run_locked
from tasks.host_commands.compose import ComposeProject, compose_recreate, image_ids, pull_images
from tasks.host_commands.layout import release_dir
from tasks.host_commands.release_files import commit_release, stage_release, start_release


async def stage(pool: HostPool, host: str, state_dir: str, stack: str, release: str, upload: Payload,
                images: dict[str, str], pull: str) -> dict[str, str]:
    """Put the release's files in place in one round trip (a tar of what changed, rendered
    secrets at mode 0600, via stdin only) and make sure its images are present (pulling per
    policy). Returns image ref -> id."""
    transport = pool[host]
    refs = list(dict.fromkeys(images.values()))
    where = release_dir(state_dir, stack, release)
    found = await run_locked(transport, state_dir, stack, stage_release(where, upload.base, upload.dropped, refs),
                             input=upload.tar, check=False)
    if found.exit_status == 97:
        raise RemoteCommandError(host, f"upload of {where}", 97, found.stderr)
    if pull == "always" or (not found.ok and pull == "missing"):
        await transport.run(pull_images(refs))
        found = await transport.run(image_ids(refs), check=False)
    if not found.ok:
        raise RemoteCommandError(host, f"image check for {stack}", found.exit_status,
                                 f"image(s) not present and pull policy is {pull!r}: {found.stderr.strip()}")
    return dict(zip(refs, found.stdout.split(), strict=False))


async def start(pool: HostPool, host: str, state_dir: str, stack: str, release: str, marker: str,
                project: ComposeProject, dropped: list[str] | None = None, env_files: list[str] | None = None,
                recreate: list[str] | None = None) -> None:
    """Mark the stack pending, install its files and env files, bring the release up, and
    recreate the services whose mounted files changed (compose alone would not)."""
    await run_locked(pool[host], state_dir, stack,
                     start_release(state_dir, stack, release, marker, project, dropped or [], env_files or []))
    if recreate:
        await run_locked(pool[host], state_dir, stack, compose_recreate(project, recreate))


async def health_gate(pool: HostPool, host: str, stack: str, services: tuple[str, ...],
                      checks: list[HealthCheck], timeout_s: float, require_containers: bool) -> GateResult:
    started = time.monotonic()
    gate = await wait_healthy(pool[host], stack, services, checks, timeout_s, require_containers)
    metrics.record_health(host, stack, time.monotonic() - started, gate.ok)
    return gate


async def record_release(pool: HostPool, state_dir: str, record: ReleaseRecord, keep: int,
                         previous: str | None) -> None:
    await run_locked(pool[record.host], state_dir, record.stack,
                     commit_release(state_dir, record.stack, record.id, keep, activate=record.status == "active",
                                    protect=previous),
                     input=record.to_json())
