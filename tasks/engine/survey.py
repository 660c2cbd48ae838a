"""Survey every targeted host at once and judge pre-flight; no Prefect needed (``plan``, ``status``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from model.desired import DesiredState
from tasks.engine.busy_clock import current_phase
from tasks.engine.host_pool import HostPool
from tasks.engine.preflight import preflight_problems
from tasks.engine.results import error_text, gather_hosts
from tasks.engine.transport import SshTarget
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
    found = await gather_hosts(hosts, lambda h: read(pool, h, inv.state_dir(h), inv.hosts[h].gpu, lock_owner))
    failed, surveys = found.failed, found.succeeded
    problems: dict[str, list[str]] = {}
    for host in hosts:
        judged = [error_text(host, failed[host])] if host in failed else preflight_problems(
            surveys[host], min_free_disk_mb=inv.min_free_disk_mb(host), gpu=inv.hosts[host].gpu)
        if judged:
            problems[host] = judged
    return surveys, problems


def ssh_targets(desired: DesiredState, all_hosts: bool = False) -> list[SshTarget]:
    inv = desired.inventory

    def local(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (desired.inventory_dir / p).absolute()

    return [SshTarget(name=name, address=host.address, port=host.port, user=host.user,
                      known_hosts=local(inv.ssh.known_hosts), identity=local(inv.ssh.identity),
                      connect_timeout_s=inv.ssh.connect_timeout_s, command_timeout_s=inv.ssh.command_timeout_s)
            for name, host in inv.hosts.items() if all_hosts or name in desired.targeted_hosts()]
