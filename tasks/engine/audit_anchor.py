"""The audit log's head, anchored outside the file: a Prefect variable.

Whoever can rewrite the log and its head file cannot (we assume) write Prefect variables, so
``check_anchor`` catches what the file alone cannot: a tail cut off together with a head file
made to match, and a whole log rewritten with recomputed hashes. ``anchor()`` runs at the end
of every flow run and by hand (``homelab audit anchor``); it never moves the anchor back over a
log that no longer holds the anchored record, so tampering cannot erase its own evidence.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tasks.engine import audit

ANCHOR_VARIABLE = "homelab-audit-head"  # Prefect 3 variable names: [a-z0-9_-], at most 255
NAME_ENV = "HOMELAB_AUDIT_ANCHOR"       # another name, for a second log on the same Prefect server
TIMEOUT_S = 15.0
ANCHORED = "anchored "  # how anchor()'s note starts when it wrote the anchor
# what a missing or slow Prefect API raises (PrefectHTTPStatusError is an httpx.HTTPStatusError)
_UNREACHABLE = (httpx.HTTPError, OSError, TimeoutError)


def variable_name() -> str:
    return os.environ.get(NAME_ENV) or ANCHOR_VARIABLE


def _log_id(path: Path) -> str:
    return str(path.resolve())


async def _read(client, name: str) -> dict | None:
    variable = await client.read_variable_by_name(name)
    return variable.value if variable is not None and isinstance(variable.value, dict) else None


async def _write(client, name: str, value: dict) -> None:
    """Variable.aset(name, value, overwrite=True), on our own client (aset outside a flow run
    would use a client it never opens)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    fields = {"name": name, "value": value, "tags": ["homelab", "audit"]}
    if await client.read_variable_by_name(name) is None:
        await client.create_variable(variable=VariableCreate(**fields))
    else:
        await client.update_variable(variable=VariableUpdate(**fields))


def _client():
    from prefect.client.orchestration import get_client

    return get_client()


def _unreachable(exc: BaseException) -> str:
    return f"Prefect API unreachable ({type(exc).__name__}: {exc}): the anchor was not checked"


async def anchor(log_path: Path | None = None, *, force: bool = False) -> audit.Findings:
    """Write the log's head {count, hash, length, time} into the anchor variable. Refused (a
    problem, nothing written) when the anchored record is gone from this log, unless ``force``
    (after a deliberate reset of the log). Prefect unreachable: a note, never an exception."""
    path = log_path or audit.audit_path()
    found = audit.Findings()
    head = _head_now(path)
    value = {"count": head.count, "hash": head.hash, "length": head.length,
             "time": datetime.now(UTC).isoformat(timespec="seconds"), "log": _log_id(path)}
    try:
        async with asyncio.timeout(TIMEOUT_S), _client() as client:
            old = await _read(client, variable_name())
            if old is not None and not force and old.get("log") == value["log"]:
                found.problems.extend(_still_there(path, old))
            if not found.problems:
                await _write(client, variable_name(), value)
    except _UNREACHABLE as exc:
        found.notes.append(_unreachable(exc))
        return found
    if found.problems:
        found.problems.append(f"{path}: the anchor was not moved (it keeps the evidence); after a deliberate "
                              "reset of the log: `homelab audit anchor --force`")
    else:
        found.notes.append(f"{ANCHORED}{variable_name()}: {head.count} records, last {head.hash[:12]}")
    return found


def _head_now(path: Path) -> audit.Head:
    """The head as the log is now: the head file's, else counted from the lines."""
    try:
        head = audit.read_head(path)
    except audit.HeadUnreadable:
        head = None
    if head is not None:
        return head
    lines = audit.read_lines(path)
    return audit.Head(len(lines), (audit.hash_of(lines[-1]) if lines else None) or audit.GENESIS,
                      sum(len(line) + 1 for line in lines))


async def check_anchor(log_path: Path | None = None) -> audit.Findings:
    """The log against the anchor: it must have at least ``count`` records, and record number
    ``count`` must have the anchored hash. No variable yet, or Prefect unreachable: a note."""
    path = log_path or audit.audit_path()
    found = audit.Findings()
    name = variable_name()
    try:
        async with asyncio.timeout(TIMEOUT_S), _client() as client:
            value = await _read(client, name)
    except _UNREACHABLE as exc:
        found.notes.append(_unreachable(exc))
        return found
    if value is None:
        found.notes.append(f"no anchor yet (Prefect variable {name}): `homelab audit anchor` writes one, and so "
                           "does every flow run")
        return found
    if value.get("log") not in (None, _log_id(path)):
        found.notes.append(f"the anchor {name} is of another log ({value.get('log')}): not compared")
        return found
    found.problems.extend(_compare(path, value, audit.read_lines(path)))
    if not found.problems:
        found.notes.append(f"anchor {name} ({value.get('time')}): record {value.get('count')} matches")
    return found


def _still_there(path: Path, value: dict) -> list[str]:
    """Does the log still hold the anchored record, at its byte offset? One read, at any size
    (verify's check_anchor counts the records instead)."""
    count, length = int(value.get("count", 0)), int(value.get("length", 0))
    if count == 0 or audit.hash_at(path, length) == value.get("hash"):
        return []
    return [f"{path}: the anchored record {count} (ending at byte {length}, anchored {value.get('time')}) is no "
            "longer in the log: it was cut or rewritten"]


def _compare(path: Path, value: dict, lines: list[bytes]) -> list[str]:
    count, when = int(value.get("count", 0)), value.get("time")
    if count == 0:
        return []
    if len(lines) < count:
        return [f"{path}: truncated below the anchor: the anchor ({when}) says {count} records, the log has "
                f"{len(lines)}"]
    if audit.hash_of(lines[count - 1]) != value.get("hash"):
        return [f"{path}:{count}: rewritten: record {count} is not the anchored one (anchored {when})"]
    return []
