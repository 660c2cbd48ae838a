"""Host facts, read in ONE round trip: engine, free disk, GPUs, release records, pending
markers, the deploy lock and containers.

``survey`` is one remote script that prints tagged sections; ``parse_survey`` turns them into
a ``HostSurvey``. Pre-flight and planning both work from this value, which is what makes a
no-op deploy fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from model.releases import ReleaseRecord
from tasks.host_commands.containers import Container, parse_containers
from tasks.host_commands.gpu import APPS_QUERY, GPU_QUERY, Gpu, GpuProcess, parse_gpu_processes, parse_nvidia_smi
from tasks.host_commands.layout import CURRENT, PENDING, RELEASE_RECORD, RELEASES
from tasks.host_commands.sections import failed, failure_text, split_blocks, split_sections
from tasks.host_commands.shell import script, sh

SURVEY = script(rf"""
state=$1; gpu=$2; owner=${{3:-}}
section engine
# `docker ps` answering is the engine check (`docker version` costs 0.4 s on podman)
if ids=$(docker ps -aq --filter label=com.docker.compose.project 2>&1); then echo ok; else
  printf '%s\n@@failed 1\n' "$ids"; ids=""; fi
section disk
mkdir -p -- "$state" 2>&1 && df -Pk -- "$state" 2>&1 || echo "@@failed $?"
section releases
for cur in "$state"/{RELEASES}/*/{CURRENT}; do
  [ -f "$cur" ] || continue
  dir=${{cur%/{CURRENT}}}; id=$(cat "$cur")
  printf '@@release %s %s\n' "${{dir##*/}}" "$id"
  cat "$dir/$id/{RELEASE_RECORD}" 2>/dev/null; echo
done
section pending
for mark in "$state"/{RELEASES}/*/{PENDING}; do
  [ -f "$mark" ] || continue
  dir=${{mark%/{PENDING}}}; printf '@@pending %s\n' "${{dir##*/}}"; cat "$mark"; echo
done
section lock
# with an owner (a deploy), take the host's deploy lock if it is free, in this same round trip
[ -n "$owner" ] && take_lock "$state" "$owner"
lock_owner "$state"
section containers
# a container may vanish between ps and inspect: inspect then prints the rest and exits 1
out=$([ -z "$ids" ] || docker inspect $ids 2>/dev/null)
[ -n "$out" ] && printf '%s\n' "$out" || echo "[]"
section gpu
if [ "$gpu" = 1 ]; then
  {GPU_QUERY} 2>&1 || echo "@@failed $?"
fi
section gpu_apps
if [ "$gpu" = 1 ]; then
  {APPS_QUERY} 2>/dev/null || true
fi
section end
""", "section", "take_lock", "lock_owner")


def survey(state_dir: str, gpu: bool, lock_owner: str | None = None) -> list[str]:
    """Read the host's facts; with ``lock_owner`` (JSON) also take its deploy lock if free."""
    argv = sh(SURVEY, "homelab-survey", state_dir, "1" if gpu else "0")
    return [*argv, lock_owner] if lock_owner else argv


@dataclass(frozen=True, kw_only=True)
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
    gpu_processes: tuple[GpuProcess, ...] = ()
    complete: bool = True  # False when the output was cut off
    pending: dict[str, dict] = field(default_factory=dict)  # stack -> marker of a deploy that never finished
    lock: dict | None = None  # owner of the host's deploy lock, if held
    lock_acquired: bool = False  # this survey took the lock

    def project(self, stack: str) -> tuple[Container, ...]:
        return tuple(c for c in self.containers if c.project == stack)


def parse_survey(text: str) -> HostSurvey:
    sections = split_sections(text)
    engine = sections.get("engine", "")
    engine_ok = bool(engine) and not failed(engine)
    disk_free, disk_error = parse_df(sections.get("disk", ""))
    releases, broken = parse_releases(sections.get("releases", ""))
    gpus, gpu_error = parse_nvidia_smi(sections.get("gpu", ""))
    return HostSurvey(
        engine_ok=engine_ok,
        engine_error=None if engine_ok else failure_text(engine) or "no answer from `docker ps`",
        disk_free_mb=disk_free,
        disk_error=disk_error,
        releases=releases,
        broken_releases=broken,
        containers=parse_containers(sections.get("containers", "[]")) if engine_ok else (),
        gpus=gpus,
        gpu_error=gpu_error,
        gpu_processes=parse_gpu_processes(sections.get("gpu_apps", "")),
        complete="end" in sections,
        pending=parse_pending(sections.get("pending", "")),
        lock=_json_object(sections.get("lock", "").replace("@@acquired", "")),
        lock_acquired="@@acquired" in sections.get("lock", ""),
    )


def parse_pending(text: str) -> dict[str, dict]:
    """``@@pending <stack>`` blocks -> stack -> marker (unreadable markers still count)."""
    return {stack: _json_object(body) or {"unreadable": body.strip()[:200]}
            for _, stack, body in split_blocks(text, "pending")}


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return {"unreadable": text.strip()[:200]}
    return value if isinstance(value, dict) else None


def parse_df(text: str) -> tuple[int | None, str | None]:
    """``df -Pk`` output -> free MiB. The last line is the filesystem row."""
    if failed(text) or not text:
        return None, failure_text(text) or "no output from df"
    fields = text.splitlines()[-1].split()
    try:
        return int(fields[3]) // 1024, None
    except (IndexError, ValueError):
        return None, f"unexpected df output: {text[:200]!r}"


def parse_releases(text: str) -> tuple[dict[str, ReleaseRecord], dict[str, str]]:
    releases: dict[str, ReleaseRecord] = {}
    broken: dict[str, str] = {}
    for _, header, body in split_blocks(text, "release"):
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
