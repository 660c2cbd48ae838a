"""The host-side file layout, in one place. Paths are relative to the deploy user's home
directory (where an SSH command starts) unless the inventory's ``state_dir`` is absolute.

Under ``state_dir`` (default ``.homelab``)::

    stacks/<stack>/                        compose project directory (stable across releases; the
                                           stack's `project_dir` may put it elsewhere)
    releases/<stack>/<release>/files/...   the stack folder as shipped (installed into the project dir)
    releases/<stack>/<release>/<env file>  rendered secrets (mode 0600); homelab.env: inventory `env:`
    releases/<stack>/<release>/compose.yaml  releases made before stacks were folders
    releases/<stack>/<release>/release.json
    releases/<stack>/current               id of the active release
    releases/<stack>/pending               marker of a deploy in progress (JSON, no secrets)
    lock/owner.json                        the host's deploy lock (an atomic mkdir) and its owner
    lock/owner.json.unlocking.<pid>        the owner file, held aside while `homelab unlock` compares it
    locks/<stack>.lock                     the stack's flock: one compose operation on a project at a time
"""

from __future__ import annotations

STACKS = "stacks"
RELEASES = "releases"
COMPOSE_FILE = "compose.yaml"
RELEASE_RECORD = "release.json"
CURRENT = "current"
PENDING = "pending"
LOCK = "lock"
LOCK_OWNER = f"{LOCK}/owner.json"
LOCK_OWNER_HELD = f"{LOCK_OWNER}.unlocking"
STACK_LOCKS = "locks"
RELEASE_ID_PATTERN = "^[0-9]{8}T[0-9]{6}Z-"  # grep -E: a directory under releases/<stack>/ that is a release


def stack_dir(state_dir: str, stack: str) -> str:
    return f"{state_dir}/{STACKS}/{stack}"


def releases_dir(state_dir: str, stack: str) -> str:
    return f"{state_dir}/{RELEASES}/{stack}"


def release_dir(state_dir: str, stack: str, release: str) -> str:
    return f"{releases_dir(state_dir, stack)}/{release}"


def release_compose_file(state_dir: str, stack: str, release: str) -> str:
    return f"{release_dir(state_dir, stack, release)}/{COMPOSE_FILE}"


def current_file(state_dir: str, stack: str) -> str:
    return f"{releases_dir(state_dir, stack)}/{CURRENT}"


def lock_dir(state_dir: str) -> str:
    return f"{state_dir}/{LOCK}"


def stack_locks_dir(state_dir: str) -> str:
    return f"{state_dir}/{STACK_LOCKS}"


def stack_lock_file(state_dir: str, stack: str) -> str:
    return f"{stack_locks_dir(state_dir)}/{stack}.lock"
