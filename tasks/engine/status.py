"""``homelab status``: what each host runs now, from one survey per host."""

from __future__ import annotations

from model.desired import DesiredState
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.preflight import read_survey
from tasks.engine.results import gather_hosts
from tasks.host_commands.survey import HostSurvey


def host_status(desired: DesiredState, host: str, facts: HostSurvey) -> dict:
    """Stacks the inventory places on ``host`` plus any other stack with a release there."""
    placed = [s.name for s in desired.stacks.values() if host in s.hosts]
    stacks = {}
    for name in dict.fromkeys([*placed, *facts.releases, *facts.pending]):
        record = facts.releases.get(name)
        containers = facts.project(name)
        stacks[name] = {
            "release": record.id if record else None,
            "commit": record.commit if record else None,
            "placed": name in placed,
            "healthy": bool(containers) and all(c.ok for c in containers),
            "interrupted": facts.pending.get(name),  # a deploy that never finished (the next deploy redoes it)
            "containers": [{"id": c.id[:12], "name": c.name, "image": c.image, "state": c.state,
                            "health": c.health} for c in containers],
        }
    return {"reachable": True, "engine": facts.engine_ok, "disk_free_mb": facts.disk_free_mb,
            "stacks": stacks}


async def collect_status(desired: DesiredState) -> dict:
    inv = desired.inventory
    hosts = desired.targeted_hosts()
    async with HostPool(ssh_targets(desired)) as pool:
        found = await gather_hosts(hosts, lambda h: read_survey(pool, h, inv.state_dir(h), inv.hosts[h].gpu))
    failed, surveys = found.failed, found.succeeded
    return {"hosts": {host: {"reachable": False, "error": str(failed[host]), "stacks": {}} if host in failed
                      else host_status(desired, host, surveys[host]) for host in hosts}}
