"""Append-only, hash-chained audit log (JSONL). Each record holds the previous record's hash,
so ``verify`` detects an edited, removed or reordered line. Never put secret values here."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

GENESIS = "0" * 64


def audit_path() -> Path:
    home = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    return Path(os.environ.get("HOMELAB_AUDIT_LOG", home / "audit.jsonl"))


def _digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def append(event: str, *, log_path: Path | None = None, **fields: object) -> dict:
    """Add one record; safe against concurrent writers (an exclusive file lock)."""
    path = log_path or audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.seek(0)
        last = None
        for line in log:
            if line.strip():
                last = line
        prev = json.loads(last)["hash"] if last else GENESIS
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields,
                  "prev": prev}
        record["hash"] = _digest(record)
        log.write(json.dumps(record, sort_keys=True) + "\n")
        log.flush()
        os.fsync(log.fileno())
    return record


def verify(path: Path | None = None) -> list[str]:
    """Problems found, by line number; [] for an intact log."""
    path = path or audit_path()
    if not path.exists():
        return []
    problems, prev = [], GENESIS
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{path}:{number}: not JSON")
            continue
        if record.get("prev") != prev:
            problems.append(f"{path}:{number}: chain broken (a record before it was changed or removed)")
        if record.get("hash") != _digest(record):
            problems.append(f"{path}:{number}: record was modified")
        prev = record.get("hash", "")
    return problems
