"""The inventory's schema: hosts, ordered phases, and each phase's stacks with their health checks.

``model.inventory_loader.load_inventory`` reads a YAML file into a validated ``Inventory``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.agents import AgentsSection
from model.policies import FailurePolicy
from model.smoke import SmokeCheck

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # also a valid compose project name
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def host_path(value: str | None, what: str = "path") -> str | None:
    """A path used on a host as a command operand: never empty, never an option (``-x``),
    never split by a line break."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with `-`, which a command on the host would read as an "
                         f"option; write ./{value} or an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} {value!r} contains a control character (line break, tab, ...)")
    return value


class SshSettings(_Strict):
    known_hosts: str = "~/.ssh/known_hosts"
    identity: str = "~/.ssh/id_ed25519"
    connect_timeout_s: float = Field(10, gt=0)
    command_timeout_s: float = Field(300, gt=0)


class Defaults(_Strict):
    max_parallel: int = Field(4, ge=1, le=64, description="stacks deployed at once on one host")
    max_hosts_parallel: int = Field(16, ge=1, le=256, description="hosts deployed to at once in one phase")
    keep_releases: int = Field(5, ge=2, le=100)
    health_timeout_s: float = Field(120, gt=0)
    min_free_disk_mb: int = Field(1024, ge=0)
    state_dir: str = Field(".homelab", description="relative paths are under the deploy user's home")
    worker_start_timeout_s: float = Field(60, gt=0, description="dispatch: worker: how long a host's worker "
                                                                 "may take to start the deploy's steps run")

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str) -> str:
        return host_path(value, "state_dir") or value


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
    dispatch: Literal["ssh", "worker"] = "ssh"  # worker: its steps run on it, by its own Prefect worker
    min_free_disk_mb: int | None = Field(None, ge=0)
    state_dir: str | None = None
    proxmox: ProxmoxVm | None = None

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None) -> str | None:
        return host_path(value, "state_dir")


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
        bad = [k for k in keys if not re.fullmatch(ENV_NAME, k)]
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


class HostOverride(_Strict):
    """What one host runs differently: more interpolation variables, other profiles."""

    env: dict[str, str] = {}
    profiles: list[str] | None = Field(None, description="replaces the stack's profiles on this host")


class Hook(_Strict):
    """A command run inside one of the stack's services, with a deadline."""

    service: str
    run: str = Field(min_length=1, description="a shell command (sh -c) run in the service's container")
    mode: Literal["exec", "run"] = Field(
        "exec", description="exec: in the running container; run: in a new one-off container (compose run)")
    timeout_s: float = Field(300, gt=0)


class Hooks(_Strict):
    """Data does not roll back with containers: ``backup`` runs before a change (in the
    running release), ``migrate`` after the new release is up and before its health gate,
    ``restore`` in the old release when the undo follows a failed migrate or health gate."""

    backup: Hook | None = None
    migrate: Hook | None = None
    restore: Hook | None = None


class StagingForm(_Strict):
    """How a stack runs on the staging host, as project ``<stack>-staging``: the same folder with
    override file(s) on top (own ports, env, volumes), and the smoke tests it must pass there."""

    compose: str | list[str] | None = Field(
        None, description="override file(s) added after the stack's own; default compose.staging.yaml if present")
    cpu_compose: str | list[str] | None = Field(
        None, description="added too when the staging host has no GPU (a CPU-only form of a GPU stack)")
    env: dict[str, str] = Field({}, description="interpolation variables on top of the stack's env:")
    profiles: list[str] | None = Field(None, description="replaces the stack's profiles in staging")
    health: Health | None = Field(None, description="the staging copy's health gate; default the stack's")
    smoke: list[SmokeCheck] = Field([], description="checks run from the staging host once the copy is healthy")

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return env_names(env)

    def override_files(self) -> list[str]:
        return [self.compose] if isinstance(self.compose, str) else list(self.compose or [])

    def cpu_files(self) -> list[str]:
        return [self.cpu_compose] if isinstance(self.cpu_compose, str) else list(self.cpu_compose or [])


def env_names(env: dict[str, str]) -> dict[str, str]:
    bad = [k for k in env if not re.fullmatch(ENV_NAME, k)]
    if bad:
        raise ValueError(f"not environment variable names: {', '.join(bad)}")
    return env


class GpuNeed(_Strict):
    """What a stack needs of its host's GPUs. Pre-flight refuses a deploy that cannot fit."""

    count: int = Field(1, ge=1, le=16, description="GPUs the stack needs")
    memory_mb: int = Field(0, ge=0, description="free memory each of those GPUs must have (MiB), for a new stack")
    services: list[str] | None = Field(None, description="the services that get the GPU reservation; default all")


class Stack(_Strict):
    hosts: Annotated[list[str], Field(min_length=1)]
    gpu: GpuNeed | None = Field(None, description="GPUs it needs: checked before any change, one GPU stack at a time")
    hooks: Hooks = Hooks()
    secrets: list[StackSecret] = []
    dir: str | None = Field(None, description="the stack folder, relative to the inventory; default stacks/<name>")
    compose: str | list[str] | None = Field(
        None, description="compose file(s) in the stack folder, passed as -f in order; default compose.yaml")
    files: list[str] | None = Field(None, description="globs: ship only these files of the stack folder")
    exclude: list[str] = Field([], description="globs: never ship these")
    env: dict[str, str] = Field({}, description="interpolation variables; they win over the stack's .env")
    profiles: list[str] = []
    per_host: dict[str, HostOverride] = {}
    project_dir: str | None = Field(
        None, description="the compose project directory on the host; default <state_dir>/stacks/<name>")
    pull: Literal["missing", "always", "never"] = "missing"
    description: str = ""
    health: Health = Health()
    staging: bool | StagingForm | None = Field(
        None, description="false: never staged; true or a form: staged; absent: staged if compose.staging.yaml exists")

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return env_names(env)

    @field_validator("project_dir")
    @classmethod
    def _project_dir(cls, value: str | None) -> str | None:
        return host_path(value, "project_dir")

    def folder(self, stack_name: str) -> str:
        return (self.dir or f"stacks/{stack_name}").rstrip("/")

    def compose_files(self, stack_name: str) -> list[str]:
        """Relative to the stack folder. A path that starts with the folder itself (the
        inventory-relative form of earlier versions, ``stacks/web/compose.yaml``) still works."""
        given = [self.compose] if isinstance(self.compose, str) else list(self.compose or [])
        prefix = self.folder(stack_name) + "/"
        return [name.removeprefix(prefix) for name in given] or ["compose.yaml"]




class Phase(_Strict):
    depends_on: list[str] = []
    on_failure: FailurePolicy = Field("halt", description="what a failed stack does to the rest of the run")
    snapshot: bool = Field(False, description="snapshot the phase's Proxmox VMs before changing anything")
    vmstate: bool = Field(False, description="include RAM in the snapshot")
    stacks: dict[str, Stack]


Trigger = Literal["manual", "webhook", "nightly", "agent"]


class NotifySection(_Strict):
    """Where notices go: these blocks, or else TELEGRAM_* and SMTP_* from the environment."""

    telegram_block: str | None = Field(None, description="name of a 'Homelab Telegram Bot' block")
    smtp_block: str | None = Field(None, description="name of a 'Homelab SMTP Account' block")


class MetricsSection(_Strict):
    """Where each run pushes its metrics. HOMELAB_PUSHGATEWAY_URL overrides both; nothing set: no push."""

    pushgateway_url: str | None = Field(None, description="Pushgateway base URL, e.g. http://thinkpad:9091")
    block: str | None = Field(None, description="name of a 'Homelab Pushgateway' block (URL and basic auth)")
    job: str = Field("homelab", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description="the job label of pushed series")
    timeout_s: float = Field(2.0, gt=0, le=30, description="one push's time limit; a slow gateway is skipped")


class ApprovalExemptions(_Strict):
    phases: list[str] = Field([], description="a run whose changes are all in these phases needs no approval")
    triggers: list[Trigger] = Field([], description="runs started this way need no approval")


class ApprovalPolicy(_Strict):
    """When a production run waits for a person: by default, whenever it changes something."""

    timeout_s: float = Field(86400, gt=0, description="unanswered this long: the run ends not-approved")
    not_needed: ApprovalExemptions = ApprovalExemptions()


class Inventory(_Strict):
    version: Literal[1] = 1
    name: str = "homelab"
    ssh: SshSettings = SshSettings()
    defaults: Defaults = Defaults()
    proxmox: ProxmoxSection | None = None
    vault: VaultSection | None = None
    approval: ApprovalPolicy = ApprovalPolicy()
    notify: NotifySection = NotifySection()
    metrics: MetricsSection = MetricsSection()
    agents: AgentsSection = AgentsSection()
    hosts: dict[str, Host]
    phases: dict[str, Phase]

    def staging_host(self) -> str | None:
        """The host marked ``environment: staging`` (the loader allows at most one)."""
        return next((name for name, host in self.hosts.items() if host.environment == "staging"), None)

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
    """The first (main) compose file of a stack."""
    return root / stack.folder(stack_name) / stack.compose_files(stack_name)[0]



def _topological(phases: dict[str, Phase]) -> list[str]:
    order: list[str] = []
    remaining = list(phases)
    while remaining:
        ready = next(n for n in remaining if all(d in order or d not in phases for d in phases[n].depends_on))
        order.append(ready)
        remaining.remove(ready)
    return order
