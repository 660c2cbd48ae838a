"""The host's deploy lock: an atomic ``mkdir`` with an owner file (Kamal's lock), and its owner.

The survey takes a free lock in its own round trip (``survey.SURVEY``); these commands take,
release, read and break it on their own.

An owner records where its orchestrator process runs: a pid names the same process only on
the same machine, in the same boot and pid namespace, and with the same start time. The
hostname is for people; two orchestrators may share one (host-network containers, cloned VMs).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from model.releases import utc_now
from tasks.host_commands.layout import LOCK, LOCK_OWNER, lock_dir
from tasks.host_commands.shell import script, sh

TAKE_LOCK = script('mkdir -p -- "$1" && { take_lock "$1" "$2" || lock_owner "$1"; }', "take_lock", "lock_owner")
RELEASE_LOCK = (f'grep -qF "\\"flow_run_id\\": \\"$2\\"" "$1/{LOCK_OWNER}" 2>/dev/null && '
                f'rm -rf -- "$1/{LOCK}"; true')
# prints nothing (exit 1) when the lock is free; else its owner file's digest, then the file
SHOW_LOCK = script(f'[ -d "$1/{LOCK}" ] || exit 1\nprintf \'@@digest %s\\n\' "$(file_digest "$1/{LOCK_OWNER}")"\n'
                   'lock_owner "$1"', "file_digest", "lock_owner")
UNLOCK_IF = script('unlock_if "$1" "$2"', "file_digest", "unlock_if")

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE = "/proc/self/ns/pid"


@dataclass(frozen=True)
class Machine:
    """Where a pid means one process. None: this machine cannot tell (then no pid is judged)."""
    machine_id: str | None
    boot_id: str | None
    pid_ns: str | None

    @property
    def known(self) -> bool:
        return None not in (self.machine_id, self.boot_id, self.pid_ns)


def _first_line(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def this_machine() -> Machine:
    machine_id = next((m for m in map(_first_line, MACHINE_ID_FILES) if m), None)
    try:
        pid_ns = os.readlink(PID_NAMESPACE)  # "pid:[4026531836]": containers sharing a kernel differ here
    except OSError:
        pid_ns = None
    return Machine(machine_id=machine_id, boot_id=_first_line(BOOT_ID_FILE), pid_ns=pid_ns)


def parse_start_ticks(stat: str) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``: the start time in clock ticks since boot. The command
    name (field 2) may hold spaces and parentheses, so fields are counted after its last ``)``."""
    _, paren, rest = stat.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        return None
    return int(fields[19]) if fields[19].isdigit() else None


def process_start(pid: int) -> int | None:
    """This machine's process ``pid``'s start ticks; None if it cannot be read (gone, or hidden)."""
    try:
        return parse_start_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError):
        return None


def pid_exists(pid: int) -> bool | None:
    """Whether ``pid`` exists here (signal 0); None when that cannot be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OSError, OverflowError):
        return None
    return True


@dataclass(frozen=True, kw_only=True)
class LockOwner:
    flow_run_id: str
    user: str
    host: str
    pid: int
    started_at: str
    commit: str | None
    machine_id: str | None = None
    boot_id: str | None = None
    pid_ns: str | None = None
    pid_start: int | None = None  # ticks since boot: tells the owner from a later process with its pid

    @classmethod
    def for_run(cls, flow_run_id: str, commit: str | None) -> LockOwner:
        here, pid = this_machine(), os.getpid()
        return cls(flow_run_id=flow_run_id, user=getpass.getuser(), host=socket.gethostname(), pid=pid,
                   started_at=utc_now(), commit=commit, machine_id=here.machine_id, boot_id=here.boot_id,
                   pid_ns=here.pid_ns, pid_start=process_start(pid))

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def take_lock(state_dir: str, owner_json: str) -> list[str]:
    """Prints ``@@acquired`` if the lock was free, else the current owner's JSON."""
    return sh(TAKE_LOCK, "take-lock", state_dir, owner_json)


def release_lock(state_dir: str, flow_run_id: str) -> list[str]:
    """Remove the lock only if this flow run owns it."""
    return sh(RELEASE_LOCK, "release-lock", state_dir, flow_run_id)


def read_lock_owner(state_dir: str) -> list[str]:
    """Prints the lock's owner JSON; nothing (exit 1) when the lock is free."""
    return sh(script('lock_owner "$1"', "lock_owner"), "lock-owner", state_dir)


def show_lock(state_dir: str) -> list[str]:
    """Prints ``@@digest <sha256 of owner.json, or none>`` and the owner JSON; nothing (exit 1)
    when the lock is free. ``homelab unlock`` shows this, then removes only this owner's lock."""
    return sh(SHOW_LOCK, "show-lock", state_dir)


def unlock_if(state_dir: str, digest: str) -> list[str]:
    """Remove the lock only if its owner file still has ``digest`` (``none``: no owner file).
    Prints ``@@removed``, ``@@free`` (nothing to remove), or ``@@changed <digest>`` (exit 3)."""
    return sh(UNLOCK_IF, "unlock-if", state_dir, digest)


def break_lock(state_dir: str) -> list[str]:
    return ["rm", "-rf", "--", lock_dir(state_dir)]


@dataclass(frozen=True)
class LockSnapshot:
    """A held lock as ``show_lock`` saw it: what ``homelab unlock`` shows and compares."""
    digest: str  # sha256 of owner.json, or "none" (a lock dir without an owner file)
    owner: dict | None


def parse_lock_snapshot(text: str) -> LockSnapshot | None:
    """``show_lock``'s answer; None when the lock is free."""
    first, _, rest = text.partition("\n")
    if not first.startswith("@@digest "):
        return None
    return LockSnapshot(digest=first.removeprefix("@@digest ").strip(), owner=parse_owner(rest))


def parse_unlock(text: str) -> tuple[str, str | None]:
    """``unlock_if``'s answer: (``removed`` | ``free`` | ``changed`` | ``unknown``, the digest it
    found if changed)."""
    for line in text.splitlines():
        word, _, rest = line.removeprefix("@@").partition(" ")
        if line.startswith("@@") and word in ("removed", "free", "changed"):
            return word, rest.strip() or None
    return "unknown", None  # no marker: the script was cut off or failed; nothing is known removed


def parse_owner(text: str) -> dict | None:
    try:
        value = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def describe_owner(owner: dict | None) -> str:
    if not owner:
        return "an unknown owner (no owner.json)"
    return (f"flow run {owner.get('flow_run_id')} (user {owner.get('user')} on {owner.get('host')}, "
            f"pid {owner.get('pid')}, since {owner.get('started_at')}, commit {owner.get('commit')})")
