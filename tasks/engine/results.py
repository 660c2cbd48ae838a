"""One result per host (fabric's ``GroupResult``): each host's value or the exception it raised.

Every host is run to the end; nothing is cancelled by a sibling's failure. The caller then
decides from ``succeeded`` and ``failed``, instead of splitting outcomes by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class GroupResult(Generic[T]):
    outcomes: Mapping[str, T | Exception]  # host -> value or exception, in the order run

    @property
    def succeeded(self) -> dict[str, T]:
        return {h: o for h, o in self.outcomes.items() if not isinstance(o, Exception)}

    @property
    def failed(self) -> dict[str, Exception]:
        return {h: o for h, o in self.outcomes.items() if isinstance(o, Exception)}

    @property
    def ok(self) -> bool:
        return not self.failed


async def gather_hosts(hosts: Iterable[str], call: Callable[[str], Awaitable[T]]) -> GroupResult[T]:
    """Run ``call(host)`` for every host at once and collect each outcome. A ``BaseException``
    that is not an ``Exception`` (cancellation, KeyboardInterrupt) still propagates."""
    names = list(hosts)
    outcomes = await asyncio.gather(*(call(h) for h in names), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome
    return GroupResult(dict(zip(names, outcomes, strict=True)))


def error_text(host: str, exc: Exception) -> str:
    """An exception as one line about ``host``, without repeating the host's name."""
    return (str(exc) or type(exc).__name__).removeprefix(f"{host}: ")
