"""Append-only, hash-chained audit log (JSONL). Each record holds the previous record's hash,
so ``verify`` detects an edited, removed or reordered line. Never put secret values here.

Beside the log, a small head file (``audit.jsonl.head``) holds the chain's head: how many
records the log has, the last one's hash, and the log's length in bytes. An append reads the
head (and the log's last byte), never the whole log, so it costs the same at any size; verify
compares the head with the log, which shows what the chain alone cannot: a deleted log or a
cut-off tail. A torn last line (a crash mid-write) is moved aside by the next append, which
says so in an ``audit.repaired`` record, so one crash never blocks the deploys that follow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

GENESIS = "0" * 64
REPAIRED = "audit.repaired"
HEAD_REBUILT = "audit.head_rebuilt"
_CHUNK = 1 << 16


def audit_path() -> Path:
    home = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    return Path(os.environ.get("HOMELAB_AUDIT_LOG", home / "audit.jsonl"))


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".head")


def torn_path(log: Path) -> Path:
    """Where torn bytes go: out of the chain, but kept for whoever investigates the crash."""
    return log.with_name(log.name + ".torn")


@dataclass(frozen=True)
class Head:
    count: int   # lines in the log (records, or what stands in their place)
    hash: str    # the last record's hash; GENESIS for an empty log
    length: int  # bytes of the log, up to and including the last line's newline


class HeadUnreadable(ValueError):
    pass


# The head's only reader and writer. Anchors kept elsewhere as well (a Prefect variable, a copy
# on each host) or an HMAC over the head would go here, without touching append or verify.
def read_head(log: Path) -> Head | None:
    """The head beside ``log``; None when there is none."""
    try:
        data = json.loads(head_path(log).read_text())
        return Head(count=int(data["count"]), hash=str(data["hash"]), length=int(data["length"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadUnreadable(f"{head_path(log)}: unreadable ({exc})") from None


def write_head(log: Path, head: Head) -> None:
    """Replace the head atomically (temp file, fsync, rename): a crash leaves the old or the new."""
    path = head_path(log)
    tmp = path.with_name(path.name + ".tmp")  # one writer at a time: the caller holds the log's flock
    with tmp.open("w") as out:
        out.write(json.dumps(asdict(head), sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    # no fsync of the directory: if the rename is lost in a power cut, the old head is back, and
    # the records after it are taken in by the next append (the log was fsynced first)
    os.replace(tmp, path)


def _digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(record: dict, prev: str) -> dict:
    """``record`` chained after the record whose hash is ``prev``."""
    sealed = {**record, "prev": prev}
    sealed["hash"] = _digest(sealed)
    return sealed


def _line(record: dict) -> bytes:
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def append(event: str, *, log_path: Path | None = None, **fields: object) -> dict:
    """Add one record; safe against concurrent writers (an exclusive file lock)."""
    path = log_path or audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path) as fd:
        head, notes = _settle(fd, path)
        records, prev = [], head.hash
        for name, values in [*notes, (event, fields)]:  # all sealed before any is written
            records.append(seal({"time": _now(), "event": name, **values}, prev))
            prev = records[-1]["hash"]
        data = b"".join(_line(r) for r in records)
        _write_all(fd, data)
        os.fsync(fd)
        # the log first, then the head: a crash in between leaves records the next append takes in
        write_head(path, Head(count=head.count + len(records), hash=prev, length=os.fstat(fd).st_size))
    return records[-1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """The log, open for appending under an exclusive flock. If the file was replaced or removed
    while we waited for the lock, the lock is taken again on the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_at(fd, path):
                yield fd
                return
        finally:
            os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _settle(fd: int, path: Path) -> tuple[Head, list[tuple[str, dict]]]:
    """The chain's head for the next record, and the notes to record before it (a repaired tail,
    a rebuilt head). Reads only the log's tail, except once to rebuild a missing head."""
    notes: list[tuple[str, dict]] = []
    cut = _cut_torn_tail(fd, path)
    if cut:
        notes.append((REPAIRED, cut))
    size = os.fstat(fd).st_size
    try:
        head, why = read_head(path), "missing"
    except HeadUnreadable as exc:
        head, why = None, str(exc)
    if head is None:
        head = _scan(fd, Head(0, GENESIS, 0))
        if size:
            notes.append((HEAD_REBUILT, {"reason": f"head file {why}", "records": head.count}))
    elif size > head.length:  # an append cut off before its head update, or a writer without heads
        head = _scan(fd, head)
    # size < head.length: the log was cut. The head stays, so the gap shows in the chain and in verify.
    return head, notes


def _cut_torn_tail(fd: int, path: Path) -> dict | None:
    """Move a last line without its newline to the ``.torn`` file and truncate the log to the
    line before. Returns what was cut (length and sha256 only: the bytes could hold anything)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    start = _after_last_newline(fd, size)
    torn = os.pread(fd, size - start, start)
    aside = os.open(torn_path(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        _write_all(aside, torn)
        os.fsync(aside)  # kept before it is cut
    finally:
        os.close(aside)
    os.ftruncate(fd, start)
    return {"reason": "torn last line (a write was cut off)", "cut_at": start, "cut_bytes": len(torn),
            "cut_sha256": hashlib.sha256(torn).hexdigest(), "moved_to": torn_path(path).name}


def _after_last_newline(fd: int, size: int) -> int:
    """Offset just after the log's last newline (0 if it has none), reading backwards."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _scan(fd: int, head: Head) -> Head:
    """``head`` moved over the whole lines after ``head.length``."""
    count, last, offset, pending = head.count, head.hash, head.length, b""
    while chunk := os.pread(fd, _CHUNK, offset + len(pending)):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            count, last, offset = count + 1, _hash_of(line) or last, offset + len(line) + 1
    return Head(count, last, offset)


def _record(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _hash_of(line: bytes) -> str | None:
    value = (_record(line) or {}).get("hash")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Findings:
    """What verify found: problems (tampering or damage: exit 1) and notes (repairs, for information)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(path: Path | None = None) -> list[str]:
    """Problems found, by line number; [] for an intact log."""
    return check(path).problems


def check(path: Path | None = None) -> Findings:
    """The chain, line by line, then the head against the log."""
    path = path or audit_path()
    found = Findings()
    head, data = _snapshot(path, found)
    if data is None:
        if head:
            found.problems.append(f"{path}: missing log: its head {head_path(path)} says {head.count} records")
        return found
    *lines, torn = data.split(b"\n")
    _check_chain(path, lines, found)
    if torn:
        number, start = len(lines) + 1, len(data) - len(torn)
        if head is None or start >= head.length:
            found.notes.append(f"{path}:{number}: torn last line ({len(torn)} bytes, a write was cut off); "
                               "the next append moves it aside")
        else:
            found.problems.append(f"{path}:{number}: a line cut off inside the recorded log")
    if head:
        _check_head(path, head, lines, found)
    elif lines:
        found.notes.append(f"{head_path(path)}: no head file yet (the next append writes it); "
                           "until then a cut-off tail cannot be told")
    return found


def _snapshot(path: Path, found: Findings) -> tuple[Head | None, bytes | None]:
    """The head and the log as one state: read under a shared flock, so no append is half-seen."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return _head_for_check(path, found), None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        head = _head_for_check(path, found)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return head, b"".join(chunks)
    finally:
        os.close(fd)


def _head_for_check(path: Path, found: Findings) -> Head | None:
    try:
        return read_head(path)
    except HeadUnreadable as exc:
        found.problems.append(str(exc))
        return None


def _check_chain(path: Path, lines: list[bytes], found: Findings) -> None:
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        record = _record(line)
        if record is None:
            found.problems.append(f"{path}:{number}: not JSON")
            continue
        if record.get("prev") != prev:
            found.problems.append(f"{path}:{number}: chain broken (a record before it was changed or removed)")
        if record.get("hash") != _digest(record):
            found.problems.append(f"{path}:{number}: record was modified")
        if record.get("event") in (REPAIRED, HEAD_REBUILT):
            found.notes.append(f"{path}:{number}: {_describe_note(record)}")
        prev = record.get("hash", "")


def _describe_note(record: dict) -> str:
    if record.get("event") == REPAIRED:
        return (f"repaired at {record.get('time')}: cut {record.get('cut_bytes')} torn bytes at byte "
                f"{record.get('cut_at')} (sha256 {record.get('cut_sha256')}, moved to {record.get('moved_to')})")
    return f"head rebuilt at {record.get('time')} from {record.get('records')} records ({record.get('reason')})"


def _check_head(path: Path, head: Head, lines: list[bytes], found: Findings) -> None:
    if len(lines) < head.count:
        found.problems.append(f"{path}: truncated: head says {head.count} records, log has {len(lines)}")
        return
    last = _hash_of(lines[head.count - 1]) if head.count else GENESIS
    end = sum(len(line) + 1 for line in lines[:head.count])
    mismatches = []
    if last != head.hash:
        mismatches.append(f"{path}:{head.count}: not the record the head names (the log was rewritten)")
    if end != head.length:
        mismatches.append(f"{path}: head says {head.length} bytes up to record {head.count}, log has {end}")
    found.problems.extend(mismatches)
    extra = len(lines) - head.count
    if extra and mismatches:
        found.problems.append(f"{path}: head says {head.count} records, log has {len(lines)}")
    elif extra:
        found.notes.append(f"{path}: {extra} record(s) after the head: an append stopped before updating it; "
                           "the next append takes them in")
