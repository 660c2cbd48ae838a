"""Names of the snapshots the orchestrator makes (pure). Only these are ever deleted or pruned."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

PREFIX = "homelab-"
MAX_NAME = 40  # Proxmox's limit for a snapshot name

_PVE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_STAMP = "%Y%m%dT%H%M"
_OURS = re.compile(re.escape(PREFIX) + r"\d{8}T\d{4}-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}")


def _run_tag(flow_run_id: str) -> str:
    """8 hex characters naming the run: the start of its UUID, or a hash of any other id."""
    try:
        return uuid.UUID(flow_run_id).hex[:8]
    except ValueError:
        return hashlib.sha256(flow_run_id.encode()).hexdigest()[:8]


def snapshot_name(flow_run_id: str, phase: str, now: datetime | None = None) -> str:
    """``homelab-<UTC yyyymmddThhmm>-<phase>-<run>``, e.g. ``homelab-20261127T0102-core-1a2b3c4d``.

    A valid Proxmox name (a letter first, ``[A-Za-z0-9_-]``, at most 40 characters) that sorts by
    time. The phase is lower-cased, reduced to ``[a-z0-9-]`` and cut to fit; the run is the first
    8 hex digits of the flow run's UUID (a hash for any other id). A naive ``now`` is taken as UTC.
    """
    if not flow_run_id:
        raise ValueError("snapshot_name needs a flow run id")
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.astimezone(UTC).strftime(_STAMP)
    run = _run_tag(flow_run_id)
    room = MAX_NAME - len(PREFIX) - len(stamp) - len(run) - 2
    slug = re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-")[:room].strip("-") or "phase"
    return f"{PREFIX}{stamp}-{slug}-{run}"


def is_ours(name: str) -> bool:
    """True only for names ``snapshot_name`` makes; a hand-made ``homelab-before-upgrade`` is not ours."""
    return len(name) <= MAX_NAME and _OURS.fullmatch(name) is not None


def age_key(snapshot: Mapping[str, Any]) -> tuple[str, int, str]:
    """Oldest first, for our snapshots: the UTC minute stamp in the name, then Proxmox's snaptime
    (seconds), then the rest of the name. The stamp leads because snaptime only says when the
    snapshot was taken, to the second, and ties or crosses a second boundary by chance."""
    try:
        snaptime = int(snapshot.get("snaptime") or 0)
    except (TypeError, ValueError):
        snaptime = 0
    name = str(snapshot.get("name", ""))
    return name[len(PREFIX):len(PREFIX) + len("yyyymmddThhmm")], snaptime, name


def valid_name(name: str) -> bool:
    """A name Proxmox accepts for a snapshot (and not one of its reserved words)."""
    reserved = name.lower() in ("current", "pending")
    return len(name) <= MAX_NAME and _PVE_NAME.fullmatch(name) is not None and not reserved
