"""Rotating one secret key, all or nothing, under the deploy locks.

The deploy core calls ``SecretRotation`` with the hosts of the stacks that read the key already
locked: it writes a new random value to Vault (check-and-set), the stacks are redeployed
health-gated, and if any of them fails, the old value is written back (check-and-set against
the version it wrote) before the locks are released. So neither a concurrent deploy nor the
hourly sync ever renders a value that a failed rotation left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from model.desired import DesiredState
from model.errors import UsageError
from tasks.engine import audit
from tasks.engine.host_pool import HostPool
from tasks.engine.plan import Prepared
from tasks.engine.report import StackResult
from tasks.engine.secrets_sync import open_reader, resolve_secrets
from tasks.integrations.vault.envfile import random_secret


@dataclass(frozen=True, kw_only=True)
class Rotation:
    path: str
    key: str
    stacks: list[str]  # the stacks that read this key, to redeploy
    from_version: int
    to_version: int
    previous: dict[str, str] = field(repr=False, compare=False)  # the secret before: only for the revert
    reverted_version: int | None = None  # the version that holds the old values again, after a revert

    def to_json(self) -> dict:
        return {"path": self.path, "key": self.key, "from_version": self.from_version,
                "to_version": self.to_version, "reverted_version": self.reverted_version}


def users_of(desired: DesiredState, path: str, key: str) -> list[str]:
    return [s.name for s in desired.stacks.values() if any(r.path == path and key in r.keys for r in s.secrets)]


def stacks_to_rotate(desired: DesiredState, path: str, key: str, inventory_name: str) -> list[str]:
    users = users_of(desired, path, key)
    if not users:
        raise UsageError(f"no stack in {inventory_name} uses {key} at {path}")
    return users


def rotate_secret(desired: DesiredState, path: str, key: str) -> Rotation:
    """Write a new value for ``key`` at ``path`` (the rest of the secret unchanged); audited."""
    users = users_of(desired, path, key)
    reader = open_reader(desired.inventory, users)
    data, version = reader.read(path)
    new_version = reader.write_cas(path, {**data, key: random_secret()}, cas=version)
    audit.append("secret.rotated", path=path, key=key, from_version=version, to_version=new_version, stacks=users)
    return Rotation(path=path, key=key, stacks=users, from_version=version, to_version=new_version,
                    previous=dict(data))


def revert_rotation(desired: DesiredState, rotation: Rotation) -> Rotation:
    """Write the values from before ``rotation`` back, only if nobody wrote after it; audited."""
    reader = open_reader(desired.inventory, rotation.stacks)
    version = reader.write_cas(rotation.path, rotation.previous, cas=rotation.to_version)
    audit.append("secret.rotation_reverted", path=rotation.path, key=rotation.key, rotated_version=rotation.to_version,
                 to_version=version, restored_from=rotation.from_version)
    return Rotation(path=rotation.path, key=rotation.key, stacks=rotation.stacks, from_version=rotation.from_version,
                    to_version=rotation.to_version, previous=rotation.previous, reverted_version=version)


class SecretRotation:
    """Work done under the deploy locks: ``before_plan`` rotates and renders the new value;
    ``after_rollout`` reverts it if the redeploy failed."""

    def __init__(self, path: str, key: str):
        self.path, self.key = path, key
        self.rotation: Rotation | None = None

    async def before_plan(self, pool: HostPool, desired: DesiredState) -> Prepared:
        self.rotation = await asyncio.to_thread(rotate_secret, desired, self.path, self.key)
        return Prepared(await asyncio.to_thread(resolve_secrets, desired), {})

    async def after_rollout(self, desired: DesiredState, results: Sequence[StackResult]) -> None:
        if self.rotation is not None and not all(r.ok for r in results):
            self.rotation = await asyncio.to_thread(revert_rotation, desired, self.rotation)

    def to_json(self) -> dict:
        return {"rotated": self.rotation.to_json()} if self.rotation else {}
