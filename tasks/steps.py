"""The Prefect tasks a deploy is made of: one per remote step, so the UI shows each one.

Retries apply to transient SSH failures only (``is_transient``); a failed health gate is a
result, not an exception, and is never retried.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from deployments.inventory import HealthCheck
from tasks.compose import image_ids, pull_images, release_compose_file, release_dir, stage_release, start_release
from tasks.errors import RemoteCommandError
from tasks.facts import HostSurvey
from tasks.health import GateResult, wait_healthy
from tasks.releases import ReleaseRecord, commit_release
from tasks.remote import HostPool, is_transient
from tasks.secrets import RenderedEnvFile
from tasks.survey import read_survey


def _retry_if_transient(task, task_run, state) -> bool:
    return is_transient(state.data if isinstance(state.data, BaseException) else None)


# Connections are live objects: never hash or persist task inputs.
REMOTE = {"cache_policy": NONE, "persist_result": False, "retries": 2, "retry_delay_seconds": 1,
          "retry_condition_fn": _retry_if_transient}


@task(name="survey-host", task_run_name="survey {host}", **REMOTE)
async def survey_host(pool: HostPool, host: str, state_dir: str, gpu: bool,
                      lock_owner: str | None = None) -> HostSurvey:
    return await read_survey(pool, host, state_dir, gpu, lock_owner)


@task(name="stage-release", task_run_name="stage {stack}@{host}", **REMOTE)
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


@task(name="compose-up", task_run_name="up {stack}@{host}", **REMOTE)
async def start(pool: HostPool, host: str, state_dir: str, stack: str, release: str, marker: str,
                env_files: list[str] | None = None) -> None:
    """Mark the stack pending, install its env files and bring the release up."""
    await pool[host].run(start_release(state_dir, stack, release, marker, env_files or []))


@task(name="health-gate", task_run_name="health {stack}@{host}", **REMOTE)
async def health_gate(pool: HostPool, host: str, stack: str, services: tuple[str, ...],
                      checks: list[HealthCheck], timeout_s: float, require_containers: bool) -> GateResult:
    return await wait_healthy(pool[host], stack, services, checks, timeout_s, require_containers)


@task(name="record-release", task_run_name="record {record.stack}@{record.host}", **REMOTE)
async def record_release(pool: HostPool, state_dir: str, record: ReleaseRecord, keep: int,
                         previous: str | None) -> None:
    await pool[record.host].run(
        commit_release(state_dir, record.stack, record.id, keep, activate=record.status == "active",
                       protect=previous),
        input=record.to_json())
