"""The remote steps of one stack's deploy: stage, start, health gate, record.

Plain async functions; ``tasks/steps.py`` wraps each as a Prefect task (one per step, so the
UI shows each one), and a run picks its versions through ``step_set.Steps``.
"""

from __future__ import annotations

from model.env_files import RenderedEnvFile
from model.errors import RemoteCommandError
from model.inventory import HealthCheck
from model.releases import ReleaseRecord
from tasks.engine.health import GateResult, wait_healthy
from tasks.engine.host_pool import HostPool
from tasks.host_commands.compose import image_ids, pull_images
from tasks.host_commands.layout import release_compose_file, release_dir
from tasks.host_commands.release_files import commit_release, stage_release, start_release


async def stage(pool: HostPool, host: str, state_dir: str, stack: str, release: str, compose: bytes,
                images: dict[str, str], pull: str, env_files: dict[str, RenderedEnvFile] | None = None,
                ) -> dict[str, str]:
    """Put the release's compose file (and rendered secrets, mode 0600, via stdin only) in
    place and make sure its images are present (pulling per policy). Returns image ref -> id."""
    transport = pool[host]
    for name, rendered in (env_files or {}).items():
        await transport.upload(f"{release_dir(state_dir, stack, release)}/{name}", rendered.content, 0o600)
    path = release_compose_file(state_dir, stack, release)
    refs = list(dict.fromkeys(images.values()))
    if pull == "always":
        await transport.upload(path, compose)
        await transport.run(pull_images(refs))
        found = await transport.run(image_ids(refs), check=False)
    else:
        found = await transport.run(stage_release(path, refs), input=compose, check=False)
        if found.exit_status == 97:
            raise RemoteCommandError(host, f"upload of {path}", 97, found.stderr)
        if not found.ok and pull == "missing":
            await transport.run(pull_images(refs))
            found = await transport.run(image_ids(refs), check=False)
    if not found.ok:
        raise RemoteCommandError(host, f"image check for {stack}", found.exit_status,
                                 f"image(s) not present and pull policy is {pull!r}: {found.stderr.strip()}")
    return dict(zip(refs, found.stdout.split(), strict=False))


async def start(pool: HostPool, host: str, state_dir: str, stack: str, release: str, marker: str,
                env_files: list[str] | None = None) -> None:
    """Mark the stack pending, install its env files and bring the release up."""
    await pool[host].run(start_release(state_dir, stack, release, marker, env_files or []))


async def health_gate(pool: HostPool, host: str, stack: str, services: tuple[str, ...],
                      checks: list[HealthCheck], timeout_s: float, require_containers: bool) -> GateResult:
    return await wait_healthy(pool[host], stack, services, checks, timeout_s, require_containers)


async def record_release(pool: HostPool, state_dir: str, record: ReleaseRecord, keep: int,
                         previous: str | None) -> None:
    await pool[record.host].run(
        commit_release(state_dir, record.stack, record.id, keep, activate=record.status == "active",
                       protect=previous),
        input=record.to_json())
