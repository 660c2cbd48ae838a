"""Append-only, hash-chained audit log (JSONL). Each record holds the previous record's hash,
so ``verify`` detects an edited, removed or reordered line. Never put secret values here.

Beside the log, a small head file (``audit.jsonl.head``) holds the chain's head: how many
records the log has, the last one's hash, and the log's length in bytes. An append reads the
head (and the log's last byte), never the whole log, so it costs the same at any size; verify
compares the head with the log, which shows what the chain alone cannot: a deleted log or a
cut-off tail. A torn last line (a crash mid-write) is moved aside by the next append, which
says so in an ``audit.repaired`` record, so one crash never blocks the deploys that follow.

Whoever can write the log can also recompute every hash and the head. Two things stop that:
an HMAC key kept away from the log (``HOMELAB_AUDIT_KEY_FILE``: each record then carries
``mac`` = HMAC-SHA256(key, its hash) and the head a mac over its fields), and an anchor of the
head outside the file (a Prefect variable, ``audit_anchor.py``).

Every record names its ``actor`` (model/actors.py): ``actor=``, else ``acting_as(...)``, else
HOMELAB_ACTOR or the CLI user.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

from model.actors import default_actor
from model.errors import HomelabError

GENESIS = "0" * 64
REPAIRED = "audit.repaired"
HEAD_REBUILT = "audit.head_rebuilt"
HEAD_UNTRUSTED = "audit.head_untrusted"  # an append found a keyed log's head unsigned or forged
KEY_CREATED = "audit.key_created"
KEY_ENV = "HOMELAB_AUDIT_KEY_FILE"
KEY_BYTES = 32
_CHUNK = 1 << 16
_SHOWN = 10  # problems of one kind listed before "... and N more"

_RESERVED = frozenset({"prev", "hash", "mac"})  # the chain's own fields, never a caller's
_actor: ContextVar[str | None] = ContextVar("homelab_audit_actor", default=None)


def audit_path() -> Path:
    home = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    return Path(os.environ.get("HOMELAB_AUDIT_LOG", home / "audit.jsonl"))


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".head")


def torn_path(log: Path) -> Path:
    """Where torn bytes go: out of the chain, but kept for whoever investigates the crash."""
    return log.with_name(log.name + ".torn")


# --- actors --------------------------------------------------------------------------------------

@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[str]:
    """Every record appended inside (this task or thread of control) names ``actor``."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def current_actor() -> str:
    return _actor.get() or default_actor()


# --- the HMAC key ----------------------------------------------------------------------------------

class AuditKeyError(HomelabError):
    """The audit key is missing, unreadable, misplaced or not the one the log was signed with."""

    exit_code = 2


def key_file() -> Path | None:
    name = os.environ.get(KEY_ENV)
    return Path(name).expanduser() if name else None


def refuse_beside(key: Path, log: Path) -> None:
    """A key next to the log protects nothing: whoever rewrites the log reads the key too."""
    if key.resolve().parent == log.resolve().parent:
        raise AuditKeyError(f"{key}: an audit key must not be in the audit log's directory "
                            f"({log.resolve().parent}); keep it where the log's writers cannot reach "
                            "(another directory, 0600), e.g. `homelab audit init-key ~/.config/homelab/audit.key`")


def load_key(log: Path) -> bytes | None:
    """The key from HOMELAB_AUDIT_KEY_FILE; None when it is unset."""
    path = key_file()
    if path is None:
        return None
    refuse_beside(path, log)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"{KEY_ENV}={path}: cannot read the audit key ({exc.strerror}); create it with "
                            f"`homelab audit init-key {path}` or unset {KEY_ENV}") from None
    if len(key) < KEY_BYTES:
        raise AuditKeyError(f"{KEY_ENV}={path}: the audit key has {len(key)} bytes, needs at least {KEY_BYTES}; "
                            "create a new one with `homelab audit init-key PATH`")
    return key


def create_key(path: Path) -> bytes:
    """A new random key at ``path`` (0600), never replacing a file there: written to a temp file
    first, then linked into place (link fails if the name exists), so no half key is ever seen."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, key)
        os.fsync(fd)
        os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        raise AuditKeyError(f"{path}: exists; refusing to overwrite an audit key (records signed with it "
                            "would no longer verify). Use it, or pick another path") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return key


def key_id(key: bytes) -> str:
    """Names a key without revealing it, so verify can tell "another key" from "forged"."""
    return hmac.new(key, b"homelab-audit-key-id", hashlib.sha256).hexdigest()[:16]


def record_mac(key: bytes, record_hash: str) -> str:
    return hmac.new(key, record_hash.encode(), hashlib.sha256).hexdigest()


# --- the head ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Head:
    count: int   # lines in the log (records, or what stands in their place)
    hash: str    # the last record's hash; GENESIS for an empty log
    length: int  # bytes of the log, up to and including the last line's newline
    keyed_from: int | None = None  # the first record with a mac: every record from it on must have one
    key_id: str | None = None      # the key that signed this head
    mac: str | None = None         # HMAC over the fields above


class HeadUnreadable(ValueError):
    pass


def head_mac(key: bytes, head: Head) -> str:
    fields = {k: v for k, v in asdict(head).items() if k != "mac"}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, b"homelab-audit-head\0" + body, hashlib.sha256).hexdigest()


def sign_head(head: Head, key: bytes) -> Head:
    unsigned = replace(head, key_id=key_id(key), mac=None)
    return replace(unsigned, mac=head_mac(key, unsigned))


def head_is_signed_by(head: Head, key: bytes) -> bool:
    return (head.mac is not None and head.key_id == key_id(key)
            and hmac.compare_digest(head.mac, head_mac(key, replace(head, mac=None))))


# The head's only reader and writer.
def read_head(log: Path) -> Head | None:
    """The head beside ``log``; None when there is none."""
    try:
        data = json.loads(head_path(log).read_text())
        keyed_from = data.get("keyed_from")
        return Head(count=int(data["count"]), hash=str(data["hash"]), length=int(data["length"]),
                    keyed_from=None if keyed_from is None else int(keyed_from),
                    key_id=_str_or_none(data.get("key_id")), mac=_str_or_none(data.get("mac")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HeadUnreadable(f"{head_path(log)}: unreadable ({exc})") from None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def write_head(log: Path, head: Head) -> None:
    """Replace the head atomically (temp file, fsync, rename): a crash leaves the old or the new."""
    path = head_path(log)
    tmp = path.with_name(path.name + ".tmp")  # one writer at a time: the caller holds the log's flock
    with tmp.open("w") as out:
        out.write(json.dumps({k: v for k, v in asdict(head).items() if v is not None}, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    # no fsync of the directory: if the rename is lost in a power cut, the old head is back, and
    # the records after it are taken in by the next append (the log was fsynced first)
    os.replace(tmp, path)


def _digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k not in ("hash", "mac")}
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


# --- append --------------------------------------------------------------------------------------

def append(event: str, *, log_path: Path | None = None, actor: str | None = None, hmac_key: bytes | None = None,
           **fields: object) -> dict:
    """Add one record; safe against concurrent writers (an exclusive file lock). ``hmac_key``
    overrides HOMELAB_AUDIT_KEY_FILE (``init-key`` signs with the key it just made)."""
    if reserved := _RESERVED & fields.keys():
        raise TypeError(f"audit.append: {sorted(reserved)} are the chain's own fields")
    path = log_path or audit_path()
    key = hmac_key if hmac_key is not None else load_key(path)
    who = actor or current_actor()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path) as fd:
        head, notes = _settle(fd, path, key)
        keyed_from = head.keyed_from if head.keyed_from is not None or key is None else head.count + 1
        records, prev = [], head.hash
        for name, values in [*notes, (event, fields)]:  # all sealed before any is written
            record = seal({"time": _now(), "event": name, "actor": who, **values}, prev)
            if key is not None:
                record["mac"] = record_mac(key, record["hash"])
            records.append(record)
            prev = record["hash"]
        data = b"".join(_line(r) for r in records)
        _write_all(fd, data)
        os.fsync(fd)
        # the log first, then the head: a crash in between leaves records the next append takes in
        new = Head(count=head.count + len(records), hash=prev, length=os.fstat(fd).st_size, keyed_from=keyed_from)
        write_head(path, sign_head(new, key) if key is not None else new)
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


def _settle(fd: int, path: Path, key: bytes | None) -> tuple[Head, list[tuple[str, dict]]]:
    """The chain's head for the next record, and the notes to record before it (a repaired tail,
    a rebuilt or untrusted head). Reads only the log's tail, except once to rebuild a missing head."""
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
        _check_key_for_append(path, head, key)
        if size and key is not None and head.keyed_from is not None:
            notes.append((HEAD_UNTRUSTED, {"reason": f"head file {why} though the log is keyed",
                                           "records": head.count}))
        elif size:
            notes.append((HEAD_REBUILT, {"reason": f"head file {why}", "records": head.count}))
    else:
        _check_key_for_append(path, head, key)
        if key is not None and (why := _untrusted(fd, head, key)):
            notes.append((HEAD_UNTRUSTED, {"reason": why, "records": head.count}))  # a problem in verify, forever
        if size > head.length:  # an append cut off before its head update, or a writer without heads
            head = _scan(fd, head)
    # size < head.length: the log was cut. The head stays, so the gap shows in the chain and in verify.
    return head, notes


def _check_key_for_append(path: Path, head: Head, key: bytes | None) -> None:
    """Refuse to write unsigned records into a keyed log, or records signed by another key: either
    would read as tampering forever after."""
    if key is None and (head.keyed_from is not None or head.mac is not None):
        raise AuditKeyError(f"{path}: the audit log is signed (since record {head.keyed_from}) but {KEY_ENV} "
                            "is not set: set it to the key file it was signed with")
    if key is not None and head.key_id is not None and head.key_id != key_id(key):
        raise AuditKeyError(f"{path}: the audit log is signed with key {head.key_id}, but {KEY_ENV} holds key "
                            f"{key_id(key)}: point {KEY_ENV} at the log's key")


def _untrusted(fd: int, head: Head, key: bytes) -> str | None:
    """Why a keyed append cannot trust this head, or None. An unsigned head is fine only where
    keying starts: no keyed_from, and the last record it names has no mac either."""
    if head_is_signed_by(head, key):
        return None
    if head.mac is not None:
        return "head mac does not match its fields (the head was rewritten without the key)"
    if head.keyed_from is not None:
        return f"head has no mac, though it says records are signed from {head.keyed_from} on"
    last = (_record(_line_ending_at(fd, head.length)) or {}) if head.count and head.length else {}
    if "mac" in last:
        return "head has no mac, but the record it names has one (the head was rewritten without the key)"
    return None  # keying starts now


def _line_ending_at(fd: int, end: int) -> bytes:
    """The whole line whose newline is byte ``end - 1``."""
    start = _after_last_newline(fd, end - 1) if end > 0 else 0
    return os.pread(fd, max(0, end - 1 - start), start)


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
    """Offset just after the log's last newline before ``size`` (0 if none), reading backwards."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _scan(fd: int, head: Head) -> Head:
    """``head`` moved over the whole lines after ``head.length`` (unsigned: the append signs it)."""
    count, last, offset, pending, keyed_from = head.count, head.hash, head.length, b"", head.keyed_from
    while chunk := os.pread(fd, _CHUNK, offset + len(pending)):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            record = _record(line) or {}
            count, offset = count + 1, offset + len(line) + 1
            last = record["hash"] if isinstance(record.get("hash"), str) else last
            if keyed_from is None and "mac" in record:
                keyed_from = count
    return Head(count, last, offset, keyed_from)


def _record(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def hash_of(line: bytes) -> str | None:
    value = (_record(line) or {}).get("hash")
    return value if isinstance(value, str) else None


# --- reading ---------------------------------------------------------------------------------------

def read_lines(path: Path | None = None) -> list[bytes]:
    """The log's whole lines (a torn tail left out), read under a shared lock."""
    _, data = _snapshot(path or audit_path(), Findings())
    return (data or b"").split(b"\n")[:-1]


def hash_at(path: Path, length: int) -> str | None:
    """The hash of the record whose line ends at byte ``length``; None if no line ends there.
    Reads one chunk, so the anchor can be checked at any log size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if length <= 0 or os.fstat(fd).st_size < length or os.pread(fd, 1, length - 1) != b"\n":
            return None
        return hash_of(_line_ending_at(fd, length))
    finally:
        os.close(fd)


def tail(path: Path | None = None, *, since: datetime | None = None, event: str | None = None,
         limit: int | None = None) -> list[dict]:
    """Records, oldest first: those at or after ``since`` whose event matches the glob ``event``,
    the last ``limit`` of them. Read backwards from the end, so a short tail of a long log is
    cheap; records are appended in time order, so the first one before ``since`` ends the read."""
    path = path or audit_path()
    found: list[dict] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return found
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        for line in _lines_backwards(fd):
            record = _record(line)
            if record is None:
                continue
            if since is not None and _time_of(record) is not None and _time_of(record) < since:
                break
            if event is None or fnmatchcase(str(record.get("event", "")), event):
                found.append(record)
                if limit is not None and len(found) >= limit:
                    break
    finally:
        os.close(fd)
    return found[::-1]


def _lines_backwards(fd: int) -> Iterator[bytes]:
    end = _after_last_newline(fd, os.fstat(fd).st_size)  # a torn tail is no record
    pending = b""
    while end > 0:
        start = max(0, end - _CHUNK)
        first, *lines = (os.pread(fd, end - start, start) + pending).split(b"\n")
        pending = first
        yield from (line for line in reversed(lines) if line)
        end = start
    if pending:
        yield pending


def _time_of(record: dict) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- the anchor (tasks/engine/audit_anchor.py; Prefect is imported only when it is used) ----------

async def anchor(log_path: Path | None = None, *, force: bool = False) -> Findings:
    """Anchor the log's head in the Prefect variable ``homelab-audit-head`` (see audit_anchor)."""
    from tasks.engine import audit_anchor

    return await audit_anchor.anchor(log_path, force=force)


async def check_anchor(log_path: Path | None = None) -> Findings:
    """The log against its anchor: cut below it, or its anchored record rewritten, is a problem."""
    from tasks.engine import audit_anchor

    return await audit_anchor.check_anchor(log_path)


# --- verify ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Findings:
    """What verify found: problems (tampering or damage: exit 1) and notes (repairs, for information)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(path: Path | None = None) -> list[str]:
    """Problems found, by line number; [] for an intact log."""
    return check(path).problems


def check(path: Path | None = None) -> Findings:
    """The chain, line by line, then the head against the log, then the macs (with a key)."""
    path = path or audit_path()
    key = load_key(path)
    found = Findings()
    head, data = _snapshot(path, found)
    if data is None:
        if head:
            found.problems.append(f"{path}: missing log: its head {head_path(path)} says {head.count} records")
        return found
    *lines, torn = data.split(b"\n")
    records = _check_chain(path, lines, found)
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
    if lines:
        _check_macs(path, key, head, records, found)
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


def _check_chain(path: Path, lines: list[bytes], found: Findings) -> list[dict | None]:
    prev, records = GENESIS, []
    for number, line in enumerate(lines, start=1):
        record = _record(line)
        records.append(record)
        if record is None:
            found.problems.append(f"{path}:{number}: not JSON")
            continue
        if record.get("prev") != prev:
            found.problems.append(f"{path}:{number}: chain broken (a record before it was changed or removed)")
        if record.get("hash") != _digest(record):
            found.problems.append(f"{path}:{number}: record was modified")
        if record.get("event") == HEAD_UNTRUSTED:
            found.problems.append(f"{path}:{number}: an append at {record.get('time')} found the head untrusted: "
                                  f"{record.get('reason')}")
        elif record.get("event") in (REPAIRED, HEAD_REBUILT):
            found.notes.append(f"{path}:{number}: {_describe_note(record)}")
        prev = record.get("hash", "")
    return records


def _describe_note(record: dict) -> str:
    if record.get("event") == REPAIRED:
        return (f"repaired at {record.get('time')}: cut {record.get('cut_bytes')} torn bytes at byte "
                f"{record.get('cut_at')} (sha256 {record.get('cut_sha256')}, moved to {record.get('moved_to')})")
    return f"head rebuilt at {record.get('time')} from {record.get('records')} records ({record.get('reason')})"


def _check_head(path: Path, head: Head, lines: list[bytes], found: Findings) -> None:
    if len(lines) < head.count:
        found.problems.append(f"{path}: truncated: head says {head.count} records, log has {len(lines)}")
        return
    last = hash_of(lines[head.count - 1]) if head.count else GENESIS
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


def _check_macs(path: Path, key: bytes | None, head: Head | None, records: list[dict | None],
                found: Findings) -> None:
    signed = [n for n, r in enumerate(records, start=1) if r is not None and "mac" in r]
    if key is None:
        unchecked = f"; {len(signed)} record mac(s) left unchecked" if signed or (head and head.mac) else ""
        found.notes.append(f"{path}: no HMAC key ({KEY_ENV} unset): a rewrite of the whole log with recomputed "
                           f"hashes and a matching head is caught only by the anchor{unchecked}")
        return
    hp = head_path(path)
    keyed_from = None
    if head is None:
        if signed:
            found.problems.append(f"{hp}: missing, though the log's records are signed (the head was removed)")
    elif head.mac is None:
        found.problems.append(f"{hp}: no mac, though {KEY_ENV} is set: the head was rewritten without the key "
                              "(if the key is new: the next append signs it)")
    elif head.key_id != key_id(key):
        found.problems.append(f"{hp}: signed with key {head.key_id}, not with the key in {KEY_ENV} "
                              f"({key_id(key)}): the wrong key file, or the head was rewritten")
    elif not head_is_signed_by(head, key):
        found.problems.append(f"{hp}: mac does not match its fields: the head was rewritten without the key")
    else:
        keyed_from = head.keyed_from  # trusted: signed with the key
    if keyed_from is None and signed:
        keyed_from = signed[0]  # untrusted head: at least every record after the first signed one
    bad, before = [], 0
    for number, record in enumerate(records, start=1):
        if record is None:
            continue
        must = keyed_from is not None and number >= keyed_from
        mac = record.get("mac")
        if mac is None and not must:
            before += 1
        elif not (isinstance(mac, str) and hmac.compare_digest(mac, record_mac(key, str(record.get("hash"))))):
            bad.append(number)
    found.problems.extend(f"{path}:{n}: no valid mac (written or rewritten without the key)" for n in bad[:_SHOWN])
    if len(bad) > _SHOWN:
        found.problems.append(f"{path}: ... and {len(bad) - _SHOWN} more records without a valid mac")
    if before:
        found.notes.append(f"{path}: {before} record(s) written before the key existed (no mac): only the chain "
                           "and the anchor protect them")
