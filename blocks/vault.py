"""Prefect Block holding the Vault / OpenBao address, CA and AppRole that the secrets tasks need.

The plain settings object and the env-var reader are in ``tasks/integrations/vault/settings.py``, so that
package stays free of Prefect.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.integrations.vault.settings import VaultSettings


class VaultAccess(Block):
    """AppRole access to Vault or OpenBao (KV v2), verified against a CA file or the system CAs."""

    _block_type_name = "Homelab Vault Access"
    _description = "Vault / OpenBao address, CA bundle and AppRole (role_id + secret_id), for stack secrets."

    addr: str = Field(description='Vault address, e.g. "https://vault.lan:8200".')
    ca_cert: str | None = Field(default=None, description="CA bundle that signs Vault's certificate; empty: the "
                                                          "system CAs.")
    role_id: str | None = Field(default=None, description="AppRole role_id.")
    secret_id: SecretStr | None = Field(default=None, description="AppRole secret_id.")
    token: SecretStr | None = Field(default=None, description="A Vault token, for development only; used when no "
                                                              "AppRole is set.")
    mount: str = Field(default="secret", description="Mount path of the KV version 2 engine.")

    def settings(self) -> VaultSettings:
        return VaultSettings(
            addr=self.addr.strip(),
            ca_cert=self.ca_cert or None,
            role_id=self.role_id or None,
            secret_id=(self.secret_id.get_secret_value() if self.secret_id else None) or None,
            token=(self.token.get_secret_value() if self.token else None) or None,
            mount=self.mount.strip("/") or "secret",
        )
