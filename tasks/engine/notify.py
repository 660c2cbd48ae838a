"""Tell people what a run did: one notice, to every configured channel at once.

``notify`` is what the flows call. It never raises: each channel runs under its own timeout,
and a failure or a hang is logged (masked), counted in ``homelab_notification_failures_total
{channel}`` and returned as that channel's outcome, so a broken mail server can never fail or
stall a deploy. A channel that is not configured is off, which is not a failure.

Settings come from the blocks named by the caller (``TelegramBot``, ``SmtpAccount``) or else
from the environment (``tasks/integrations/notify/settings.py``). All text is masked twice on
its way out: field by field when it is formatted, and as a whole by each client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from model.masking import MASKER
from tasks.engine import metrics
from tasks.engine.results import GroupResult, gather_hosts
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.format import email_text, telegram_html
from tasks.integrations.notify.notice import Kind, Notice
from tasks.integrations.notify.settings import (
    SmtpSettings,
    TelegramSettings,
    smtp_settings_from_env,
    telegram_settings_from_env,
)
from tasks.integrations.notify.smtp import SmtpSender
from tasks.integrations.notify.telegram import TelegramClient

__all__ = ["NOTIFY_TIMEOUT_S", "Channels", "Kind", "Notice", "NotifyOutcome", "load_channels", "notify"]

log = logging.getLogger("homelab.notify")

NOTIFY_TIMEOUT_S = 10.0  # per channel, everything included (a 429 wait, every request)
CHANNELS = ("telegram", "smtp")

METRICS = CollectorRegistry()  # push it, or merge it into the run's registry; nothing here needs a gateway
FAILED = Counter("homelab_notification_failures", "Notifications that a channel failed to deliver (or that timed "
                 "out).", ["channel"], registry=METRICS)


@dataclass(frozen=True)
class Channels:
    """The configured channels; None: off. ``broken``: channels whose settings could not be read
    (each is reported as a failure of that channel, never raised)."""

    telegram: TelegramSettings | None = None
    smtp: SmtpSettings | None = None
    broken: Mapping[str, Exception] = field(default_factory=dict)


@dataclass(frozen=True)
class NotifyOutcome:
    """What happened on each configured channel: what it delivered, or why it failed."""

    channels: GroupResult[str]  # channel -> "message 42" / "mail to a@x", or the error
    off: tuple[str, ...] = ()  # channels not configured

    @property
    def sent(self) -> dict[str, str]:
        return self.channels.succeeded

    @property
    def failed(self) -> dict[str, str]:
        """channel -> the failure, masked, on one line per cause."""
        return {name: MASKER.mask(str(exc) or type(exc).__name__) for name, exc in self.channels.failed.items()}

    @property
    def ok(self) -> bool:
        return self.channels.ok


async def load_channels(telegram_block: str | None = None, smtp_block: str | None = None,
                        env: Mapping[str, str] = os.environ) -> Channels:
    """Each channel from its block when one is named, else from the environment. Never raises:
    a block that cannot be loaded, or settings that are half set, mark that channel broken."""
    found: dict[str, TelegramSettings | SmtpSettings | None] = {}
    broken: dict[str, Exception] = {}
    for name, block, from_env in (("telegram", telegram_block, telegram_settings_from_env),
                                  ("smtp", smtp_block, smtp_settings_from_env)):
        try:
            found[name] = await _from_block(name, block) if block else from_env(env)
        except Exception as exc:  # a broken channel is reported, never raised
            broken[name] = exc
            log.warning("notification channel %s is misconfigured: %s", name, _text(exc))
    telegram, smtp = found.get("telegram"), found.get("smtp")
    return Channels(telegram=telegram if isinstance(telegram, TelegramSettings) else None,
                    smtp=smtp if isinstance(smtp, SmtpSettings) else None, broken=broken)


async def _from_block(channel: str, name: str) -> TelegramSettings | SmtpSettings:
    from blocks.notify import SmtpAccount, TelegramBot

    block_type = TelegramBot if channel == "telegram" else SmtpAccount
    try:
        block = await block_type.aload(name)
    except Exception as exc:  # Prefect's text names the block, not its secrets
        raise NotifyError(f"{channel}: cannot load the '{block_type.get_block_type_name()}' block {name!r} "
                          f"({type(exc).__name__}: {_text(exc)}); create it, or fix its name",
                          channel=channel) from None
    return block.settings()


async def notify(notice: Notice, channels: Channels | None = None, *,
                 timeout_s: float = NOTIFY_TIMEOUT_S) -> NotifyOutcome:
    """Send ``notice`` to every configured channel concurrently, each within ``timeout_s``.
    ``channels``: by default from the environment. Never raises (but lets a cancellation of the
    caller through)."""
    if channels is None:
        channels = await load_channels()
    senders: dict[str, Callable[[float], Awaitable[str]]] = {}
    if channels.telegram is not None:
        senders["telegram"] = _telegram(channels.telegram, notice)
    if channels.smtp is not None:
        senders["smtp"] = _smtp(channels.smtp, notice)
    if senders:
        done = await gather_hosts(senders, lambda name: _bounded(name, senders[name], timeout_s))
        outcomes = dict(done.outcomes)
    else:
        outcomes = {}
    outcomes.update(channels.broken)
    for name, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            FAILED.labels(channel=name).inc()
            metrics.record_notification_failure(name)
            log.warning("notification %r via %s failed: %s", notice.kind.value, name, _text(outcome))
        else:
            log.info("notification %r via %s: %s", notice.kind.value, name, outcome)
    off = tuple(name for name in CHANNELS if name not in outcomes)
    return NotifyOutcome(channels=GroupResult(outcomes), off=off)


def _telegram(settings: TelegramSettings, notice: Notice) -> Callable[[float], Awaitable[str]]:
    async def send(deadline: float) -> str:
        message_id = await TelegramClient(settings).send(telegram_html(notice), deadline=deadline)
        return f"message {message_id} to chat {settings.chat_id}"

    return send


def _smtp(settings: SmtpSettings, notice: Notice) -> Callable[[float], Awaitable[str]]:
    async def send(deadline: float) -> str:
        delivered = await SmtpSender(settings).send(email_text(notice), deadline=deadline)
        return f"mail to {', '.join(delivered)}"

    return send


async def _bounded(channel: str, send: Callable[[float], Awaitable[str]], timeout_s: float) -> str:
    """``send`` under its own timeout. A hang becomes a NotifyError; a blocking SMTP call left in
    its thread ends at its own socket timeout (at most the same ``timeout_s``)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await send(time.monotonic() + timeout_s)
    except TimeoutError:
        raise NotifyError(f"{channel}: no delivery within {timeout_s:g}s; the server hangs or is too slow (the "
                          "notice was dropped, the run goes on)", channel=channel, cause="timeout") from None


def _text(exc: Exception) -> str:
    return MASKER.mask(str(exc) or type(exc).__name__)
