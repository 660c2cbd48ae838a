"""Runs HEALTHCHECKs inside one lab host, as systemd timers would for podman.

Without systemd, podman never runs a container's HEALTHCHECK by itself. This loop asks the
host's own podman API (already warm, so no podman process per tick) for the running
containers, learns each one's healthcheck once, and runs it like Docker does: first one
`Interval` after the container started, then every `Interval` while it is "starting".

One check costs about 65 ms of CPU here (runc exec + podman's bookkeeping), so 15 containers
at a 1 s interval would take a whole core of this 2-core machine. Once a container has settled
(healthy or unhealthy) it is therefore checked every SETTLED_INTERVAL at least: a deploy still
sees "healthy" one interval after start, while a later change of state shows up within
SETTLED_INTERVAL * retries. Stdlib only: it runs
under the machine's /usr/bin/python3 inside the host.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from datetime import datetime
from typing import Any

SOCKET = "/run/docker.sock"
TICK = 0.5  # how often the container list is refreshed
MIN_INTERVAL = 1.0  # keeps a 2-core machine calm even for "interval: 100ms"
SETTLED_INTERVAL = 5.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(SOCKET)
        self.sock = sock


def _get(path: str, timeout: float) -> Any:
    conn = _UnixConnection(timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status >= 300:
        raise OSError(f"GET {path}: HTTP {resp.status}")
    return json.loads(body) if body else None


def _started_at(text: str) -> float:
    """Epoch seconds of a Docker timestamp such as 2026-01-02T03:04:05.123456789Z."""
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        frac = "".join(ch for ch in frac if ch.isdigit())[:6] or "0"
        return datetime.fromisoformat(head + "+00:00").timestamp() + int(frac) / 10 ** len(frac)
    except ValueError:
        return time.time()


def _plan(container_id: str) -> tuple[float, float, float] | None:
    """(interval, timeout, started) in seconds, or None when there is no healthcheck."""
    info = _get(f"/containers/{container_id}/json", timeout=10)
    check = (info.get("Config") or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    interval = (check.get("Interval") or 30_000_000_000) / 1e9
    timeout = (check.get("Timeout") or 30_000_000_000) / 1e9
    started = _started_at((info.get("State") or {}).get("StartedAt") or "")
    return max(interval, MIN_INTERVAL), timeout, started


def _run_check(
    container_id: str, plan: tuple[float, float, float], due: dict[str, float], lock: threading.Lock
) -> None:
    interval, timeout, _ = plan
    try:
        # The libpod endpoint runs the check and records the result (podman healthcheck run).
        result = _get(f"/v4.0.0/libpod/containers/{container_id}/healthcheck", timeout=timeout + 10)
        settled = (result or {}).get("Status") in ("healthy", "unhealthy")
    except (OSError, ValueError, http.client.HTTPException):
        settled = False  # container gone or stopping; the next list will tell
    with lock:
        if container_id in due:
            due[container_id] = time.time() + (max(interval, SETTLED_INTERVAL) if settled else interval)


def main() -> None:
    plans: dict[str, tuple[float, float, float] | None] = {}  # id -> (interval, timeout, started)
    due: dict[str, float] = {}  # id -> next check (inf while one runs); only ids with a healthcheck
    lock = threading.Lock()
    while True:
        tick_start = time.time()
        try:
            running = {c["Id"] for c in _get("/containers/json", timeout=10)}
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(TICK)
            continue
        with lock:
            for gone in set(plans) - running:
                plans.pop(gone, None)
                due.pop(gone, None)
        for cid in running - set(plans):
            try:
                plans[cid] = plan = _plan(cid)
            except (OSError, ValueError, http.client.HTTPException):
                continue
            if plan:
                with lock:
                    due[cid] = plan[2] + plan[0]
        now = time.time()
        with lock:
            ready = [cid for cid, when in due.items() if when <= now]
            for cid in ready:
                due[cid] = float("inf")  # running; _run_check sets the next time
        for cid in ready:
            plan = plans[cid]
            assert plan is not None
            threading.Thread(target=_run_check, args=(cid, plan, due, lock), daemon=True).start()
        with lock:
            next_due = min(due.values(), default=now + TICK)
        time.sleep(max(0.05, min(next_due - time.time(), tick_start + TICK - time.time())))


if __name__ == "__main__":
    main()
