"""A stack's containers: waiting on the host until they settle, reading ``docker inspect``, and
judging them against the stack's services."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tasks.host_commands.shell import sh

# Polls on the host (no SSH round trip per poll) until the project has at least $2 containers
# and none is still starting, or $3 seconds pass; then prints `docker inspect` JSON ("[]" if
# none). A container may vanish between ps and inspect: inspect then prints the rest, exits 1.
WAIT_SETTLED = r"""
project=$1; want=$2; deadline=$(( $(date +%s) + $3 ))
while :; do
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project") || exit
  if [ -n "$ids" ]; then
    states=$(docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' \
      $ids 2>/dev/null)
    if [ "$(printf '%s\n' "$states" | grep -c .)" -ge "$want" ] &&
       ! printf '%s\n' "$states" | grep -Eq '^(created|restarting|configured)/|/starting$'; then break; fi
  fi
  [ "$(date +%s)" -ge "$deadline" ] && break
  sleep 0.3
done
out=$([ -z "$ids" ] || docker inspect $ids 2>/dev/null)
[ -n "$out" ] && printf '%s\n' "$out" || echo "[]"
"""



def wait_settled(stack: str, services: int, timeout_s: float) -> list[str]:
    """Wait on the host until the stack's containers settle; prints their inspect JSON."""
    return sh(WAIT_SETTLED, "wait-settled", stack, str(services), str(max(0, int(timeout_s))))


@dataclass(frozen=True, kw_only=True)
class Container:
    id: str
    name: str
    project: str
    service: str
    image: str  # reference as configured
    image_id: str
    state: str  # running, exited, created, restarting, dead, paused
    health: str  # healthy, unhealthy, starting, none
    exit_code: int = 0
    health_output: str = ""  # last healthcheck output

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "none")


def parse_containers(text: str) -> tuple[Container, ...]:
    """``docker inspect`` JSON (Docker or podman's Docker API) -> containers."""
    try:
        raw = json.loads(text or "[]")
    except json.JSONDecodeError:
        return ()
    out = []
    for item in raw if isinstance(raw, list) else []:
        config = item.get("Config") or {}
        labels = config.get("Labels") or {}
        state = item.get("State") or {}
        health = state.get("Health") or {}
        log = health.get("Log") or []
        check = (config.get("Healthcheck") or {}).get("Test") or []
        has_check = bool(check) and check[0] != "NONE"
        # podman reports "" before the first check ran: that is "starting", not "no check"
        health_status = health.get("Status") or ("starting" if has_check else "none")
        out.append(Container(
            id=item.get("Id", "")[:64],
            name=(item.get("Name") or "").lstrip("/"),
            project=labels.get("com.docker.compose.project", ""),
            service=labels.get("com.docker.compose.service", ""),
            image=config.get("Image", ""),
            image_id=item.get("Image", ""),
            state=state.get("Status", "unknown"),
            health=health_status,
            exit_code=int(state.get("ExitCode") or 0),
            health_output=(log[-1].get("Output") or "").strip()[-500:] if log else "",
        ))
    return tuple(out)


@dataclass(frozen=True)
class ProjectHealth:
    """Where a stack's containers stand against its services."""

    ok: bool
    final: bool  # True when waiting longer cannot help (exited, unhealthy)
    reason: str
    containers: tuple[Container, ...] = field(default=())


def judge_project(services: tuple[str, ...], containers: tuple[Container, ...],
                  require_health: bool = True) -> ProjectHealth:
    """Is every service of the stack running (and healthy, where it has a healthcheck)?"""
    by_service = {c.service: c for c in containers}
    if not services:  # services unknown (an old record): judge whatever the project runs
        if not containers:
            return ProjectHealth(False, False, "no containers", containers)
        services = tuple(by_service)
    missing = [s for s in services if s not in by_service]
    if missing:
        return ProjectHealth(False, False, f"no container for service(s) {', '.join(missing)}", containers)
    for service in services:
        c = by_service[service]
        if c.state in ("exited", "dead"):
            return ProjectHealth(False, True, f"{c.name} {c.state} (exit code {c.exit_code})", containers)
        if c.state != "running":
            return ProjectHealth(False, False, f"{c.name} is {c.state}", containers)
        if require_health and c.health == "unhealthy":
            detail = f": {c.health_output}" if c.health_output else ""
            return ProjectHealth(False, True, f"{c.name} is unhealthy{detail}", containers)
        if require_health and c.health == "starting":
            return ProjectHealth(False, False, f"{c.name} health is starting", containers)
    return ProjectHealth(True, True, "all containers running and healthy", containers)
