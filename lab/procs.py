"""Finding a lab host's processes from the root namespace.

Each host is a pid namespace whose PID 1 (catatonit) is recorded, as a root-namespace pid, in
LAB_DIR/hosts/<host>/init.pid. Daemons inside are found by scanning /proc for processes in
that pid namespace, so no pid file can go stale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.topology import host_dir


@dataclass(frozen=True)
class Proc:
    pid: int  # as seen from the root namespace
    argv: tuple[str, ...]


def init_pid_path(host: str) -> Path:
    return host_dir(host) / "init.pid"


def ns_of(pid: int, kind: str = "pid") -> str | None:
    """Namespace id such as 'pid:[4026532301]' of a process (None if it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def init_pid(host: str, netns: str | None) -> int | None:
    """PID 1 of the host if it is alive and really is this host's init (pids get reused):
    catatonit, started for this host, inside the host's netns (`netns` from netns_id)."""
    try:
        pid = int(init_pid_path(host).read_text())
    except (OSError, ValueError):
        return None
    argv = _argv(pid)
    if not argv or Path(argv[0]).name != "catatonit" or host not in argv:
        return None
    if netns is None or ns_of(pid, "net") != netns:
        return None
    return pid


def netns_id(netns_file: Path) -> str | None:
    """Namespace id of a named netns (its nsfs inode), comparable with ns_of(pid, "net")."""
    try:
        return f"net:[{os.stat(netns_file).st_ino}]"
    except OSError:
        return None


def members(ns: str | None, kind: str = "pid") -> list[Proc]:
    """Processes in the namespace `ns` (from ns_of or netns_id) of the given kind."""
    if ns is None:
        return []
    return [
        Proc(int(e.name), _argv(int(e.name)))
        for e in os.scandir("/proc")
        if e.name.isdigit() and ns_of(int(e.name), kind) == ns
    ]


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
