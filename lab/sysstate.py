"""The machine state the lab changes, recorded before the first `up` and restored by `down`.

Recorded once (LAB_DIR/machine-state.json) and deleted after a successful restore, so a
second `up` on a running lab never records the lab's own changes as "the original".
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from lab.netns import NETNS_DIR
from lab.osutil import is_mountpoint, run
from lab.topology import LAB_DIR

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Mount point for each host's private /var/lib/containers (podman writes its blob-info cache
# there whatever storage.conf says). Created empty if the machine has none.
VAR_LIB_CONTAINERS = Path("/var/lib/containers")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "libpod_parent"


def _state_path() -> Path:
    return LAB_DIR / "machine-state.json"


def _cgroup_parents() -> list[Path]:
    return sorted(CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}"))


def record() -> None:
    """Remember what the machine looked like before the lab touched it (first up only)."""
    if _state_path().exists():
        return
    state = {
        "ip_forward": IP_FORWARD.read_text().strip(),
        "existed": [str(p) for p in (VAR_LIB_CONTAINERS, *_cgroup_parents()) if p.exists()]
        + ([str(NETNS_DIR)] if NETNS_DIR.exists() else []),
        "netns_dir_mounted": is_mountpoint(NETNS_DIR),
    }
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    _state_path().write_text(json.dumps(state, indent=1) + "\n")


def ensure_mountpoints() -> None:
    VAR_LIB_CONTAINERS.mkdir(parents=True, exist_ok=True)


def _rmdir(path: Path) -> None:
    # The kernel refuses a busy cgroup and rmdir refuses a non-empty dir: safe to try.
    with contextlib.suppress(OSError):
        path.rmdir()


def remove_container_cgroups(container_ids: set[str]) -> None:
    """Remove cgroups left by lab containers that died with their host.

    cgroup_manager=cgroupfs puts each container in <controller>/libpod_parent/libpod-<id> and
    conmon in libpod_parent/conmon. If the lab created libpod_parent, all of it is the lab's;
    otherwise only the lab's own containers' cgroups are touched.
    """
    state = json.loads(_state_path().read_text()) if _state_path().exists() else {}
    existed = set(state.get("existed", [str(p) for p in _cgroup_parents()]))
    for parent in _cgroup_parents():
        ours_entirely = str(parent) not in existed
        for child in parent.iterdir():
            if not child.is_dir():
                continue
            cid = child.name.removeprefix("libpod-")
            if ours_entirely or cid in container_ids:
                for sub in sorted(child.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        _rmdir(sub)
                _rmdir(child)
        if ours_entirely:
            _rmdir(parent)


def restore() -> None:
    """Undo the lab's machine-wide changes; call once no lab process is left (and after
    remove_container_cgroups, which needs the record)."""
    path = _state_path()
    if not path.exists():
        return
    state = json.loads(path.read_text())
    existed = set(state.get("existed", []))
    if str(VAR_LIB_CONTAINERS) not in existed and VAR_LIB_CONTAINERS.is_dir():
        _rmdir(VAR_LIB_CONTAINERS)  # only if still empty: never delete others' data
    # `ip netns add` turns /run/netns into a shared bind mount of itself; undo that too.
    if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        if not state.get("netns_dir_mounted") and is_mountpoint(NETNS_DIR):
            run(["umount", str(NETNS_DIR)], check=False)
        if str(NETNS_DIR) not in existed:
            _rmdir(NETNS_DIR)
    IP_FORWARD.write_text(state["ip_forward"] + "\n")
    path.unlink()
