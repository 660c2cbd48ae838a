"""Pre-flight: survey every targeted host at once (one round trip each), and judge the facts
before anything on any host changes. No Prefect needed (``plan``, ``status``).

A host fails pre-flight if it cannot be reached, its container engine does not answer, its
state directory's disk is short of space, (for GPU hosts) ``nvidia-smi`` shows no GPU, or a
GPU stack does not fit its host's cards (``gpu_fit.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from model.desired import DesiredState
from tasks.engine.busy_clock import current_phase
from tasks.engine.gpu_fit import gpu_problems, host_needs_gpu_query, placements
from tasks.engine.host_pool import HostPool
from tasks.engine.results import error_text, gather_hosts
from tasks.host_commands.survey import HostSurvey, parse_survey, survey

SurveyFn = Callable[[HostPool, str, str, bool, str | None], Awaitable[HostSurvey]]


async def read_survey(pool: HostPool, host: str, state_dir: str, gpu: bool,
                      lock_owner: str | None = None) -> HostSurvey:
    result = await pool[host].run(survey(state_dir, gpu, lock_owner), check=False, timeout=60)
    return parse_survey(result.stdout)


async def survey_hosts(pool: HostPool, desired: DesiredState, read: SurveyFn = read_survey,
                       lock_owner: str | None = None, hosts: list[str] | None = None,
                       ) -> tuple[dict[str, HostSurvey], dict[str, list[str]]]:
    """Facts for every targeted host, plus pre-flight problems by host (empty if all pass).
    With ``lock_owner``, each free host's deploy lock is taken in the same round trip."""
    inv = desired.inventory
    hosts = hosts or desired.targeted_hosts()
    current_phase.set("preflight")
    found = await gather_hosts(hosts, lambda h: read(pool, h, inv.state_dir(h), host_needs_gpu_query(desired, h),
                                                     lock_owner))
    failed, surveys = found.failed, found.succeeded
    problems: dict[str, list[str]] = {}
    for host in hosts:
        judged = [error_text(host, failed[host])] if host in failed else [*preflight_problems(
            surveys[host], min_free_disk_mb=inv.min_free_disk_mb(host), gpu=inv.hosts[host].gpu),
            *gpu_problems(surveys[host], placements(desired, host, surveys[host]))]
        if judged:
            problems[host] = judged
    return surveys, problems


def preflight_problems(facts: HostSurvey, *, min_free_disk_mb: int, gpu: bool) -> list[str]:
    problems = []
    if not facts.complete:
        problems.append("the host survey was cut off; the host may be overloaded")
    if facts.engine_error:
        problems.append(f"container engine not answering: {facts.engine_error}")
    if facts.disk_error:
        problems.append(f"cannot measure free disk: {facts.disk_error}")
    elif facts.disk_free_mb is not None and facts.disk_free_mb < min_free_disk_mb:
        problems.append(f"only {facts.disk_free_mb} MiB free in the state directory, "
                        f"{min_free_disk_mb} MiB required")
    if gpu:
        if facts.gpu_error:
            problems.append(f"GPU host but nvidia-smi failed: {facts.gpu_error}")
        elif not facts.gpus:
            problems.append("GPU host but nvidia-smi lists no GPU")
    return problems
