"""Small OS helpers for the lab: running tools (ip, iptables, ssh-keygen), files, mounts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


class LabError(RuntimeError):
    """A lab step failed; the message says which command and what it printed."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv, capturing output; raise LabError with stderr when check fails."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {err}")
    return proc


def ok(argv: Sequence[str], timeout: float = 30) -> bool:
    """True when argv exits 0 (used for idempotence probes such as `iptables -C`)."""
    return run(argv, check=False, timeout=timeout).returncode == 0


def say(message: str) -> None:
    """One short progress line on stderr."""
    print(f"lab: {message}", file=sys.stderr, flush=True)


def is_mountpoint(path: Path) -> bool:
    """True when something is mounted exactly at path in this mount namespace."""
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write text only when it changed (keeps mtimes of a warm lab still), then set mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    path.chmod(mode)
