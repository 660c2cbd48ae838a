"""Release records: what a stack ran, from which commit, made by which flow run.

A record is written on the host after the stack's health gate passed (status ``active``)
or failed (``failed``). The ``current`` pointer only ever names a healthy release, so the
previous release stays known until the new one is proven.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, kw_only=True)
class ReleaseRecord:
    id: str
    stack: str
    host: str
    commit: str | None
    config_hash: str
    images: dict[str, str]  # image reference -> image id
    created_at: str
    flow_run_id: str | None
    status: str = "active"  # active | failed | rolled-back
    source: str = ""
    services: list[str] = field(default_factory=list)
    secret_versions: dict[str, int] = field(default_factory=dict)  # Vault KV path -> version (never values)
    env_files: list[str] = field(default_factory=list)  # names of the rendered env files in the release dir
    files: dict[str, str] = field(default_factory=dict)  # the stack folder: path -> "mode:sha256"
    compose_files: list[str] = field(default_factory=list)  # in the project dir, in -f order
    profiles: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the inventory's interpolation variables
    project_dir: str | None = None
    mounts: dict[str, list[str]] = field(default_factory=dict)  # service -> stack files it mounts
    hooks: dict[str, dict] = field(default_factory=dict)  # hook name -> {"exit": status, "output": tail}
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, text: str) -> ReleaseRecord:
        raw = json.loads(text)
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        return cls(**known)


def new_release_id(now: datetime | None = None) -> str:
    """Sortable by time: 20261126T233000Z-1a2b3c."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
