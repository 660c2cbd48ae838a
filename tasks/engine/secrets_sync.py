"""Secrets in one direction only: Vault -> rendered env file (0600) on the host.

- ``resolve_secrets`` reads every KV path the targeted stacks need, once, renders their env
  files and folds the KV versions into each stack's config hash (a new version = a change).
  Any Vault problem aborts here, before any host is contacted. The audit log gets the paths
  and versions read (``secrets.read``), never a value.
- ``find_drift`` compares each host's env files with Vault by SHA-256 over SSH; values
  never travel back. ``DriftRedeploy`` redeploys the stacks of drifted files, health-gated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from model.desired import DesiredState
from model.env_files import RenderedEnvFile
from model.inventory import Inventory
from tasks.engine import audit
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.plan import Prepared
from tasks.engine.report import StackResult
from tasks.host_commands.compose import project_dir
from tasks.host_commands.file_hashes import hash_remote_files, parse_remote_hashes
from tasks.integrations.vault.client import VaultReader
from tasks.integrations.vault.envfile import render_env_files
from tasks.integrations.vault.errors import SecretsError
from tasks.integrations.vault.settings import VaultSettings, settings_from_env


def vault_settings(inventory: Inventory) -> VaultSettings | None:
    if inventory.vault and inventory.vault.block:
        from blocks.vault import VaultAccess

        return VaultAccess.load(inventory.vault.block).settings()
    return settings_from_env()


def open_reader(inventory: Inventory, needed_by: list[str]) -> VaultReader:
    settings = vault_settings(inventory)
    if settings is None:
        raise SecretsError(f"stack(s) {', '.join(needed_by)} need secrets, but no Vault is configured: set "
                           "`vault.block` in the inventory, or VAULT_ADDR with VAULT_ROLE_ID and VAULT_SECRET_ID "
                           "(or VAULT_TOKEN for development)")
    reader = VaultReader(settings)
    reader.login()
    return reader


def render_stack_secrets(desired: DesiredState, reader: VaultReader) -> dict[str, dict[str, RenderedEnvFile]]:
    """stack -> env file name -> rendered file. Each KV path is read once (the reader caches)."""
    out: dict[str, dict[str, RenderedEnvFile]] = {}
    for stack in desired.stacks.values():
        if not stack.secrets:
            continue
        values = {ref.path: reader.read(ref.path) for ref in stack.secrets}
        for ref in stack.secrets:  # every declared key must exist
            data, version = values[ref.path]
            missing = [k for k in ref.keys if k not in data]
            if missing:
                raise SecretsError(f"stack {stack.name}: key {missing[0]} is missing at {ref.path} (version "
                                   f"{version}); add it in Vault or remove it from the stack's `secrets:`",
                                   path=ref.path, key=missing[0])
        out[stack.name] = render_env_files(stack.secrets, values)
    return out


def resolve_secrets(desired: DesiredState) -> DesiredState:
    """The desired state with rendered secrets; unchanged if no targeted stack has any."""
    needing = [s.name for s in desired.stacks.values() if s.secrets]
    if not needing:
        return desired
    reader = open_reader(desired.inventory, needing)
    resolved = desired.with_secrets(render_stack_secrets(desired, reader))
    audit.append("secrets.read", mount=reader.mount, versions=reader.versions_read(), stacks=sorted(needing))
    return resolved


@dataclass(frozen=True)
class Drift:
    host: str
    stack: str
    file: str  # env file name
    state: str  # "drifted" | "missing"

    @property
    def where(self) -> str:
        return f"{self.host}/{self.stack}/{self.file}"

    def to_json(self) -> dict:
        return {"host": self.host, "stack": self.stack, "file": self.file, "state": self.state}


def _placements(desired: DesiredState) -> list[tuple[str, str, str, RenderedEnvFile]]:
    return [(host, stack.name, name, rendered) for stack in desired.stacks.values()
            for host in stack.hosts for name, rendered in stack.env_files.items()]


async def find_drift(pool: HostPool, desired: DesiredState) -> list[Drift]:
    """Env files on the hosts whose SHA-256 differs from what Vault renders now."""
    inv = desired.inventory
    by_host: dict[str, list[tuple[str, str, RenderedEnvFile]]] = {}
    for host, stack, name, rendered in _placements(desired):
        by_host.setdefault(host, []).append((stack, name, rendered))

    async def check(host: str) -> list[Drift]:
        files = by_host[host]
        paths = [f"{project_dir(inv.state_dir(host), stack, desired.stacks[stack].project_dir)}/{name}"
                 for stack, name, _ in files]
        result = await pool[host].run(hash_remote_files(paths), check=False)
        found = parse_remote_hashes(result.stdout)
        drift = []
        for (stack, name, rendered), path in zip(files, paths, strict=True):
            remote = found.get(path)
            if remote is None:
                drift.append(Drift(host, stack, name, "missing"))
            elif remote != rendered.sha256:
                drift.append(Drift(host, stack, name, "drifted"))
        return drift

    lists = await asyncio.gather(*(check(h) for h in by_host))
    return sorted((d for found in lists for d in found), key=lambda d: d.where)


class DriftRedeploy:
    """The secrets sync, as work under the deploy locks: the stacks whose env files differ from
    Vault are redeployed through the health-gated rollout (not rewritten behind its back), so a
    bad value in Vault rolls back like any failed deploy."""

    def __init__(self) -> None:
        self.drift: list[Drift] = []
        self.healthy: set[tuple[str, str]] = set()

    async def before_plan(self, pool: HostPool, desired: DesiredState) -> Prepared:
        self.drift = await find_drift(pool, desired)
        redeploy: dict[tuple[str, str], str] = {}
        for d in self.drift:
            why = f"{d.file} {'is missing' if d.state == 'missing' else 'differs from Vault'}"
            redeploy[(d.host, d.stack)] = ", ".join(filter(None, [redeploy.get((d.host, d.stack)), why]))
        return Prepared(desired.restricted({d.stack for d in self.drift}), redeploy)

    async def after_rollout(self, desired: DesiredState, results: Sequence[StackResult]) -> None:
        self.healthy = {(r.host, r.stack) for r in results if r.ok}

    def to_json(self) -> dict:
        fixed = [d for d in self.drift if (d.host, d.stack) in self.healthy]
        return {"drift": [d.to_json() for d in self.drift], "fixed": [d.where for d in fixed],
                "still_drifted": [d.where for d in self.drift if d not in fixed]}


async def check_drift(desired: DesiredState) -> list[Drift]:
    """``homelab secrets check``: Vault read, then one hash round trip per host."""
    desired = resolve_secrets(desired)
    async with HostPool(ssh_targets(desired)) as pool:
        return await find_drift(pool, desired)
