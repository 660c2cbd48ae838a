"""Rotating one secret key: a new random value written to Vault with check-and-set; the caller
then redeploys exactly the stacks that use it, health-gated."""

from __future__ import annotations

from dataclasses import dataclass

from model.desired import DesiredState
from model.errors import UsageError
from tasks.engine import audit
from tasks.engine.secrets_sync import open_reader
from tasks.integrations.vault.envfile import random_secret


@dataclass(frozen=True, kw_only=True)
class Rotation:
    path: str
    key: str
    stacks: list[str]  # the stacks that read this key, to redeploy
    from_version: int
    to_version: int

    def to_json(self) -> dict:
        return {"path": self.path, "key": self.key, "from_version": self.from_version,
                "to_version": self.to_version}


def users_of(desired: DesiredState, path: str, key: str) -> list[str]:
    return [s.name for s in desired.stacks.values() if any(r.path == path and key in r.keys for r in s.secrets)]


def rotate_secret(desired: DesiredState, path: str, key: str, *, inventory_name: str) -> Rotation:
    """Write a new value for ``key`` at ``path`` (the rest of the secret unchanged); audited."""
    users = users_of(desired, path, key)
    if not users:
        raise UsageError(f"no stack in {inventory_name} uses {key} at {path}")
    reader = open_reader(desired.inventory, users)
    data, version = reader.read(path)
    new_version = reader.write_cas(path, {**data, key: random_secret()}, cas=version)
    audit.append("secret.rotated", path=path, key=key, from_version=version, to_version=new_version, stacks=users)
    return Rotation(path=path, key=key, stacks=users, from_version=version, to_version=new_version)
