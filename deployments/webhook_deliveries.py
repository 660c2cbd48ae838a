"""Which GitHub delivery started which flow run, kept on disk so that a redelivery (the same
``X-GitHub-Delivery``) starts nothing, even after a restart of the receiver.

One SQLite file (WAL, so readers never wait for the writer); rows older than the TTL are
ignored and purged. The first run recorded for a delivery wins. Prefect's idempotency key
(the delivery id) is the second line of defence if a row is ever lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from deployments.server import state_dir

DEFAULT_TTL_S = 7 * 24 * 3600
PURGE_EVERY_S = 3600
_SCHEMA = """CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    flow_run_id TEXT NOT NULL,
    received REAL NOT NULL
)"""


def default_path() -> Path:
    return state_dir() / "webhook-deliveries.sqlite3"


class DeliveryStore:
    """Delivery id -> flow run id, with a TTL. Thread-safe; several processes may share the file."""

    def __init__(self, path: Path | None = None, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash of the process loses nothing
        self._db.execute(_SCHEMA)
        self._next_purge = 0.0
        self.purge()

    def get(self, delivery: str) -> str | None:
        """The flow run recorded for this delivery, unless it expired."""
        with self._lock:
            row = self._db.execute("SELECT flow_run_id FROM deliveries WHERE delivery = ? AND received >= ?",
                                   (delivery, self._clock() - self.ttl_s)).fetchone()
        return row[0] if row else None

    def put(self, delivery: str, flow_run_id: str) -> str:
        """Record the run of a delivery; returns the run recorded first (an earlier one wins)."""
        now = self._clock()
        if now >= self._next_purge:
            self.purge()
        with self._lock:
            # An expired row counts as absent: replace it rather than answer with a stale run.
            self._db.execute(
                "INSERT INTO deliveries (delivery, flow_run_id, received) VALUES (?, ?, ?) "
                "ON CONFLICT(delivery) DO UPDATE SET flow_run_id = excluded.flow_run_id, received = excluded.received "
                "WHERE deliveries.received < ?", (delivery, flow_run_id, now, now - self.ttl_s))
            row = self._db.execute("SELECT flow_run_id FROM deliveries WHERE delivery = ?", (delivery,)).fetchone()
        return row[0]

    def purge(self) -> int:
        """Delete expired rows; returns how many."""
        now = self._clock()
        with self._lock:
            deleted = self._db.execute("DELETE FROM deliveries WHERE received < ?", (now - self.ttl_s,)).rowcount
        self._next_purge = now + PURGE_EVERY_S
        return deleted

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
