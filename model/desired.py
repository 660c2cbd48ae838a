"""The desired state: a validated inventory plus the exact bytes of every stack's compose file.

Everything the planner compares against a host is computed here, locally, before any host
is contacted: the config hash of each stack and the images it needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from model.env_files import RenderedEnvFile
from model.errors import InventoryError
from model.inventory import Inventory, StackSecret, compose_path
from model.inventory_loader import load_inventory
from model.source import open_source
from model.yamlpos import YamlSyntaxError, format_path, load_with_lines


@dataclass(frozen=True, kw_only=True)
class DesiredStack:
    name: str
    phase: str
    hosts: tuple[str, ...]
    compose: bytes = field(repr=False)
    images: dict[str, str]  # service -> image reference
    config_hash: str  # of the compose file; with secrets, also of the secret versions (see with_secrets)
    secrets: tuple[StackSecret, ...] = ()
    env_files: dict[str, RenderedEnvFile] = field(default_factory=dict, repr=False)  # rendered from Vault
    secret_versions: dict[str, int] = field(default_factory=dict)  # KV path -> version

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.images)


@dataclass(frozen=True, kw_only=True)
class DesiredState:
    inventory: Inventory
    source: str  # inventory as shown to users, e.g. "homelab.yaml@v2"
    commit: str | None
    stacks: dict[str, DesiredStack]  # in phase order
    inventory_dir: Path = field(repr=False, default=Path("."))

    def with_secrets(self, env_files: dict[str, dict[str, RenderedEnvFile]]) -> DesiredState:
        """The same desired state with each stack's rendered env files (stack -> name -> file),
        whose Vault versions become part of the stack's config hash."""
        stacks = {}
        for name, stack in self.stacks.items():
            files = env_files.get(name, {})
            versions = {path: v for f in files.values() for path, v in f.versions.items()}
            stacks[name] = replace(stack, env_files=files, secret_versions=versions,
                                   config_hash=config_hash(stack.compose, versions))
        return replace(self, stacks=stacks)

    def targeted_hosts(self) -> list[str]:
        wanted = {host for stack in self.stacks.values() for host in stack.hosts}
        return [host for host in self.inventory.hosts if host in wanted]


def config_hash(compose: bytes, secret_versions: dict[str, int] | None = None) -> str:
    """Identity of what a stack runs from: the compose file and the Vault versions of its
    secrets (never their values). Equal hash means nothing to do."""
    digest = hashlib.sha256(compose)
    if secret_versions:
        digest.update(json.dumps(secret_versions, sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


def parse_compose_images(text: str, shown: str) -> dict[str, str]:
    """service -> image for a compose file; every service must name an image."""
    try:
        doc = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise InventoryError([f"{shown}:{exc.line or 1}: {exc}"]) from exc
    if doc.duplicates:
        raise InventoryError([f"{shown}:{line}: {format_path(path)}: duplicate key" for path, line in doc.duplicates])
    services = doc.data.get("services") if isinstance(doc.data, dict) else None
    if not isinstance(services, dict) or not services:
        raise InventoryError([f"{shown}:1: services: a compose file needs a non-empty `services` mapping"])
    images: dict[str, str] = {}
    problems = []
    for name, spec in services.items():
        image = spec.get("image") if isinstance(spec, dict) else None
        if not isinstance(image, str) or not image:
            line = doc.line_of(("services", name))
            problems.append(f"{shown}:{line}: services.{name}.image: every service needs an image "
                            "(build images in CI and reference them here)")
        else:
            images[str(name)] = image
    if problems:
        raise InventoryError(problems)
    return images


def load_desired_state(inventory_file: str | Path, ref: str | None = None,
                       only: list[str] | None = None) -> DesiredState:
    """Read the inventory and compose files (at ``ref`` if given) and restrict to ``only``."""
    with open_source(Path(inventory_file), ref) as tree:
        inventory = load_inventory(tree.inventory, tree.display)
        phase_of = inventory.stack_phase()
        unknown = sorted(set(only or ()) - set(phase_of))
        if unknown:
            raise InventoryError([f"--only: unknown stack(s) {', '.join(unknown)} "
                                  f"(known: {', '.join(phase_of)})"])
        stacks: dict[str, DesiredStack] = {}
        problems: list[str] = []
        for phase_name in inventory.phase_order():
            for name, stack in inventory.phases[phase_name].stacks.items():
                if only and name not in only:
                    continue
                path = compose_path(tree.inventory.parent, name, stack)
                compose = path.read_bytes()
                shown = _shown(path, tree.inventory.parent, tree.display)
                try:
                    images = parse_compose_images(_utf8(compose, shown), shown)
                except InventoryError as exc:
                    problems += exc.problems
                    continue
                stacks[name] = DesiredStack(name=name, phase=phase_name, hosts=tuple(stack.hosts), compose=compose,
                                            images=images, config_hash=config_hash(compose),
                                            secrets=tuple(stack.secrets))
        if problems:
            raise InventoryError(problems)
        return DesiredState(inventory=inventory, source=tree.display, commit=tree.commit, stacks=stacks,
                            inventory_dir=Path(inventory_file).parent)


def _utf8(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError([f"{shown}: not UTF-8 text (byte {exc.start})"]) from exc


def _shown(path: Path, root: Path, display: str) -> str:
    ref = display.partition("@")[2]
    relative = path.relative_to(root) if path.is_relative_to(root) else path
    return f"{relative}@{ref}" if ref else str(path)
