"""Where the Vault integration's settings come from: a block (``blocks/vault.py``) or the
environment. Never from the inventory, which is data anyone with repo access can change."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tasks.integrations.vault.errors import SecretsError

BLOCK_NAME = "Homelab Vault Access"
APPROLE_MOUNT = "approle"


@dataclass(frozen=True)
class VaultSettings:
    addr: str  # "https://vault.lan:8200"
    ca_cert: str | None = None  # CA bundle that verifies Vault's certificate; None: the system CA store
    role_id: str | None = None  # AppRole (production)
    secret_id: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # development only, used when there is no AppRole
    mount: str = "secret"  # KV v2 mount
    timeout_s: float = 10  # per HTTP request


def settings_from_env(env: Mapping[str, str] = os.environ) -> VaultSettings | None:
    """Settings from VAULT_ADDR, VAULT_CACERT, VAULT_ROLE_ID + VAULT_SECRET_ID (AppRole) or
    VAULT_TOKEN (development), and VAULT_KV_MOUNT (default ``secret``).

    Returns None when VAULT_ADDR is unset or empty, because then there is no Vault. Raises
    SecretsError, naming the variables, when VAULT_ADDR is set without credentials or with only
    half of an AppRole. When both an AppRole and a token are set, the AppRole is used.
    """
    addr = env.get("VAULT_ADDR", "").strip()
    if not addr:
        return None
    role_id = env.get("VAULT_ROLE_ID", "").strip() or None
    secret_id = env.get("VAULT_SECRET_ID", "").strip() or None
    token = env.get("VAULT_TOKEN", "").strip() or None
    if bool(role_id) != bool(secret_id):
        have, lack = ("VAULT_ROLE_ID", "VAULT_SECRET_ID") if role_id else ("VAULT_SECRET_ID", "VAULT_ROLE_ID")
        raise SecretsError(f"{have} is set but {lack} is not; an AppRole login needs both (or unset "
                           f"{have} and use VAULT_TOKEN for development)", addr=addr)
    if not role_id and not token:
        raise SecretsError(f"VAULT_ADDR is set ({addr}) but there are no credentials: set VAULT_ROLE_ID and "
                           "VAULT_SECRET_ID (AppRole), or VAULT_TOKEN for development, or unset VAULT_ADDR",
                           addr=addr)
    mount = env.get("VAULT_KV_MOUNT", "").strip().strip("/") or "secret"
    return VaultSettings(addr=addr, ca_cert=env.get("VAULT_CACERT", "").strip() or None, role_id=role_id,
                         secret_id=secret_id, token=None if role_id else token, mount=mount)
