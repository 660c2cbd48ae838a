"""Prefect Block holding the Proxmox API URL, API token and CA: what snapshot tasks need.

The plain settings object and the env-var reader live in ``tasks/integrations/proxmox/settings.py``, so that
package stays free of Prefect.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.integrations.proxmox.settings import ProxmoxSettings


class ProxmoxAccess(Block):
    """API-token access to a Proxmox VE cluster, verified against a CA file (or the system CAs)."""

    _block_type_name = "Homelab Proxmox Access"
    _description = "Proxmox VE API URL, API token and CA bundle, for VM snapshots around deploys."

    url: str = Field(description='API URL, e.g. "https://pve.example:8006".')
    token_id: str = Field(description='API token id, "user@realm!tokenname".')
    token_secret: SecretStr = Field(description="API token secret (the UUID shown once at creation).")
    ca_file: str | None = Field(default=None, description="CA bundle that signs the Proxmox certificate "
                                                          "(/etc/pve/pve-root-ca.pem); empty: system CAs.")

    def settings(self) -> ProxmoxSettings:
        return ProxmoxSettings(url=self.url, token_id=self.token_id,
                               token_secret=self.token_secret.get_secret_value(), ca_file=self.ca_file or None)
