"""One lab host at a time: finding its processes, running a command inside it, and stopping
or starting its sshd, engine and network link (what the fault tests do to a host)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lab import netns, procs
from lab.osutil import LabError
from lab.topology import host_dir

HOSTINIT = Path(__file__).resolve().with_name("hostinit.sh")
# What sshd gives root; exec_on uses the same so both see the same tools (nvidia-smi on rtx1080).
SUPERUSER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_ENV = {
    "PATH": SUPERUSER_PATH,
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "DOCKER_BUILDKIT": "0",  # podman's Docker API has no BuildKit
}


# ---------------------------------------------------------------- finding a host's processes


def init_pid(host: str) -> int | None:
    """Root-namespace pid of the host's PID 1, or None when the host is not running."""
    return procs.init_pid(host, procs.netns_id(netns.netns_path(host)))


def require_init(host: str) -> int:
    pid = init_pid(host)
    if pid is None:
        raise LabError(f"lab host {host!r} is not up; start the lab with lab.manager.up()")
    return pid


def is_sshd(argv: tuple[str, ...]) -> bool:
    # sshd rewrites its title: "sshd: /usr/sbin/sshd -f ... [listener] ..." or "sshd: root@notty".
    return bool(argv) and (argv[0].startswith("sshd:") or Path(argv[0]).name == "sshd")


def is_sshd_listener(argv: tuple[str, ...]) -> bool:
    return is_sshd(argv) and ("[listener]" in " ".join(argv) or Path(argv[0]).name == "sshd")


def is_engine(argv: tuple[str, ...]) -> bool:
    return argv[:3] == ("podman", "system", "service")


def is_healthdriver(argv: tuple[str, ...]) -> bool:
    return any(part.endswith("healthdriver.py") for part in argv)


def host_procs(host: str, match: Callable[[tuple[str, ...]], bool]) -> list[int]:
    pid = init_pid(host)
    if pid is None:
        return []
    return [p.pid for p in procs.members(procs.ns_of(pid)) if match(p.argv)]


def kill(pids: Iterable[int], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever is alive after `grace` seconds (grace=0: SIGKILL now)."""
    pids = list(pids)
    steps = [(signal.SIGTERM, grace)] if grace > 0 else []
    for sig, wait in [*steps, (signal.SIGKILL, 5.0)]:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if procs.is_alive(p)]
            if not pids:
                return
            time.sleep(0.02)
    if pids:
        raise LabError(f"processes {pids} survived SIGKILL")


# ---------------------------------------------------------------- running things in a host


def exec_on(
    host: str, argv: list[str], *, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run argv inside the host's namespaces (net, mount, pid, uts, ipc) as root, from /root.

    Like `ssh root@host argv` without SSH: same PATH, same docker socket. Output is captured;
    the exit status is not checked. On timeout the whole command is killed.
    """
    pid = require_init(host)
    # Entering the mount ns puts cwd at its "/"; `env -C` then changes into the host's /root
    # (nsenter --wd would open the machine's /root, which the host's bind mount hides).
    full = ["nsenter", "-t", str(pid), "-n", "-m", "-p", "-u", "-i", "--", "env", "-C", "/root", *argv]
    with subprocess.Popen(
        full,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=HOST_ENV,
        start_new_session=True,  # one process group to kill on timeout
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def check(host: str, argv: list[str], timeout: float = 120) -> bytes:
    res = exec_on(host, argv, timeout=timeout)
    if res.returncode != 0:
        err = (res.stderr or res.stdout).decode(errors="replace").strip()
        raise LabError(f"on lab host {host}: {' '.join(argv)} exited {res.returncode}: {err}")
    return res.stdout


def start_daemon(host: str, daemon: str) -> None:
    check(host, ["bash", str(HOSTINIT), "start", daemon, str(host_dir(host))], timeout=30)


# ---------------------------------------------------------------- single-host controls


def stop_sshd(host: str) -> None:
    """Stop the host's sshd, listener and open sessions: the host is unreachable over SSH,
    while it, its engine and its containers keep running."""
    kill(host_procs(host, is_sshd), grace=2.0)


def start_sshd(host: str) -> None:
    if not host_procs(host, is_sshd_listener):
        start_daemon(host, "sshd")


def stop_engine(host: str) -> None:
    """Stop the host's podman API service (containers keep running, as with podman)."""
    kill(host_procs(host, is_engine), grace=5.0)


def start_engine(host: str) -> None:
    if not host_procs(host, is_engine):
        start_daemon(host, "engine")


def link_down(host: str) -> None:
    """Cut the host's network cable: packets to and from it are dropped."""
    require_init(host)
    netns.set_link(host, up=False)


def link_up(host: str) -> None:
    require_init(host)
    netns.set_link(host, up=True)


def engine_answers(pid: int, timeout: float = 2.0) -> bool:
    """Ping the host's Docker API through its mount namespace (/proc/<pid>/root)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(f"/proc/{pid}/root/run/docker.sock")
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: lab\r\n\r\n")
            status_line = sock.recv(256).split(b"\r\n", 1)[0]
            return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line + b" "
    except OSError:
        return False
