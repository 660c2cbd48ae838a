"""Where a run is, step by step, for a live view: the engine says what each stack is doing and
whoever listens (the CLI's terminal view, the control process's socket) shows it.

A listener is a plain callable set for the current context; with none set, notes cost nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

# The steps a stack goes through, in order; a view shows the latest one.
STEPS = ("queued", "staging", "backup", "starting", "migrate", "health", "healthy", "failed", "rolled back")


@dataclass(frozen=True)
class Progress:
    phase: str
    host: str
    stack: str
    step: str
    at: float  # time.time()

    def to_json(self) -> dict:
        return asdict(self)


Listener = Callable[[Progress], None]
Announcer = Callable[[str], None]
_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("homelab_progress", default=None)
_announcer: contextvars.ContextVar[Announcer | None] = contextvars.ContextVar("homelab_announce", default=None)


@contextlib.contextmanager
def listening(listener: Listener, announcer: Announcer | None = None) -> Iterator[None]:
    token = _listener.set(listener)
    said = _announcer.set(announcer)
    try:
        yield
    finally:
        _announcer.reset(said)
        _listener.reset(token)


def announce(text: str) -> None:
    """A line the person running the command must see (e.g. the run waits for approval, and
    how to give it); never fails the run."""
    announcer = _announcer.get()
    if announcer is not None:
        with contextlib.suppress(Exception):
            announcer(text)


def note(phase: str, host: str, stack: str, step: str) -> None:
    """Tell the listener, if any; a listener's own failure never fails the deploy."""
    listener = _listener.get()
    if listener is None:
        return
    with contextlib.suppress(Exception):
        listener(Progress(phase=phase, host=host, stack=stack, step=step, at=time.time()))
