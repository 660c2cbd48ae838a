"""Adopting a compose project that already runs: what to write into the config repo.

Pure: given the project's files as read from its host, it decides the stack folder's files,
which env files hold secrets (never copied: they become ``secrets:`` entries to fill in
Vault), and the inventory fragment. The first deploy then uses the project's own directory
and file names, so compose finds nothing to recreate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from model.yamlpos import YamlSyntaxError, load_with_lines

SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|PRIVATE|AUTH", re.IGNORECASE)


@dataclass(frozen=True)
class AdoptedProject:
    name: str
    working_dir: str
    compose_files: tuple[str, ...]  # host paths, in -f order
    files: dict[str, bytes] = field(repr=False, default_factory=dict)  # host path -> content


@dataclass(frozen=True)
class Adoption:
    files: dict[str, bytes] = field(repr=False)  # stack-folder-relative path -> content
    stack: dict  # the inventory entry
    skipped: list[str]  # what was not copied, and why (no values)


def relative_to(path: str, working_dir: str) -> str | None:
    """A host path as a path inside the working dir, or None when it is outside."""
    inside = PurePosixPath(path)
    root = PurePosixPath(working_dir)
    return str(inside.relative_to(root)) if inside.is_relative_to(root) else None


def referenced_files(compose_text: str) -> tuple[list[str], list[str]]:
    """Relative paths a compose file reads from its directory (bind sources, ``env_file:``,
    ``configs:``/``secrets:`` files), and which of them are env files. Named volumes and
    absolute paths are not the stack's."""
    try:
        doc = load_with_lines(compose_text).data or {}  # a host's file: aliases are bounded there
    except YamlSyntaxError:
        return [], []
    if not isinstance(doc, dict):
        return [], []
    found: list[object] = []
    env_files: list[object] = []
    for service in (doc.get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if isinstance(source, str) and source.startswith("."):
                found.append(source)
        items = service.get("env_file") or []
        env_files += [i.get("path") if isinstance(i, dict) else i
                      for i in ([items] if isinstance(items, str | dict) else items)]
    for kind in ("configs", "secrets"):
        for spec in (doc.get(kind) or {}).values():
            if isinstance(spec, dict) and isinstance(spec.get("file"), str) and not spec["file"].startswith("/"):
                found.append(spec["file"])

    def clean(paths: list[object]) -> list[str]:
        return list(dict.fromkeys(str(PurePosixPath(p)) for p in paths
                                  if isinstance(p, str) and ".." not in PurePosixPath(p).parts))

    return clean(found + env_files), clean(env_files)


def env_keys(data: bytes) -> list[str]:
    keys = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.append(line.split("=", 1)[0].removeprefix("export ").strip())
    return keys


def adopt(project: AdoptedProject, host: str, env_file_names: set[str]) -> Adoption:
    """``env_file_names``: the relative paths that are env files (``.env`` and ``env_file:``)."""
    files: dict[str, bytes] = {}
    secrets: list[dict] = []
    skipped: list[str] = []
    compose = [relative_to(path, project.working_dir) or PurePosixPath(path).name for path in project.compose_files]
    for path, data in sorted(project.files.items()):
        relative = relative_to(path, project.working_dir)
        if relative is None:
            relative = PurePosixPath(path).name
            skipped.append(f"{path}: outside the working dir {project.working_dir}; copied as {relative}")
        keys = env_keys(data) if relative in env_file_names else []
        secret = [k for k in keys if SECRET_KEY.search(k)]
        if secret:
            if "/" in relative:
                skipped.append(f"{relative}: holds secrets ({', '.join(secret)}) but is not in the project's "
                               "top folder; move it there to render it from Vault")
                continue
            stem = relative.lstrip(".").replace(".", "-") or "env"
            secrets.append({"path": f"homelab/{project.name}/{stem}", "keys": keys, "env_file": relative})
            skipped.append(f"{relative}: holds secrets ({', '.join(secret)}); not copied. Store its keys at "
                           f"homelab/{project.name}/{stem} in Vault; the deploy renders the file from there")
            continue
        files[relative] = data
    stack: dict = {"hosts": [host], "project_dir": project.working_dir,
                   "compose": compose, "description": f"adopted from {host}"}
    if secrets:
        stack["secrets"] = secrets
    return Adoption(files=files, stack=stack, skipped=skipped)
