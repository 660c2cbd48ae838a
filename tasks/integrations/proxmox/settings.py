"""Which Proxmox API, which token, which guest: settings from a block (``blocks/proxmox.py``) or
the environment, and the address of one VM or container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tasks.integrations.proxmox.errors import SnapshotError


@dataclass(frozen=True)
class ProxmoxSettings:
    url: str  # "https://pve.example:8006"; host, port and an optional path prefix are taken from it
    token_id: str  # "user@realm!tokenname"
    token_secret: str = field(repr=False)
    ca_file: str | None  # CA bundle that verifies the server; None: the system CA store
    timeout_s: float = 30  # per HTTP request
    task_timeout_s: float = 600  # longest wait for one Proxmox task (UPID)
    poll_interval_s: float = 0.5


def settings_from_env(env: Mapping[str, str] = os.environ) -> ProxmoxSettings | None:
    """Settings from PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET and PROXMOX_CA_FILE.

    None when PROXMOX_URL is unset or empty (snapshots are off). Raises SnapshotError, naming the
    missing variables, when the URL is set without a token.
    """
    url = env.get("PROXMOX_URL", "").strip()
    if not url:
        return None
    missing = [name for name in ("PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET") if not env.get(name)]
    if missing:
        raise SnapshotError(f"PROXMOX_URL is set ({url}) but {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not; set "
                            f"{'it' if len(missing) == 1 else 'them'} to an API token "
                            "(user@realm!name and its secret), or unset PROXMOX_URL to turn snapshots off")
    return ProxmoxSettings(url=url, token_id=env["PROXMOX_TOKEN_ID"].strip(),
                           token_secret=env["PROXMOX_TOKEN_SECRET"], ca_file=env.get("PROXMOX_CA_FILE") or None)
