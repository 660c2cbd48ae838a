"""SSH keys of the lab: one client key and one pinned ed25519 host key per host.

Keys are generated once and kept under LAB_DIR, so known_hosts stays valid across up/down.
"""

from __future__ import annotations

from pathlib import Path

from lab.osutil import run, write_file
from lab.topology import client_key_path, host_dir, known_hosts_path, lab_hosts, ssh_dir


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def host_key_path(host: str) -> Path:
    return host_dir(host) / "ssh_host_ed25519_key"


def ensure_keys() -> None:
    """Create missing keys and rewrite known_hosts (address -> host key, strict checking)."""
    ssh_dir().mkdir(parents=True, exist_ok=True)
    ssh_dir().chmod(0o700)
    _keygen(client_key_path(), "homelab-lab-client")
    lines = []
    for host, address in lab_hosts().items():
        _keygen(host_key_path(host), f"root@{host}")
        key_type, key_b64 = host_key_path(host).with_suffix(".pub").read_text().split()[:2]
        lines.append(f"{address} {key_type} {key_b64}\n")
    write_file(known_hosts_path(), "".join(lines))


def authorized_keys() -> str:
    return client_key_path().with_suffix(".pub").read_text()
