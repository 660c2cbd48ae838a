"""The host's deploy lock: an atomic ``mkdir`` with an owner file (Kamal's lock), and its owner.

The survey takes a free lock in its own round trip (``survey.SURVEY``); these commands take,
release, read and break it on their own.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import asdict, dataclass

from model.releases import utc_now
from tasks.host_commands.layout import LOCK, LOCK_OWNER, lock_dir
from tasks.host_commands.shell import script, sh

TAKE_LOCK = script('mkdir -p "$1" && { take_lock "$1" "$2" || lock_owner "$1"; }', "take_lock", "lock_owner")
RELEASE_LOCK = (f'grep -qF "\\"flow_run_id\\": \\"$2\\"" "$1/{LOCK_OWNER}" 2>/dev/null && '
                f'rm -rf -- "$1/{LOCK}"; true')


@dataclass(frozen=True, kw_only=True)
class LockOwner:
    flow_run_id: str
    user: str
    host: str
    pid: int
    started_at: str
    commit: str | None

    @classmethod
    def for_run(cls, flow_run_id: str, commit: str | None) -> LockOwner:
        return cls(flow_run_id=flow_run_id, user=getpass.getuser(), host=socket.gethostname(), pid=os.getpid(),
                   started_at=utc_now(), commit=commit)

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


def break_lock(state_dir: str) -> list[str]:
    return ["rm", "-rf", "--", lock_dir(state_dir)]


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
