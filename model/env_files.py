"""A stack's env file rendered from Vault: its bytes, their hash, and the KV versions used."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RenderedEnvFile:
    name: str  # env file name, e.g. ".env.secrets"
    content: bytes = field(repr=False)  # "KEY='value'\n" lines, keys sorted (see tasks/integrations/vault/envfile.py)
    sha256: str  # hex sha256 of content
    versions: dict[str, int]  # KV path -> version used
