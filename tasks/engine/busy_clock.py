"""Remote busy time per phase, for the benchmark's orchestration overhead."""

from __future__ import annotations

import contextvars
import time
from collections import defaultdict

# Phase label for remote-time accounting (bench: orchestration overhead).
current_phase: contextvars.ContextVar[str] = contextvars.ContextVar("homelab_phase", default="-")


class BusyClock:
    """Wall time during which at least one remote command ran, per phase label.

    Parallel commands on one host overlap, so summing their durations would overstate the
    remote critical path; the union of busy intervals does not.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._active = 0
        self._since = 0.0

    def running(self) -> _Busy:
        return _Busy(self)


class _Busy:
    def __init__(self, clock: BusyClock):
        self.clock = clock
        self.phase = current_phase.get()

    def __enter__(self) -> None:
        if self.clock._active == 0:
            self.clock._since = time.monotonic()
        self.clock._active += 1

    def __exit__(self, *exc: object) -> None:
        self.clock._active -= 1
        if self.clock._active == 0:
            self.clock.seconds[self.phase] += time.monotonic() - self.clock._since
