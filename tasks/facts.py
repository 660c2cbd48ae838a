"""Host facts, read in ONE round trip: engine, free disk, GPUs, release records, containers.

One remote script prints tagged sections; ``parse_survey`` turns them into a ``HostSurvey``.
Pre-flight and planning both work from this value, which is what makes a no-op deploy fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tasks.releases import ReleaseRecord

MARK = "@@homelab:"

SURVEY = r"""
state=$1; gpu=$2; owner=${3:-}
section() { printf '\n%s%s\n' '@@homelab:' "$1"; }
section engine
# `docker ps` answering is the engine check (`docker version` costs 0.4 s on podman)
if ids=$(docker ps -aq --filter label=com.docker.compose.project 2>&1); then echo ok; else
  printf '%s\n@@failed 1\n' "$ids"; ids=""; fi
section disk
mkdir -p "$state" 2>&1 && df -Pk "$state" 2>&1 || echo "@@failed $?"
section releases
for cur in "$state"/releases/*/current; do
  [ -f "$cur" ] || continue
  dir=${cur%/current}; id=$(cat "$cur")
  printf '@@release %s %s\n' "${dir##*/}" "$id"
  cat "$dir/$id/release.json" 2>/dev/null; echo
done
section pending
for mark in "$state"/releases/*/pending; do
  [ -f "$mark" ] || continue
  dir=${mark%/pending}; printf '@@pending %s\n' "${dir##*/}"; cat "$mark"; echo
done
section lock
# with an owner (a deploy), take the host's deploy lock if it is free, in this same round trip
if [ -n "$owner" ] && mkdir "$state/lock" 2>/dev/null; then
  { printf '%s\n' "$owner" > "$state/lock/owner.json" && echo "@@acquired"; } || rm -rf "$state/lock"
fi
cat "$state/lock/owner.json" 2>/dev/null
section containers
# a container may vanish between ps and inspect: inspect then prints the rest and exits 1
out=$([ -z "$ids" ] || docker inspect $ids 2>/dev/null)
[ -n "$out" ] && printf '%s\n' "$out" || echo "[]"
section gpu
if [ "$gpu" = 1 ]; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits 2>&1 \
    || echo "@@failed $?"
fi
section end
"""


def survey(state_dir: str, gpu: bool, lock_owner: str | None = None) -> list[str]:
    """Read the host's facts; with ``lock_owner`` (JSON) also take its deploy lock if free."""
    argv = ["sh", "-c", SURVEY, "homelab-survey", state_dir, "1" if gpu else "0"]
    return [*argv, lock_owner] if lock_owner else argv


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int
    utilization_pct: int


@dataclass(frozen=True)
class HostSurvey:
    engine_ok: bool
    engine_error: str | None
    disk_free_mb: int | None
    disk_error: str | None
    releases: dict[str, ReleaseRecord]  # stack -> current release
    broken_releases: dict[str, str]  # stack -> why its record could not be read
    containers: tuple[Container, ...]
    gpus: tuple[Gpu, ...] = ()
    gpu_error: str | None = None
    complete: bool = True  # False when the output was cut off
    pending: dict[str, dict] = field(default_factory=dict)  # stack -> marker of a deploy that never finished
    lock: dict | None = None  # owner of the host's deploy lock, if held
    lock_acquired: bool = False  # this survey took the lock

    def project(self, stack: str) -> tuple[Container, ...]:
        return tuple(c for c in self.containers if c.project == stack)


def split_sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _failed(text: str) -> bool:
    return "@@failed" in text


def parse_survey(text: str) -> HostSurvey:
    sections = split_sections(text)
    engine = sections.get("engine", "")
    engine_ok = bool(engine) and not _failed(engine)
    disk_free, disk_error = parse_df(sections.get("disk", ""))
    releases, broken = parse_releases(sections.get("releases", ""))
    gpus, gpu_error = parse_nvidia_smi(sections.get("gpu", ""))
    return HostSurvey(
        engine_ok=engine_ok,
        engine_error=None if engine_ok else _clean(engine) or "no answer from `docker ps`",
        disk_free_mb=disk_free,
        disk_error=disk_error,
        releases=releases,
        broken_releases=broken,
        containers=parse_containers(sections.get("containers", "[]")) if engine_ok else (),
        gpus=gpus,
        gpu_error=gpu_error,
        complete="end" in sections,
        pending=parse_pending(sections.get("pending", "")),
        lock=_json_object(sections.get("lock", "").replace("@@acquired", "")),
        lock_acquired="@@acquired" in sections.get("lock", ""),
    )


def parse_pending(text: str) -> dict[str, dict]:
    """``@@pending <stack>`` blocks -> stack -> marker (unreadable markers still count)."""
    found: dict[str, dict] = {}
    for block in text.split("@@pending ")[1:]:
        stack, _, body = block.partition("\n")
        found[stack.strip()] = _json_object(body) or {"unreadable": body.strip()[:200]}
    return found


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return {"unreadable": text.strip()[:200]}
    return value if isinstance(value, dict) else None


def _clean(text: str) -> str:
    return " ".join(line for line in text.splitlines() if not line.startswith("@@failed"))[:500]


def parse_df(text: str) -> tuple[int | None, str | None]:
    """``df -Pk`` output -> free MiB. The last line is the filesystem row."""
    if _failed(text) or not text:
        return None, _clean(text) or "no output from df"
    fields = text.splitlines()[-1].split()
    try:
        return int(fields[3]) // 1024, None
    except (IndexError, ValueError):
        return None, f"unexpected df output: {text[:200]!r}"


def parse_releases(text: str) -> tuple[dict[str, ReleaseRecord], dict[str, str]]:
    releases: dict[str, ReleaseRecord] = {}
    broken: dict[str, str] = {}
    blocks = text.split("@@release ")
    for block in blocks[1:]:
        header, _, body = block.partition("\n")
        parts = header.split()
        if len(parts) != 2:
            continue
        stack, release_id = parts
        try:
            record = ReleaseRecord.from_json(body)
        except (ValueError, TypeError) as exc:
            broken[stack] = f"release {release_id}: unreadable record ({type(exc).__name__})"
            continue
        releases[stack] = record
    return releases, broken


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


GPU_FIELDS = "index,name,memory.total,memory.used,utilization.gpu"


def parse_nvidia_smi(text: str) -> tuple[tuple[Gpu, ...], str | None]:
    """``nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits`` -> GPUs."""
    if not text:
        return (), None
    if _failed(text):
        return (), _clean(text) or "nvidia-smi failed"
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
        try:
            gpus.append(Gpu(int(parts[0]), parts[1], _int(parts[2]), _int(parts[3]), _int(parts[4])))
        except ValueError:
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
    return tuple(gpus), None


def _int(value: str) -> int:
    """nvidia-smi prints "[N/A]" for fields a board does not report."""
    return -1 if value.startswith("[") else int(float(value))


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
