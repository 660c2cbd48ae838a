"""Reading compose projects that run on a host (``homelab import``): the project list, and
a project's working directory and files. Files travel base64-encoded, one per line."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from tasks.host_commands.sections import split_blocks
from tasks.host_commands.shell import sh

# Arguments: project, then files (absolute, or relative to the project's working dir).
READ_PROJECT = r"""p=$1; shift
wd=$(docker ps -a --filter "label=com.docker.compose.project=$p" \
  --format '{{.Label "com.docker.compose.project.working_dir"}}' | head -n 1)
echo "@@workdir $wd"
for f in "$@"; do
  case "$f" in /*) ;; *) f=$wd/$f ;; esac
  [ -f "$f" ] && { echo "@@file $f"; base64 -w0 < "$f"; echo; }
done
exit 0"""


@dataclass(frozen=True)
class RunningProject:
    name: str
    status: str
    config_files: tuple[str, ...]


@dataclass(frozen=True)
class ProjectFiles:
    working_dir: str
    files: dict[str, bytes] = field(repr=False)  # host path -> content


def list_projects() -> list[str]:
    return ["docker", "compose", "ls", "--all", "--format", "json"]


def parse_projects(text: str) -> list[RunningProject]:
    rows = json.loads(text or "[]") or []
    return [RunningProject(row["Name"], row.get("Status", ""),
                           tuple(f for f in (row.get("ConfigFiles") or "").split(",") if f)) for row in rows]


def read_project(project: str, files: list[str]) -> list[str]:
    return sh(READ_PROJECT, "read-project", project, *files)


def parse_project_files(text: str) -> ProjectFiles:
    working_dir = next((line.removeprefix("@@workdir").strip() for line in text.splitlines()
                        if line.startswith("@@workdir")), "")
    files = {header: base64.b64decode(body.strip()) for _, header, body in split_blocks(text, "file")}
    return ProjectFiles(working_dir, files)
