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

# The homelab's own three hosts: the lab every test and the default `lab up` use.
HOSTS: dict[str, str] = {
    "vps": "10.203.0.11",
    "thinkpad": "10.203.0.12",
    "rtx1080": "10.203.0.13",
}
GPU_HOSTS = {"rtx1080"}
# `lab up --hosts N` adds node04 .. nodeNN at 10.203.0.14 ..; the /24 leaves room for 200.
MAX_HOSTS = 200
_FIRST_EXTRA_OCTET = 14


def extra_hosts(count: int) -> dict[str, str]:
    """The hosts a lab of ``count`` hosts has beyond the three of the homelab."""
    if not len(HOSTS) <= count <= MAX_HOSTS:
        raise ValueError(f"a lab has {len(HOSTS)} to {MAX_HOSTS} hosts, not {count}")
    return {f"node{n:02d}": f"10.203.0.{_FIRST_EXTRA_OCTET + n - len(HOSTS) - 1}"
            for n in range(len(HOSTS) + 1, count + 1)}


def lab_hosts(count: int | None = None) -> dict[str, str]:
    """Every host of a lab of ``count`` hosts (default: the size the lab was last brought up at)."""
    return {**HOSTS, **extra_hosts(recorded_size() if count is None else count)}


def _size_path() -> Path:
    return LAB_DIR / "size"


def recorded_size() -> int:
    """How many hosts the lab has (or had, if it is down): set by `lab up --hosts N`."""
    try:
        return max(len(HOSTS), min(MAX_HOSTS, int(_size_path().read_text())))
    except (OSError, ValueError):
        return len(HOSTS)


def record_size(count: int) -> None:
    extra_hosts(count)  # validates
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    _size_path().write_text(f"{count}\n")


def netns_name(host: str) -> str:
    """Name of the host's network namespace (as in /run/netns)."""
    return f"hlab-{host}"


def veth_name(host: str) -> str:
    """Root-namespace end of the host's veth pair (kept under IFNAMSIZ, 15 chars)."""
    return f"hl-{host}"[:15]


def host_dir(host: str) -> Path:
    """Persistent per-host directory: storage, /root, host key, logs, init pid."""
    if host not in lab_hosts(MAX_HOSTS):
        raise KeyError(f"unknown lab host {host!r}; the lab has {', '.join(HOSTS)} and node04 .. node{MAX_HOSTS}")
    return LAB_DIR / "hosts" / host


def ssh_dir() -> Path:
    return LAB_DIR / "ssh"


def known_hosts_path() -> Path:
    """known_hosts that pins every lab host's key under its address (strict checking)."""
    return ssh_dir() / "known_hosts"


def client_key_path() -> Path:
    """Private ed25519 key (no passphrase) authorised as root on every lab host."""
    return ssh_dir() / "id_ed25519"
