"""The simulated homelab's controls: up, down, status, reset, and poking single hosts.

Each host is a set of namespaces (net, mount, uts, ipc, pid) on this machine, booted by
lab/hostinit.sh under catatonit as PID 1, reachable over real SSH at its lab address and
running podman's Docker API, so `docker` and `docker compose` work inside it as on a real host.
Everything here must run as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import hostfiles, images, keys, netns, procs, sysstate
from lab.osutil import LabError, say
from lab.topology import BRIDGE, GPU_HOSTS, HOSTS, LAB_DIR, host_dir

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
# Inside a host these paths are replaced by private mounts, so LAB_DIR must not live there.
_SHADOWED = ("/root", "/run", "/var/run", "/srv", "/proc", "/sys", "/dev", "/etc", "/var/lib/containers")
BOOT_TIMEOUT = 30.0

# The unshare launchers this process started, reaped by down().
_launchers: dict[str, subprocess.Popen[bytes]] = {}


# ---------------------------------------------------------------- finding a host's processes


def _init(host: str) -> int | None:
    """Root-namespace pid of the host's PID 1, or None when the host is not running."""
    return procs.init_pid(host, procs.netns_id(netns.netns_path(host)))


def _require_init(host: str) -> int:
    pid = _init(host)
    if pid is None:
        raise LabError(f"lab host {host!r} is not up; start the lab with lab.manager.up()")
    return pid


def _is_sshd(argv: tuple[str, ...]) -> bool:
    # sshd rewrites its title: "sshd: /usr/sbin/sshd -f ... [listener] ..." or "sshd: root@notty".
    return bool(argv) and (argv[0].startswith("sshd:") or Path(argv[0]).name == "sshd")


def _is_sshd_listener(argv: tuple[str, ...]) -> bool:
    return _is_sshd(argv) and ("[listener]" in " ".join(argv) or Path(argv[0]).name == "sshd")


def _is_engine(argv: tuple[str, ...]) -> bool:
    return argv[:3] == ("podman", "system", "service")


def _is_healthdriver(argv: tuple[str, ...]) -> bool:
    return any(part.endswith("healthdriver.py") for part in argv)


def _host_procs(host: str, match: Callable[[tuple[str, ...]], bool]) -> list[int]:
    pid = _init(host)
    if pid is None:
        return []
    return [p.pid for p in procs.members(procs.ns_of(pid)) if match(p.argv)]


def _kill(pids: Iterable[int], grace: float) -> None:
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
    pid = _require_init(host)
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


def _check(host: str, argv: list[str], timeout: float = 120) -> bytes:
    res = exec_on(host, argv, timeout=timeout)
    if res.returncode != 0:
        err = (res.stderr or res.stdout).decode(errors="replace").strip()
        raise LabError(f"on lab host {host}: {' '.join(argv)} exited {res.returncode}: {err}")
    return res.stdout


def _start_daemon(host: str, daemon: str) -> None:
    _check(host, ["bash", str(HOSTINIT), "start", daemon, str(host_dir(host))], timeout=30)


# ---------------------------------------------------------------- single-host controls


def stop_sshd(host: str) -> None:
    """Stop the host's sshd, listener and open sessions: the host is unreachable over SSH,
    while it, its engine and its containers keep running."""
    _kill(_host_procs(host, _is_sshd), grace=2.0)


def start_sshd(host: str) -> None:
    if not _host_procs(host, _is_sshd_listener):
        _start_daemon(host, "sshd")


def stop_engine(host: str) -> None:
    """Stop the host's podman API service (containers keep running, as with podman)."""
    _kill(_host_procs(host, _is_engine), grace=5.0)


def start_engine(host: str) -> None:
    if not _host_procs(host, _is_engine):
        _start_daemon(host, "engine")


def link_down(host: str) -> None:
    """Cut the host's network cable: packets to and from it are dropped."""
    _require_init(host)
    netns.set_link(host, up=False)


def link_up(host: str) -> None:
    _require_init(host)
    netns.set_link(host, up=True)


def _engine_answers(pid: int, timeout: float = 2.0) -> bool:
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


def status() -> dict[str, dict[str, Any]]:
    """{host: {"address", "up", "sshd", "engine"}} for every lab host."""
    result: dict[str, dict[str, Any]] = {}
    for host, address in HOSTS.items():
        pid = _init(host)
        result[host] = {
            "address": address,
            "up": pid is not None,
            "sshd": bool(pid and _host_procs(host, _is_sshd_listener)),
            "engine": bool(pid and _engine_answers(pid)),
        }
    return result


# ---------------------------------------------------------------- up / down / reset


def _check_lab_dir() -> None:
    lab = LAB_DIR.resolve()
    for shadowed in _SHADOWED:
        if lab == Path(shadowed) or Path(shadowed) in lab.parents:
            raise LabError(
                f"HOMELAB_LAB_DIR={LAB_DIR} lies under {shadowed}, which every lab host replaces "
                "with a private mount; choose another directory (default /var/lib/homelab-lab)"
            )


def _ready(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/root/run/lab-ready")


def _boot(host: str) -> None:
    d = host_dir(host)
    procs.init_pid_path(host).unlink(missing_ok=True)
    with open(d / "init.log", "ab") as log:
        argv = [
            "nsenter", f"--net={netns.netns_path(host)}",
            "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
            "--propagation", "private",
            "catatonit", "--", "bash", str(HOSTINIT), "boot", host, str(d), "1" if host in GPU_HOSTS else "0",
        ]  # fmt: skip
        _launchers[host] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=HOST_ENV,
            cwd="/",
            start_new_session=True,  # survives Ctrl-C of whoever ran up()
        )


def _wait_booted(host: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    launcher = _launchers.get(host)
    while time.monotonic() < deadline:
        pid = _init(host)
        if pid and _ready(pid):
            return
        if launcher and launcher.poll() is not None:
            break
        time.sleep(0.02)
    log = (host_dir(host) / "init.log").read_text(errors="replace").splitlines()[-15:]
    raise LabError(f"lab host {host} did not boot; end of its init.log:\n" + "\n".join(log))


def _wait_ssh(host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOSTS[host], 22), timeout=1) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"sshd on lab host {host} ({HOSTS[host]}:22) does not answer")
        time.sleep(0.02)


def _repair(host: str) -> None:
    """Bring a running host back to normal: cable plugged in, every daemon running."""
    netns.set_link(host, up=True)
    start_engine(host)
    if not _host_procs(host, _is_healthdriver):
        _start_daemon(host, "healthdriver")
    start_sshd(host)


def _load_images(host: str, ids: dict[str, str]) -> None:
    listing = _check(host, images.list_images_argv()).decode()
    if images.missing_images(listing, ids):
        _check(host, images.load_argv(), timeout=300)


def _stray_processes(host: str) -> list[int]:
    """Processes of this host that a lost netns or pid file would hide (e.g. after a crash)."""
    ns = netns.netns_path(host)
    found = {p.pid for p in procs.members(procs.netns_id(ns), "net")}
    for p in procs.members(procs.ns_of(os.getpid(), "pid")):
        argv = p.argv
        if str(HOSTINIT) in argv and "boot" in argv and host in argv:
            found.add(p.pid)
    found.discard(os.getpid())
    return sorted(found)


def _teardown_host(host: str) -> None:
    pid = _init(host)
    if pid is not None:
        _kill([pid], grace=0)  # SIGKILL of PID 1 ends its whole pid namespace at once
    _kill(_stray_processes(host), grace=0)
    launcher = _launchers.pop(host, None)
    if launcher is not None:
        launcher.wait(timeout=5)
    netns.remove_host_netns(host)
    procs.init_pid_path(host).unlink(missing_ok=True)


@contextlib.contextmanager
def _lab_lock() -> Iterator[None]:
    """One up/down/reset at a time, across processes (CLI, test sessions)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with open(LAB_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _parallel(fn: Callable[[str], None], hosts: Iterable[str]) -> None:
    hosts = list(hosts)
    if not hosts:
        return
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for future in [pool.submit(fn, h) for h in hosts]:
            future.result()


def up() -> None:
    """Start the lab; hosts already up are only repaired (link, sshd, engine, driver)."""
    _check_lab_dir()
    with _lab_lock():
        _up()


def _up() -> None:
    started = time.monotonic()
    sysstate.record()
    sysstate.ensure_mountpoints()
    keys.ensure_keys()
    for host in HOSTS:
        hostfiles.write_host_files(host)
    netns.ensure_bridge()
    running, booting = [], []
    for host, address in HOSTS.items():
        pid = _init(host)
        if pid is not None and _ready(pid):
            running.append(host)
            continue
        _teardown_host(host)  # a half-up leftover: rebuild it from scratch
        netns.ensure_host_netns(host, address)
        _boot(host)
        booting.append(host)
    if booting:
        say(f"booting {', '.join(booting)}")
    ids = images.ensure_built()  # overlaps with the hosts' boot
    for host in booting:
        _wait_booted(host)
    _parallel(_repair, running)
    _parallel(lambda h: _load_images(h, ids), HOSTS)
    for host in HOSTS:
        _wait_ssh(host)
    say(f"up in {time.monotonic() - started:.1f}s ({', '.join(f'{h}={a}' for h, a in HOSTS.items())})")


def _lab_container_ids() -> set[str]:
    """IDs of every container in the hosts' podman storage (for their cgroups)."""
    ids: set[str] = set()
    for host in HOSTS:
        path = hostfiles.storage_dir(host) / "overlay-containers" / "containers.json"
        try:
            ids.update(c["id"] for c in json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ids


def down() -> None:
    """Stop every lab process and undo every runtime change; keeps keys, images and storage."""
    with _lab_lock():
        _down()


def _down() -> None:
    started = time.monotonic()
    for host in HOSTS:
        _teardown_host(host)
    if os.path.exists(f"/sys/class/net/{BRIDGE}") or (LAB_DIR / "machine-state.json").exists():
        netns.remove_bridge()
        sysstate.remove_container_cgroups(_lab_container_ids())
        sysstate.restore()
        say(f"down in {time.monotonic() - started:.1f}s")


RESET_SCRIPT = (
    "podman rm -af -t 0 >/dev/null"
    " && podman pod rm -af -t 0 >/dev/null"
    " && podman network prune -f >/dev/null"
    " && podman volume prune -f >/dev/null"
    " && rm -rf /root/.homelab"
    " && find /srv -mindepth 1 -delete"
)


def reset() -> None:
    """Clean every host for the next test: no containers, pods, networks or volumes, no
    deploy state (/root/.homelab) and an empty /srv; daemons and links restored."""

    def one(host: str) -> None:
        _require_init(host)
        _repair(host)
        _check(host, ["sh", "-c", RESET_SCRIPT])

    with _lab_lock():
        _parallel(one, HOSTS)
