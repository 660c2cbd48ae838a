"""The desired state: a validated inventory plus every stack's file set and compose model.

Everything the planner compares against a host is computed here, locally, before any host
is contacted: the config hash of each stack, the images it needs and the files it mounts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from model.compose_model import ComposeInput, ComposeModel, load_compose_model
from model.env_files import RenderedEnvFile
from model.errors import InventoryError
from model.gpu_reservation import GPU_OVERRIDE, gpu_override, reserved_services
from model.inventory import GpuNeed, Inventory, Stack, StackSecret
from model.inventory_loader import load_inventory
from model.source import open_source
from model.stack_files import StackFile, StackFiles, collect_stack_files
from model.staging import (
    HasFile,
    production_name,
    production_stack,
    smoke_checks,
    staging_inventory,
    staging_name,
)
from model.trust import TrustRefused, admit, check_inventory


@dataclass(frozen=True, kw_only=True)
class DesiredStack:
    """One stack as it should run on its hosts; ``for_host`` gives a host's own variant when
    the inventory's ``per_host`` changes its interpolation or profiles."""

    name: str
    phase: str
    hosts: tuple[str, ...]
    files: StackFiles = field(repr=False)
    compose: ComposeInput = field(repr=False)
    images: dict[str, str]  # service -> image reference
    mounts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # service -> stack files it mounts
    identity: str  # hash of the file set and the normalized model, before secrets
    config_hash: str  # identity plus the Vault versions of its secrets (see with_secrets)
    project_dir: str | None = None  # on the host; None: <state_dir>/stacks/<name>
    secrets: tuple[StackSecret, ...] = ()
    env_files: dict[str, RenderedEnvFile] = field(default_factory=dict, repr=False)  # rendered from Vault
    secret_versions: dict[str, int] = field(default_factory=dict)  # KV path -> version
    variants: dict[str, DesiredStack] = field(default_factory=dict, repr=False)  # host -> its own variant

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.images)

    def for_host(self, host: str) -> DesiredStack:
        return self.variants.get(host, self)

    def with_env_files(self, files: dict[str, RenderedEnvFile]) -> DesiredStack:
        versions = {path: v for f in files.values() for path, v in f.versions.items()}
        variants = {host: variant.with_env_files(files) for host, variant in self.variants.items()}
        return replace(self, env_files=files, secret_versions=versions, variants=variants,
                       config_hash=config_hash(self.identity, versions))


@dataclass(frozen=True, kw_only=True)
class DesiredState:
    inventory: Inventory
    source: str  # inventory as shown to users, e.g. "homelab.yaml@v2"
    commit: str | None
    stacks: dict[str, DesiredStack]  # in phase order
    inventory_dir: Path = field(repr=False, default=Path("."))
    staging: DesiredState | None = field(default=None, repr=False)  # the staging copies ``<stack>-staging``

    def with_secrets(self, env_files: dict[str, dict[str, RenderedEnvFile]]) -> DesiredState:
        """The same desired state with each stack's rendered env files (stack -> name -> file),
        whose Vault versions become part of the stack's config hash. A staging copy renders its
        stack's secrets."""
        staging = self.staging
        if staging is not None:
            staging = staging.with_secrets({name: env_files[production] for name in staging.stacks
                                            if (production := production_name(name)) in env_files})
        return replace(self, staging=staging, stacks={name: stack.with_env_files(env_files.get(name, {}))
                                                      for name, stack in self.stacks.items()})

    def restricted(self, names: set[str] | list[str]) -> DesiredState:
        """Only the stacks in ``names`` (in phase order), as ``--only`` would load them."""
        return replace(self, stacks={name: stack for name, stack in self.stacks.items() if name in names})

    def placements(self) -> set[tuple[str, str]]:
        """(host, stack) of every stack placed, staging copies included: nothing else is an orphan."""
        own = {(host, stack.name) for stack in self.stacks.values() for host in stack.hosts}
        return own | (self.staging.placements() if self.staging else set())

    def targeted_hosts(self) -> list[str]:
        wanted = {host for stack in self.stacks.values() for host in stack.hosts}
        return [host for host in self.inventory.hosts if host in wanted]


def config_hash(identity: str, secret_versions: dict[str, int] | None = None) -> str:
    """Identity of what a stack runs from: its files, normalized model and placement, plus
    the Vault versions of its secrets (never their values). Equal hash means nothing to do."""
    digest = hashlib.sha256(identity.encode())
    if secret_versions:
        digest.update(json.dumps(secret_versions, sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


def stack_identity(spec: ComposeInput, model: ComposeModel, project_dir: str | None, hooks: dict | None = None) -> str:
    payload = {"files": spec.files.manifest(), "model": model.digest, "compose": spec.compose_files,
               "profiles": spec.profiles, "env": dict(sorted(spec.env.items())), "project_dir": project_dir,
               **({"hooks": hooks} if hooks else {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def desired_stack(root: Path, display_ref: str, name: str, phase: str, stack: Stack) -> DesiredStack:
    """Read one stack's folder and its normalized compose model, for each distinct host variant."""
    folder = root / stack.folder(name)
    ref = display_ref.partition("@")[2]
    shown = stack.folder(name) if ref else str(folder)
    files = collect_stack_files(root, folder, shown + (f"@{ref}" if ref else ""), include=stack.files,
                                exclude=stack.exclude)
    placeholders = tuple(dict.fromkeys(secret.env_file for secret in stack.secrets))

    compose_files = tuple(stack.compose_files(name))

    def variant(env: dict[str, str], profiles: list[str]) -> DesiredStack:
        spec = ComposeInput(project=name, files=files, compose_files=compose_files,
                            profiles=tuple(profiles), env=env, placeholder_env_files=placeholders, shown=shown, ref=ref)
        model = load_compose_model(spec)
        identity = stack_identity(spec, model, stack.project_dir, stack.hooks.model_dump(exclude_none=True))
        return DesiredStack(name=name, phase=phase, hosts=tuple(stack.hosts), files=files, compose=spec,
                            images=model.images, mounts=model.mounts, identity=identity,
                            config_hash=config_hash(identity), project_dir=stack.project_dir,
                            secrets=tuple(stack.secrets))

    base = variant(dict(stack.env), stack.profiles)
    wrong = [f"{shown}: hooks.{name}.service: {hook.service!r} is not a service of the stack "
             f"(services: {', '.join(base.services)})"
             for name, hook in stack.hooks if hook is not None and hook.service not in base.images]
    if wrong:
        raise InventoryError(wrong)
    if stack.gpu is not None:
        files, compose_files = _with_gpu_override(files, compose_files, stack.gpu, base.services, shown)
        base = variant(dict(stack.env), stack.profiles)
    variants = {}
    for host, override in stack.per_host.items():
        env = {**stack.env, **override.env}
        profiles = stack.profiles if override.profiles is None else override.profiles
        if env != stack.env or profiles != stack.profiles:
            variants[host] = variant(env, profiles)
    return replace(base, variants=variants)


def _with_gpu_override(files: StackFiles, compose_files: tuple[str, ...], need: GpuNeed,
                       services: tuple[str, ...], shown: str) -> tuple[StackFiles, tuple[str, ...]]:
    """The stack's files and -f list with the generated GPU reservation added last."""
    reserved, unknown = reserved_services(need, services)
    problems = [f"{shown}: gpu.services: {s!r} is not a service of the stack (services: {', '.join(services)})"
                for s in unknown]
    if files.get(GPU_OVERRIDE) is not None:
        problems.append(f"{shown}/{GPU_OVERRIDE}: the name is the generated GPU reservation's; rename the file")
    if problems:
        raise InventoryError(problems)
    generated = StackFile(path=GPU_OVERRIDE, mode=0o644, data=gpu_override(need, reserved))
    return (StackFiles(tuple(sorted((*files.files, generated), key=lambda f: f.path))),
            (*compose_files, GPU_OVERRIDE))


def load_desired_state(inventory_file: str | Path, ref: str | None = None,
                       only: list[str] | None = None) -> DesiredState:
    """Read the inventory and stack folders (at ``ref`` if given) and restrict to ``only``.
    The ref and the inventory's hosts, SSH settings and Vault paths must pass ``model.trust``."""
    commit, trust = admit(Path(inventory_file), ref)
    with open_source(Path(inventory_file), ref) as tree:
        if commit is not None and tree.commit != commit:
            raise TrustRefused(f"--ref {ref} moved while it was being checked; run again")
        inventory = load_inventory(tree.inventory, tree.display)
        if trust is not None:
            check_inventory(inventory, trust, tree.display)
        phase_of = inventory.stack_phase()
        unknown = sorted(set(only or ()) - set(phase_of))
        if unknown:
            raise InventoryError([f"--only: unknown stack(s) {', '.join(unknown)} "
                                  f"(known: {', '.join(phase_of)})"])
        root = tree.inventory.parent

        def has_file(name: str, path: str) -> bool:
            return (root / inventory.stack(name).folder(name) / path).is_file()

        stacks = _desired_stacks(inventory, root, tree.display, only, has_file)
        staged = staging_inventory(inventory, has_file)
        staging_stacks = _desired_stacks(staged, root, tree.display, [staging_name(n) for n in only] if only else None)
        _check_smoke_services(inventory, staging_stacks)
        staging = DesiredState(inventory=staged, source=tree.display, commit=tree.commit, stacks=staging_stacks,
                               inventory_dir=Path(inventory_file).parent) if staging_stacks else None
        return DesiredState(inventory=inventory, source=tree.display, commit=tree.commit, stacks=stacks,
                            inventory_dir=Path(inventory_file).parent, staging=staging)


def _check_smoke_services(inventory: Inventory, staged: dict[str, DesiredStack]) -> None:
    wrong = [f"{production_name(name)}: staging.smoke[{i}].service: {check.service!r} is not a service of the "
             f"stack (services: {', '.join(stack.services)})"
             for name, stack in staged.items() for i, check in enumerate(smoke_checks(inventory, name))
             if check.service is not None and check.service not in stack.images]
    if wrong:
        raise InventoryError(wrong)


def _desired_stacks(inventory: Inventory, root: Path, display: str, only: list[str] | None,
                    has_file: HasFile | None = None) -> dict[str, DesiredStack]:
    """Every stack of ``inventory`` (or those in ``only``), in phase order; all problems at once.
    With ``has_file`` (production), a stack never ships the files only its staging copy uses."""
    stacks: dict[str, DesiredStack] = {}
    problems: list[str] = []
    for phase_name in inventory.phase_order():
        for name, stack in inventory.phases[phase_name].stacks.items():
            if only and name not in only:
                continue
            try:
                shipped = production_stack(name, stack, has_file) if has_file else stack
                stacks[name] = desired_stack(root, display, name, phase_name, shipped)
            except InventoryError as exc:
                problems += exc.problems
    if problems:
        raise InventoryError(problems)
    return stacks
