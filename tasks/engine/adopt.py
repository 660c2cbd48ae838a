"""``homelab import``: read the compose projects running on a host and write them as stack
folders plus an inventory fragment. Three round trips: the project list, each project's
working dir and compose files, then the files those reference. Nothing on the host changes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from model.adoption import AdoptedProject, adopt, referenced_files
from model.desired import DesiredState
from model.errors import HomelabError, UsageError
from model.inventory import NAME
from model.yamlpos import YamlSyntaxError, load_with_lines
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.host_commands.adopt import list_projects, parse_project_files, parse_projects, read_project

FRAGMENT = "homelab.fragment.yaml"


@dataclass(frozen=True)
class Imported:
    stack: str
    files: list[str]  # written into the stack folder
    notes: list[str]  # what was not copied, and why
    entry: dict  # the stack's inventory entry


async def import_projects(desired: DesiredState, host: str, projects: list[str] | None, into: Path) -> list[Imported]:
    if host not in desired.inventory.hosts:
        raise UsageError(f"unknown host {host!r} (known: {', '.join(desired.inventory.hosts)})")
    targets = [t for t in ssh_targets(desired, all_hosts=True) if t.name == host]
    async with HostPool(targets) as pool:
        running = {p.name: p for p in parse_projects((await pool[host].run(list_projects())).stdout)}
        wanted = projects or sorted(running)
        unknown = [p for p in wanted if p not in running]
        if unknown:
            raise UsageError(f"no compose project {', '.join(unknown)} on {host} "
                             f"(running: {', '.join(sorted(running)) or 'none'})")
        done = []
        for name in wanted:
            done.append(await _import_one(pool, host, running[name].name, running[name].config_files, into))
    fragment = {"phases": {"adopted": {"stacks": {}}}}
    target = into / FRAGMENT
    if target.exists():
        try:
            fragment = load_with_lines(target.read_text()).data or fragment
        except YamlSyntaxError as exc:
            raise UsageError(f"{target}:{exc.line or 1}: {exc}; fix the file, or move it away and run again") from exc
    stacks = fragment.setdefault("phases", {}).setdefault("adopted", {}).setdefault("stacks", {})
    for item in done:
        stacks[item.stack] = item.entry
    target.write_text("# Written by `homelab import`: move these stacks into a phase of homelab.yaml.\n"
                      + yaml.safe_dump(fragment, sort_keys=False))
    return done


async def _import_one(pool: HostPool, host: str, name: str, config_files: tuple[str, ...], into: Path) -> Imported:
    if not re.fullmatch(NAME, name):
        raise UsageError(f"project {name!r} is not a valid stack name ({NAME})")
    folder = into / "stacks" / name
    if folder.exists():
        raise UsageError(f"{folder} exists already; import into another folder, or remove it first")
    first = parse_project_files((await pool[host].run(read_project(name, [*config_files, ".env"]))).stdout)
    if not first.working_dir:
        raise HomelabError(f"{host}: project {name} has no container with a working-dir label")
    missing = [f for f in config_files if f not in first.files]
    if missing:
        raise HomelabError(f"{host}: project {name}: cannot read its compose file(s) {', '.join(missing)}")
    wanted: list[str] = []
    env_names = {".env"}
    for path in config_files:
        refs, env_refs = referenced_files(first.files[path].decode("utf-8", "replace"))
        wanted += [r for r in refs if r not in wanted]
        env_names |= set(env_refs)
    second = parse_project_files((await pool[host].run(read_project(name, wanted))).stdout) if wanted else first
    files = {**first.files, **second.files}
    project = AdoptedProject(name=name, working_dir=first.working_dir, compose_files=config_files, files=files)
    adoption = adopt(project, host, env_names)
    for relative, data in adoption.files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    not_files = [ref for ref in wanted if str(PurePosixPath(first.working_dir) / ref) not in files]
    notes = [*adoption.skipped, *(f"{ref}: a folder or missing on the host; not imported (copy config folders "
                                  "into the stack folder by hand; leave data folders on the host)"
                                  for ref in not_files)]
    return Imported(name, sorted(adoption.files), notes, adoption.stack)
