"""Survey every targeted host at once and judge pre-flight; no Prefect needed (``plan``, ``status``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from deployments.desired import DesiredState
from tasks.facts import HostSurvey, parse_survey, survey
from tasks.preflight import preflight_problems
from tasks.remote import HostPool, SshTarget, current_phase

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
    outcomes = await asyncio.gather(
        *(read(pool, h, inv.state_dir(h), inv.hosts[h].gpu, lock_owner) for h in hosts), return_exceptions=True)
    surveys: dict[str, HostSurvey] = {}
    problems: dict[str, list[str]] = {}
    for host, outcome in zip(hosts, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            problems[host] = [(str(outcome) or type(outcome).__name__).removeprefix(f"{host}: ")]
            continue
        surveys[host] = outcome
        found = preflight_problems(outcome, min_free_disk_mb=inv.min_free_disk_mb(host), gpu=inv.hosts[host].gpu)
        if found:
            problems[host] = found
    return surveys, problems


def ssh_targets(desired: DesiredState, all_hosts: bool = False) -> list[SshTarget]:
    inv = desired.inventory

    def local(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (desired.inventory_dir / p).absolute()

    return [SshTarget(name, host.address, host.port, host.user, local(inv.ssh.known_hosts),
                      local(inv.ssh.identity), inv.ssh.connect_timeout_s, inv.ssh.command_timeout_s)
            for name, host in inv.hosts.items() if all_hosts or name in desired.targeted_hosts()]
