"""Loading the inventory: YAML to a validated ``Inventory``, with every problem at once.

Every problem is reported as ``file:line: field: what is wrong`` and raised together as one
``InventoryError``; nothing is contacted before the inventory is valid.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from model.errors import InventoryError
from model.inventory import NAME, Inventory, Phase, Stack, StagingForm
from model.stack_files import check_relative
from model.yamlpos import Path_, YamlDocument, YamlSyntaxError, format_path, load_with_lines


def load_inventory(path: Path, display: str | None = None) -> Inventory:
    """Parse and validate ``path``. ``display`` is the name used in messages (e.g. with @ref)."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError([f"{shown}: cannot read inventory: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise InventoryError([f"{shown}: not UTF-8 text (byte {exc.start})"]) from exc
    try:
        doc = load_with_lines(text)
    except YamlSyntaxError as exc:
        where = f"{shown}:{exc.line}" if exc.line else shown
        raise InventoryError([f"{where}: {exc}"]) from exc
    problems = [f"{shown}:{line}: {format_path(key_path)}: duplicate key" for key_path, line in doc.duplicates]
    if not isinstance(doc.data, dict):
        raise InventoryError([*problems, f"{shown}:1: the inventory must be a mapping with hosts and phases"])
    try:
        inventory = Inventory.model_validate(doc.data)
    except ValidationError as exc:
        problems += [_problem(shown, doc, tuple(err["loc"]), _message(err)) for err in exc.errors()]
        raise InventoryError(problems) from None
    problems += [_problem(shown, doc, where, what) for where, what in _semantic_problems(inventory, path.parent)]
    if problems:
        raise InventoryError(problems)
    return inventory


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required field is missing"
    return err["msg"].removeprefix("Value error, ")


def _problem(shown: str, doc: YamlDocument, where: Path_, what: str) -> str:
    line = doc.line_of(where)
    return f"{shown}:{line}: {format_path(where)}: {what}" if line else f"{shown}: {format_path(where)}: {what}"


def _semantic_problems(inv: Inventory, root: Path) -> list[tuple[Path_, str]]:
    """Cross-field rules pydantic cannot express: names, references, cycles, files."""
    found: list[tuple[Path_, str]] = []
    for host in inv.hosts:
        if not re.fullmatch(NAME, host):
            found.append((("hosts", host), f"host name {host!r} must match {NAME}"))
    seen_stacks: dict[str, str] = {}
    for phase_name, phase in inv.phases.items():
        at = ("phases", phase_name)
        if not re.fullmatch(NAME, phase_name):
            found.append((at, f"phase name {phase_name!r} must match {NAME}"))
        for index, dep in enumerate(phase.depends_on):
            if dep not in inv.phases:
                found.append(((*at, "depends_on", index), f"unknown phase {dep!r}"))
            elif phase.depends_on.index(dep) != index:
                found.append(((*at, "depends_on", index), f"duplicate dependency {dep!r}"))
            elif dep == phase_name:
                found.append(((*at, "depends_on", index), "a phase cannot depend on itself"))
        for stack_name, stack in phase.stacks.items():
            where = (*at, "stacks", stack_name)
            if not re.fullmatch(NAME, stack_name):
                found.append((where, f"stack name {stack_name!r} must match {NAME}"))
            if stack_name in seen_stacks:
                found.append((where, f"duplicate stack: already in phase {seen_stacks[stack_name]!r}"))
            seen_stacks.setdefault(stack_name, phase_name)
            for index, host in enumerate(stack.hosts):
                if host not in inv.hosts:
                    known = ", ".join(inv.hosts) or "none"
                    found.append(((*where, "hosts", index), f"unknown host {host!r} (known: {known})"))
                elif stack.hosts.index(host) != index:
                    found.append(((*where, "hosts", index), f"duplicate host {host!r}"))
            seen_keys: dict[tuple[str, str], int] = {}
            for index, secret in enumerate(stack.secrets):
                for key in secret.keys:
                    first = seen_keys.get((secret.env_file, key))
                    if first is not None:
                        found.append(((*where, "secrets", index, "keys"),
                                      f"{key} is already rendered into {secret.env_file} by secrets[{first}]"))
                    seen_keys.setdefault((secret.env_file, key), index)
            found += _stack_path_problems(root, stack_name, stack, where)
            for host in stack.per_host:
                if host not in stack.hosts:
                    found.append(((*where, "per_host", host), f"{host!r} is not one of the stack's hosts"))
    found += _staging_problems(inv, root, seen_stacks)
    cycle = _find_cycle(inv.phases)
    if cycle:
        found.append((("phases", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle)))
    return found


def _staging_problems(inv: Inventory, root: Path, stack_phase: dict[str, str]) -> list[tuple[Path_, str]]:
    """One staging host at most; a declared staging form needs it, a name for its copy, and its files."""
    found: list[tuple[Path_, str]] = []
    staging_hosts = [name for name, host in inv.hosts.items() if host.environment == "staging"]
    if len(staging_hosts) > 1:
        found.append((("hosts", staging_hosts[1], "environment"),
                      f"only one host can be the staging host (already {staging_hosts[0]!r})"))
    for index, phase in enumerate(inv.approval.not_needed.phases):
        if phase not in inv.phases:
            found.append((("approval", "not_needed", "phases", index), f"unknown phase {phase!r}"))
    for name, phase_name in stack_phase.items():
        stack = inv.phases[phase_name].stacks[name]
        if stack.staging is None or stack.staging is False:
            continue
        where = ("phases", phase_name, "stacks", name, "staging")
        if not staging_hosts:
            found.append((where, "a staging form needs a host with `environment: staging`"))
        copy = f"{name}-staging"
        if copy in stack_phase or not re.fullmatch(NAME, copy):
            found.append((where, f"its staging copy would be named {copy!r}, which is "
                                 + ("another stack" if copy in stack_phase else f"not a valid name ({NAME})")))
        if isinstance(stack.staging, StagingForm):
            for key, files in (("compose", stack.staging.override_files()), ("cpu_compose", stack.staging.cpu_files())):
                for compose in files:
                    if why := check_relative(compose, "compose file"):
                        found.append(((*where, key), why))
                    elif not (root / stack.folder(name) / compose).is_file():
                        found.append(((*where, key), f"compose file not found: {root / stack.folder(name) / compose}"))
    return found


def _stack_path_problems(root: Path, name: str, stack: Stack, where: Path_) -> list[tuple[Path_, str]]:
    """The stack folder, compose files and globs stay inside the config repo."""
    if stack.dir is not None and (why := check_relative(stack.dir.rstrip("/"), "dir")):
        return [((*where, "dir"), why.replace("stack folder", "config repo"))]
    found: list[tuple[Path_, str]] = []
    at = (*where, "compose") if stack.compose else where
    for index, compose in enumerate(stack.compose_files(name)):
        spot = (*at, index) if isinstance(stack.compose, list) else at
        if why := check_relative(compose, "compose file"):
            found.append((spot, why))
        elif not (root / stack.folder(name) / compose).is_file():
            found.append((spot, f"compose file not found: {root / stack.folder(name) / compose}"))
    for key in ("files", "exclude"):
        for index, pattern in enumerate(getattr(stack, key) or []):
            if why := check_relative(pattern.lstrip("/").rstrip("/") or ".", "glob"):
                found.append(((*where, key, index), why))
    if stack.project_dir is not None and ".." in PurePosixPath(stack.project_dir).parts:
        found.append(((*where, "project_dir"), "project_dir must not contain `..`"))
    return found


def _find_cycle(phases: dict[str, Phase]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = 1
        for dep in phases[name].depends_on:
            if dep not in phases:
                continue
            if state.get(dep) == 1:
                return [*trail[trail.index(dep):], dep] if dep in trail else [name, dep]
            if dep not in state and (found := visit(dep, [*trail, dep])):
                return found
        state[name] = 2
        return None

    for name in phases:
        if name not in state and (found := visit(name, [name])):
            return found
    return None
