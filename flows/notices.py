"""A run's notices: sent in the background, so a slow channel (or a slow communicator agent)
never slows the deploy; the run waits for them (each bounded by its timeouts) only before it ends."""

from __future__ import annotations

import asyncio

from flows.agent_gates import rewrite_notice
from model.inventory import Inventory
from tasks.engine.notify import Channels, Kind, Notice, load_channels, notify
from tasks.engine.report import DeployReport, StackResult


class RunNotices:
    def __init__(self, inventory: Inventory, title: str, link: str | None):
        self.inventory = inventory
        self.title = title
        self.link = link
        self._channels: asyncio.Task[Channels] | None = None
        self._sending: list[asyncio.Task] = []
        self.agent_decisions: list[dict] = []  # the communicator's, one per notice it saw

    def send(self, kind: Kind, summary: str, details: str = "") -> None:
        if self._channels is None:
            section = self.inventory.notify
            self._channels = asyncio.create_task(load_channels(section.telegram_block, section.smtp_block))
        notice = Notice(kind=kind, title=self.title, summary=summary, details=details, link=self.link)
        self._sending.append(asyncio.create_task(self._send(notice)))

    async def _send(self, notice: Notice) -> None:
        assert self._channels is not None
        notice = await rewrite_notice(self.inventory.agents.notify, notice, notes=self.agent_decisions)
        await notify(notice, await self._channels)

    async def drain(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)

    def report(self, report: DeployReport, what: str) -> None:
        """Success, failure or rollback of ``what`` (production, staging), from its report."""
        rolled = [s for s in report.stacks if s.rollback]
        if report.ok:
            self.send(Kind.SUCCEEDED, f"{what}: {report.summary()}")
            return
        details = "\n\n".join(_failure(s) for s in report.failures)
        self.send(Kind.FAILED, f"{what}: {report.summary()}", details)
        if rolled:
            self.send(Kind.ROLLED_BACK, f"{what}: {len(rolled)} stack(s) undone",
                      "\n".join(f"{s.stack} on {s.host}: {s.rollback}" for s in rolled))


def _failure(stack: StackResult) -> str:
    """The failing stack, its probe output and the end of its log (the notifier trims further)."""
    out = f"{stack.stack} on {stack.host} ({stack.phase}): {stack.error}"
    if stack.probe_output:
        out += f"\nprobes:\n{stack.probe_output}"
    if stack.logs:
        out += f"\nlog tail:\n{stack.logs[-1500:]}"
    return out
