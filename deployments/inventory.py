"""The inventory: hosts, ordered phases, and each phase's stacks with their health checks.

``load_inventory`` turns a YAML file into a validated ``Inventory``. Every problem is
reported as ``file:line: field: what is wrong`` and raised together as one
``InventoryError``; nothing is contacted before the inventory is valid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deployments.yamlpos import Path_, YamlDocument, YamlSyntaxError, format_path, load_with_lines
from tasks.errors import InventoryError

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # also a valid compose project name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshSettings(_Strict):
    known_hosts: str = "~/.ssh/known_hosts"
    identity: str = "~/.ssh/id_ed25519"
    connect_timeout_s: float = Field(10, gt=0)
    command_timeout_s: float = Field(300, gt=0)


class Defaults(_Strict):
    max_parallel: int = Field(4, ge=1, le=64, description="stacks deployed at once on one host")
    keep_releases: int = Field(5, ge=2, le=100)
    health_timeout_s: float = Field(120, gt=0)
    min_free_disk_mb: int = Field(1024, ge=0)
    state_dir: str = Field(".homelab", description="relative paths are under the deploy user's home")


class ProxmoxVm(_Strict):
    """The Proxmox guest a host runs in, for snapshots around risky phases."""

    node: str
    vmid: int = Field(ge=100)
    kind: Literal["qemu", "lxc"] = "qemu"


class ProxmoxSection(_Strict):
    """Credentials come from this Prefect block, or from PROXMOX_URL / PROXMOX_TOKEN_ID /
    PROXMOX_TOKEN_SECRET / PROXMOX_CA_FILE; never from the inventory itself."""

    block: str | None = Field(None, description="name of a 'Homelab Proxmox Access' block")
    keep_snapshots: int = Field(3, ge=1, le=50, description="snapshots made by the orchestrator kept per VM")
    start_after_rollback: bool = True


class Host(_Strict):
    address: str
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    role: str = ""
    environment: Literal["production", "staging"] = "production"
    gpu: bool = False
    min_free_disk_mb: int | None = Field(None, ge=0)
    state_dir: str | None = None
    proxmox: ProxmoxVm | None = None


class HealthCheck(_Strict):
    """One probe run from the host itself (through the SSH connection), so it also reaches
    services that listen only on the host's loopback."""

    http: str | None = None
    tcp: str | int | None = None
    expect_status: int = Field(200, ge=100, le=599)
    timeout_s: float = Field(5, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("a health check needs exactly one of `http` or `tcp`")
        return self

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                raise ValueError("`http` must look like http://127.0.0.1:8080/health (scheme http, explicit port)")
        return value

    @field_validator("tcp")
    @classmethod
    def _tcp_target(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            tcp_endpoint(value)
        return value

    def endpoint(self) -> tuple[str, int]:
        if self.http is not None:
            parts = urlsplit(self.http)
            return parts.hostname or "127.0.0.1", parts.port or 80
        assert self.tcp is not None
        return tcp_endpoint(self.tcp)

    def describe(self) -> str:
        return f"http {self.http}" if self.http else f"tcp {self.tcp}"


def tcp_endpoint(value: str | int) -> tuple[str, int]:
    """``5432`` or ``"127.0.0.1:5432"`` -> (host, port); raises ValueError otherwise."""
    host, _, port = str(value).rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("`tcp` must be a port or host:port")
    return host or "127.0.0.1", int(port)


class Health(_Strict):
    timeout_s: float | None = Field(None, gt=0, description="deadline for the whole gate")
    containers: bool = Field(True, description="require every container running and, if it has one, healthy")
    checks: list[HealthCheck] = []


class StackSecret(_Strict):
    """Keys of one KV v2 path in Vault, rendered into an env file next to the compose project
    (reference it from the compose file with `env_file:`)."""

    path: str = Field(min_length=1)
    keys: Annotated[list[str], Field(min_length=1)]
    env_file: str = ".env.secrets"

    @field_validator("keys")
    @classmethod
    def _env_names(cls, keys: list[str]) -> list[str]:
        bad = [k for k in keys if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(bad)}")
        return keys

    @field_validator("env_file")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if "/" in name or name in (".", "..") or not name:
            raise ValueError("env_file must be a plain file name (it lives in the stack's directory)")
        return name


class VaultSection(_Strict):
    """Credentials come from this Prefect block, or from VAULT_ADDR / VAULT_CACERT /
    VAULT_ROLE_ID + VAULT_SECRET_ID (AppRole) / VAULT_TOKEN (development)."""

    block: str | None = Field(None, description="name of a 'Homelab Vault Access' block")


class Stack(_Strict):
    hosts: Annotated[list[str], Field(min_length=1)]
    secrets: list[StackSecret] = []
    compose: str | None = None
    pull: Literal["missing", "always", "never"] = "missing"
    description: str = ""
    health: Health = Health()


FailurePolicy = Literal["halt", "rollback-phase", "rollback-all", "continue"]


class Phase(_Strict):
    depends_on: list[str] = []
    on_failure: FailurePolicy = Field("halt", description="what a failed stack does to the rest of the run")
    snapshot: bool = Field(False, description="snapshot the phase's Proxmox VMs before changing anything")
    vmstate: bool = Field(False, description="include RAM in the snapshot")
    stacks: dict[str, Stack]


class Inventory(_Strict):
    version: Literal[1] = 1
    name: str = "homelab"
    ssh: SshSettings = SshSettings()
    defaults: Defaults = Defaults()
    proxmox: ProxmoxSection | None = None
    vault: VaultSection | None = None
    hosts: dict[str, Host]
    phases: dict[str, Phase]

    def phase_order(self) -> list[str]:
        """Phases in dependency order; YAML order breaks ties."""
        return _topological(self.phases)

    def stack_phase(self) -> dict[str, str]:
        return {stack: name for name, phase in self.phases.items() for stack in phase.stacks}

    def stack(self, name: str) -> Stack:
        return self.phases[self.stack_phase()[name]].stacks[name]

    def min_free_disk_mb(self, host: str) -> int:
        value = self.hosts[host].min_free_disk_mb
        return self.defaults.min_free_disk_mb if value is None else value

    def state_dir(self, host: str) -> str:
        return self.hosts[host].state_dir or self.defaults.state_dir

    def health_timeout_s(self, stack: str) -> float:
        return self.stack(stack).health.timeout_s or self.defaults.health_timeout_s


def compose_path(root: Path, stack_name: str, stack: Stack) -> Path:
    return root / (stack.compose or f"stacks/{stack_name}/compose.yaml")


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
        if not re.match(NAME, host):
            found.append((("hosts", host), f"host name {host!r} must match {NAME}"))
    seen_stacks: dict[str, str] = {}
    for phase_name, phase in inv.phases.items():
        at = ("phases", phase_name)
        if not re.match(NAME, phase_name):
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
            if not re.match(NAME, stack_name):
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
            compose = compose_path(root, stack_name, stack)
            if not compose.is_file():
                found.append(((*where, "compose") if stack.compose else where,
                              f"compose file not found: {compose}"))
    cycle = _find_cycle(inv.phases)
    if cycle:
        found.append((("phases", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle)))
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


def _topological(phases: dict[str, Phase]) -> list[str]:
    order: list[str] = []
    remaining = list(phases)
    while remaining:
        ready = next(n for n in remaining if all(d in order or d not in phases for d in phases[n].depends_on))
        order.append(ready)
        remaining.remove(ready)
    return order
