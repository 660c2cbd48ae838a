"""The simulated homelab's controls: up, down, status, reset, and (from ``hostctl``) single hosts.

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
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import hostfiles, images, keys, netns, procs, sysstate
from lab.hostctl import (  # the single-host controls are part of the lab's controls
    HOST_ENV,
    HOSTINIT,
    SUPERUSER_PATH,
    check,
    engine_answers,
    exec_on,
    host_procs,
    init_pid,
    is_healthdriver,
    is_sshd_listener,
    kill,
    link_down,
    link_up,
    require_init,
    start_daemon,
    start_engine,
    start_sshd,
    stop_engine,
    stop_sshd,
)
from lab.osutil import LabError, say
from lab.topology import BRIDGE, GPU_HOSTS, HOSTS, LAB_DIR, host_dir, lab_hosts, record_size, recorded_size

# Inside a host these paths are replaced by private mounts, so LAB_DIR must not live there.
_SHADOWED = ("/root", "/run", "/var/run", "/srv", "/proc", "/sys", "/dev", "/etc", "/var/lib/containers")
BOOT_TIMEOUT = 30.0

# The unshare launchers this process started, reaped by down().
_launchers: dict[str, subprocess.Popen[bytes]] = {}


def status() -> dict[str, dict[str, Any]]:
    """{host: {"address", "up", "sshd", "engine"}} for every lab host."""
    result: dict[str, dict[str, Any]] = {}
    for host, address in lab_hosts().items():
        pid = init_pid(host)
        result[host] = {
            "address": address,
            "up": pid is not None,
            "sshd": bool(pid and host_procs(host, is_sshd_listener)),
            "engine": bool(pid and engine_answers(pid)),
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


def python_prefix_env() -> dict[str, str]:
    """A host's /root is its own; when this machine's Python lives under /root (pyenv), the host
    keeps seeing it, read-only, so a worker on the host can run the project's venv."""
    prefix = os.path.realpath(sys.base_prefix)
    return {"LAB_PYTHON_PREFIX": prefix} if prefix.startswith("/root/") else {}


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
            env={**HOST_ENV, **python_prefix_env()},
            cwd="/",
            start_new_session=True,  # survives Ctrl-C of whoever ran up()
        )


def _wait_booted(host: str, booting: int = 1) -> None:
    # Hosts boot together on this machine's few cores: allow each some CPU time of its own.
    deadline = time.monotonic() + BOOT_TIMEOUT + 2 * booting
    launcher = _launchers.get(host)
    while time.monotonic() < deadline:
        pid = init_pid(host)
        if pid and _ready(pid):
            return
        if launcher and launcher.poll() is not None:
            break
        time.sleep(0.02)
    log = (host_dir(host) / "init.log").read_text(errors="replace").splitlines()[-15:]
    raise LabError(f"lab host {host} did not boot; end of its init.log:\n" + "\n".join(log))


def _wait_ssh(host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    address = lab_hosts()[host]
    while True:
        try:
            with socket.create_connection((address, 22), timeout=1) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"sshd on lab host {host} ({address}:22) does not answer")
        time.sleep(0.02)


def _repair(host: str) -> None:
    """Bring a running host back to normal: cable plugged in, every daemon running."""
    netns.set_link(host, up=True)
    start_engine(host)
    if not host_procs(host, is_healthdriver):
        start_daemon(host, "healthdriver")
    start_sshd(host)


def _load_images(host: str, ids: dict[str, str]) -> None:
    listing = check(host, images.list_images_argv()).decode()
    if images.missing_images(listing, ids):
        check(host, images.load_argv(), timeout=300)


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
    pid = init_pid(host)
    if pid is not None:
        kill([pid], grace=0)  # SIGKILL of PID 1 ends its whole pid namespace at once
    kill(_stray_processes(host), grace=0)
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


def _parallel(fn: Callable[[str], None], hosts: Iterable[str], limit: int = 8) -> None:
    """``fn`` for every host, ``limit`` at a time (a 30-host lab must not fork 30 podmans at once)."""
    hosts = list(hosts)
    if not hosts:
        return
    with ThreadPoolExecutor(max_workers=min(limit, len(hosts))) as pool:
        for future in [pool.submit(fn, h) for h in hosts]:
            future.result()


def up(hosts: int = len(HOSTS)) -> None:
    """Start a lab of ``hosts`` hosts (vps, thinkpad, rtx1080, then node04 ..); hosts already up
    are only repaired (link, sshd, engine, driver), and hosts beyond ``hosts`` are stopped."""
    _check_lab_dir()
    wanted = lab_hosts(hosts)  # validates the count before anything changes
    with _lab_lock():
        _up(wanted)


def _up(wanted: dict[str, str]) -> None:
    started = time.monotonic()
    # Record the larger size first: a crash from here on still leaves `down` every host to stop.
    surplus = [h for h in lab_hosts() if h not in wanted]
    record_size(max(recorded_size(), len(wanted)))
    if surplus:
        leftover = _lab_container_ids(surplus)
        _parallel(_teardown_host, surplus)
        sysstate.remove_container_cgroups(leftover)
    record_size(len(wanted))
    sysstate.record()
    sysstate.ensure_mountpoints()
    keys.ensure_keys()
    for host in wanted:
        hostfiles.write_host_files(host)
    netns.ensure_bridge()
    running, booting = [], []
    for host, address in wanted.items():
        pid = init_pid(host)
        if pid is not None and _ready(pid):
            running.append(host)
            continue
        _teardown_host(host)  # a half-up leftover: rebuild it from scratch
        netns.ensure_host_netns(host, address)
        _boot(host)
        booting.append(host)
    if booting:
        say(f"booting {_names(booting)}")
    ids = images.ensure_built()  # overlaps with the hosts' boot
    for host in booting:
        _wait_booted(host, len(booting))
    _parallel(_repair, running)
    _parallel(lambda h: _load_images(h, ids), wanted)
    for host in wanted:
        _wait_ssh(host)
    say(f"up in {time.monotonic() - started:.1f}s ({_names([f'{h}={a}' for h, a in wanted.items()])})")


def _names(items: list[str], shown: int = 6) -> str:
    """A list for one line of output: a 30-host lab names its first few and counts the rest."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _lab_container_ids(hosts: Iterable[str]) -> set[str]:
    """IDs of every container in these hosts' podman storage (for their cgroups)."""
    ids: set[str] = set()
    for host in hosts:
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
    _parallel(_teardown_host, lab_hosts())
    if os.path.exists(f"/sys/class/net/{BRIDGE}") or (LAB_DIR / "machine-state.json").exists():
        netns.remove_bridge()
        sysstate.remove_container_cgroups(_lab_container_ids(lab_hosts()))
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
        require_init(host)
        _repair(host)
        check(host, ["sh", "-c", RESET_SCRIPT])

    with _lab_lock():
        _parallel(one, lab_hosts())


__all__ = ["SUPERUSER_PATH", "down", "exec_on", "link_down", "link_up", "reset", "start_engine", "start_sshd",
           "status", "stop_engine", "stop_sshd", "up"]
