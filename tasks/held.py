"""A Prefect transaction that stays open until the run decides its fate.

Prefect rolls a nested transaction's parent back whenever the child rolls back, so nesting
stacks inside phase and run transactions would make every failure undo the whole run. The
failure policies need finer control: each stack (and each phase snapshot) is its own
top-level transaction, held open after its work is done until the coordinator says
``commit()`` or ``rollback()``. Rolling back runs the ``on_rollback`` hooks of the tasks that
completed inside it, in reverse order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from prefect.transactions import atransaction

T = TypeVar("T")


class Unwind(Exception):
    """Raised by the work to roll its transaction back at once; carries the work's result."""

    def __init__(self, value: object):
        super().__init__("unwind")
        self.value = value


class _Undo(Exception):
    pass


class Held(Generic[T]):
    """Start ``work`` in its own transaction now; ``await result()`` once it is done."""

    def __init__(self, work: Callable[[], Awaitable[T]]):
        loop = asyncio.get_running_loop()
        self._work = work
        self._done: asyncio.Future[T] = loop.create_future()
        self._verdict: asyncio.Future[bool] = loop.create_future()
        self.unwound = False
        # A new task has a copy of this context: with no transaction active here, the one it
        # opens is top-level, so its rollback cannot cascade into other stacks.
        self.task = asyncio.create_task(self._life())

    async def _life(self) -> None:
        try:
            async with atransaction():
                value = await self._work()
                self._done.set_result(value)
                if not await self._verdict:
                    raise _Undo
        except Unwind as unwind:
            self.unwound = True
            self._done.set_result(unwind.value)  # only after the rollback hooks ran
        except _Undo:
            self.unwound = True
        except BaseException as exc:
            if not self._done.done():
                self._done.set_exception(exc)
            raise

    async def result(self) -> T:
        return await asyncio.shield(self._done)

    @property
    def open(self) -> bool:
        return not self._verdict.done() and not self.task.done()

    async def commit(self) -> None:
        if self.open:
            self._verdict.set_result(True)
        await self.task

    async def rollback(self) -> None:
        if self.open:
            self._verdict.set_result(False)
        await self.task
