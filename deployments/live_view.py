"""The compact live view of a running deploy in a terminal: per phase, each host and stack
with its current step and elapsed time, redrawn in place. Only on a TTY; never with --json."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_EVERY_S = 0.1
DONE = {"healthy", "failed", "rolled back"}


class LiveView:
    def __init__(self, out: TextIO):
        self.out = out
        self.rows: dict[tuple[str, str, str], dict] = {}  # (phase, host, stack) -> step, since, until
        self.drawn = 0
        self.last_draw = 0.0

    @classmethod
    def for_terminal(cls, enabled: bool, out: TextIO = sys.stderr) -> LiveView | None:
        return cls(out) if enabled and out.isatty() else None

    def update(self, event: dict) -> None:
        key = (event["phase"], event["host"], event["stack"])
        row = self.rows.setdefault(key, {"since": event["at"], "until": None})
        row["step"] = event["step"]
        row["until"] = event["at"] if event["step"] in DONE else None
        if time.monotonic() - self.last_draw >= REDRAW_EVERY_S or event["step"] in DONE:
            self.draw()

    def lines(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        out, phase = [], None
        width = max((len(f"{h}/{s}") for _, h, s in self.rows), default=0)
        for (p, host, stack), row in self.rows.items():
            if p != phase:
                out.append(f"{p}")
                phase = p
            elapsed = (row["until"] or now) - row["since"]
            mark = {"healthy": "ok", "failed": "FAILED"}.get(row["step"], "..")
            out.append(f"  {f'{host}/{stack}':<{width}}  {row['step']:<11} {elapsed:5.1f}s  {mark}")
        return out

    def draw(self) -> None:
        lines = self.lines()
        self.clear()
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)
        self.last_draw = time.monotonic()

    def clear(self) -> None:
        """Erase the last frame (cursor up, clear line), so the result table follows cleanly."""
        if self.drawn:
            self.out.write("\x1b[1A\x1b[2K" * self.drawn)
            self.out.flush()
            self.drawn = 0
