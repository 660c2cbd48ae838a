"""Names and addresses of the simulated homelab: the one place that says what the lab is."""

from __future__ import annotations

import os
from pathlib import Path

# Persistent lab state (keys, host keys, image tarballs, each host's podman storage).
LAB_DIR: Path = Path(os.environ.get("HOMELAB_LAB_DIR", "/var/lib/homelab-lab"))

BRIDGE = "hlab0"
SUBNET = "10.203.0.0/24"
GATEWAY = "10.203.0.1"
PREFIX_LEN = 24

HOSTS: dict[str, str] = {
    "vps": "10.203.0.11",
    "thinkpad": "10.203.0.12",
    "rtx1080": "10.203.0.13",
}
GPU_HOSTS = {"rtx1080"}


def netns_name(host: str) -> str:
    """Name of the host's network namespace (as in /run/netns)."""
    return f"hlab-{host}"


def veth_name(host: str) -> str:
    """Root-namespace end of the host's veth pair (kept under IFNAMSIZ, 15 chars)."""
    return f"hl-{host}"[:15]


def host_dir(host: str) -> Path:
    """Persistent per-host directory: storage, /root, host key, logs, init pid."""
    if host not in HOSTS:
        raise KeyError(f"unknown lab host {host!r}; the lab has {', '.join(HOSTS)}")
    return LAB_DIR / "hosts" / host


def ssh_dir() -> Path:
    return LAB_DIR / "ssh"


def known_hosts_path() -> Path:
    """known_hosts that pins every lab host's key under its address (strict checking)."""
    return ssh_dir() / "known_hosts"


def client_key_path() -> Path:
    """Private ed25519 key (no passphrase) authorised as root on every lab host."""
    return ssh_dir() / "id_ed25519"
