"""A Prefect transaction per stack (or phase snapshot), held open until the run decides.

The work (Prefect tasks: stage, compose up, health gate, record) runs *outside* any
transaction, so a failed or retried task attempt cannot roll anything back by itself: Prefect
rolls a parent transaction back whenever a child does, and would otherwise undo a stack on a
transient SSH error that its retry then survives. When the work is done it hands back its
undo (set as soon as a mutating step was attempted). ``Held`` then opens a top-level
transaction, stages that undo as its ``on_rollback`` hook, and:

- rolls back at once if the work failed (the stack returns to its previous release), or
- keeps the transaction open until the coordinator says ``commit()`` or ``rollback()``
  (the phase's failure policy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prefect.transactions import atransaction

T = TypeVar("T")
Undo = Callable[[], Awaitable[None]]


@dataclass
class Outcome(Generic[T]):
    value: T
    undo: Undo | None = None  # what puts the host back; None if nothing was changed
    failed: bool = False  # roll back now


class _Undo(Exception):
    pass


class Held(Generic[T]):
    """Run ``work`` now; ``await result()`` once it is done (after any immediate undo)."""

    def __init__(self, work: Callable[[], Awaitable[Outcome[T]]]):
        loop = asyncio.get_running_loop()
        self._work = work
        self._done: asyncio.Future[T] = loop.create_future()
        self._verdict: asyncio.Future[bool] = loop.create_future()
        self.unwound = False
        self.task = asyncio.create_task(self._life())

    async def _life(self) -> None:
        try:
            outcome = await self._work()
        except BaseException as exc:
            self._done.set_exception(exc)
            raise
        try:
            # This task's context has no active transaction, so this one is top-level: its
            # rollback cannot cascade into other stacks.
            async with atransaction() as txn:
                if outcome.undo is not None:
                    txn.stage(None, on_rollback_hooks=[_hook(outcome.undo)])
                if outcome.failed:
                    raise _Undo
                self._done.set_result(outcome.value)
                if not await self._verdict:
                    raise _Undo
        except _Undo:
            self.unwound = True
        finally:
            if not self._done.done():
                self._done.set_result(outcome.value)  # a failed stack: only after its undo ran

    async def result(self) -> T:
        return await asyncio.shield(self._done)

    @property
    def open(self) -> bool:
        return not self._verdict.done() and not self.task.done()

    async def commit(self) -> None:
        if self.open:
            self._verdict.set_result(True)
        await asyncio.gather(self.task, return_exceptions=True)

    async def rollback(self) -> None:
        if self.open:
            self._verdict.set_result(False)
        await asyncio.gather(self.task, return_exceptions=True)


def _hook(undo: Undo) -> Callable[[object], Awaitable[None]]:
    async def undo_hook(txn: object) -> None:  # Prefect passes the transaction
        await undo()

    undo_hook.__name__ = f"undo:{getattr(undo, '__qualname__', 'step')}"
    return undo_hook
