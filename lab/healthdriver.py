"""Runs HEALTHCHECKs inside one lab host, as systemd timers would for podman.

Without systemd, podman never runs a container's HEALTHCHECK by itself. This loop asks the
host's own podman API (already warm, so no podman process per tick) for the running
containers (again on every container event from the API's event stream, or every TICK while
that stream is down), learns each one's healthcheck once, and runs it like Docker does: first one
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
import urllib.parse
from datetime import datetime
from typing import Any

SOCKET = "/run/docker.sock"
TICK = 0.5  # how often the container list is refreshed while the engine's event stream is down
# With the event stream up, the list is re-read on each container event and at least this
# often: polling every host's list twice a second cost a quarter core at 10 lab hosts.
RELIST_S = 10.0
MIN_GAP = 0.1
MIN_INTERVAL = 1.0  # keeps a 2-core machine calm even for "interval: 100ms"
SETTLED_INTERVAL = 5.0
# A container may ask to be re-checked less often once settled (the generated scale lab does).
SETTLED_LABEL = "lab.healthdriver.settled-interval"


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


Plan = tuple[float, float, float, float]  # interval, timeout, started, settled interval (seconds)


def _plan(container_id: str) -> Plan | None:
    """How to check the container, or None when there is no healthcheck."""
    info = _get(f"/containers/{container_id}/json", timeout=10)
    check = (info.get("Config") or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    interval = (check.get("Interval") or 30_000_000_000) / 1e9
    timeout = (check.get("Timeout") or 30_000_000_000) / 1e9
    started = _started_at((info.get("State") or {}).get("StartedAt") or "")
    labels = (info.get("Config") or {}).get("Labels") or {}
    try:
        settled = max(SETTLED_INTERVAL, float(labels.get(SETTLED_LABEL, SETTLED_INTERVAL)))
    except ValueError:
        settled = SETTLED_INTERVAL
    return max(interval, MIN_INTERVAL), timeout, started, max(interval, settled)


def _run_check(container_id: str, plan: Plan, due: dict[str, float], lock: threading.Lock) -> None:
    interval, timeout, _, settled_interval = plan
    try:
        # The libpod endpoint runs the check and records the result (podman healthcheck run).
        result = _get(f"/v4.0.0/libpod/containers/{container_id}/healthcheck", timeout=timeout + 10)
        settled = (result or {}).get("Status") in ("healthy", "unhealthy")
    except (OSError, ValueError, http.client.HTTPException):
        settled = False  # container gone or stopping; the next list will tell
    with lock:
        if container_id in due:
            due[container_id] = time.time() + (settled_interval if settled else interval)


def _watch_events(changed: threading.Event, streaming: threading.Event) -> None:
    """Set ``changed`` on every container event the engine reports; ``streaming`` while the
    stream is open. Reconnects after a TICK when the engine restarts or drops it."""
    query = urllib.parse.quote(json.dumps({"type": ["container"]}))
    while True:
        conn = _UnixConnection(timeout=None)
        try:
            conn.request("GET", f"/events?filters={query}")
            resp = conn.getresponse()
            if resp.status < 300:
                streaming.set()
                changed.set()  # events may have been missed while (re)connecting
                while resp.readline():
                    changed.set()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            streaming.clear()
            conn.close()
        changed.set()
        time.sleep(TICK)


def main() -> None:
    changed, streaming = threading.Event(), threading.Event()
    threading.Thread(target=_watch_events, args=(changed, streaming), daemon=True).start()
    plans: dict[str, Plan | None] = {}
    due: dict[str, float] = {}  # id -> next check (inf while one runs); only ids with a healthcheck
    lock = threading.Lock()
    while True:
        tick_start = time.time()
        changed.clear()  # before the list: an event during it wakes the next round
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
            next_due = min(due.values(), default=float("inf"))
        relist = tick_start + (RELIST_S if streaming.is_set() else TICK)
        changed.wait(max(0.05, min(next_due, relist) - time.time()))
        time.sleep(max(0.0, tick_start + MIN_GAP - time.time()))  # a burst of events: one list


if __name__ == "__main__":
    main()
