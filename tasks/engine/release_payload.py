"""What moves to a host for one release: only the files that changed since the release it
replaces, the rendered env files, and which services must be recreated to see new files.

Pure decisions over manifests (path -> "mode:sha256"); the stage and start steps carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.compose_model import INVENTORY_ENV_FILE, affected_services, inventory_env_text
from model.desired import DesiredStack
from model.releases import ReleaseRecord
from model.stack_files import changed_paths
from tasks.host_commands.layout import release_dir

SECRET_MODE = 0o600


@dataclass(frozen=True, kw_only=True)
class Payload:
    """One stage round trip: the tar, the base release its files are copied from, and the
    paths dropped since that base."""

    tar: bytes = field(repr=False)
    base: str | None  # host path of the base release directory
    dropped: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()  # stack files in the tar


def payload(stack: DesiredStack, state_dir: str, previous: ReleaseRecord | None) -> Payload:
    """The tar for ``stack``'s new release. With a previous release that recorded its files,
    only changed files travel; the rest are copied on the host from that release."""
    manifest = stack.files.manifest()
    extra = {name: (rendered.content, SECRET_MODE) for name, rendered in stack.env_files.items()}
    if stack.compose.env:
        extra[INVENTORY_ENV_FILE] = (inventory_env_text(stack.compose.env), 0o644)
    if previous is not None and previous.files:
        sent = sorted(p for p in manifest if previous.files.get(p) != manifest[p])
        dropped = tuple(dropped_from(previous.files, manifest))
        base = release_dir(state_dir, stack.name, previous.id)
    else:
        sent, dropped, base = sorted(manifest), (), None
    return Payload(tar=stack.files.tar(only=sent, extra=extra), base=base, dropped=dropped, sent=tuple(sent))


def dropped_from(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Project-directory files to remove when going from release ``old`` to ``new``."""
    return sorted(set(old) - set(new))


def to_recreate(old_files: dict[str, str] | None, new_files: dict[str, str], mounts: dict) -> list[str]:
    """Services (by ``mounts``, of the release going live) that mount a file that differs
    between the two manifests; none on a first deploy (``old_files`` None: every container
    is new anyway)."""
    if old_files is None:
        return []
    return affected_services(mounts, changed_paths(old_files, new_files))
