"""Where the notification channels' settings come from: a block (``blocks/notify.py``) or the
environment. A channel that is not configured is off (``None``), which is not an error; a
channel that is half configured is (``NotifyError``, naming the variables)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tasks.integrations.notify.errors import NotifyError

TELEGRAM_BLOCK = "Homelab Telegram Bot"
SMTP_BLOCK = "Homelab SMTP Account"
TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_TIMEOUT_S = 10.0

_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")  # "<bot id>:<secret>", as @BotFather hands it out
_CHAT_ID = re.compile(r"-?\d+|@[A-Za-z][A-Za-z0-9_]{3,}")  # a numeric id, or @channelusername


class Security(StrEnum):
    STARTTLS = "starttls"  # plain connect, then STARTTLS (submission, port 587)
    TLS = "tls"  # TLS from the first byte (submissions, port 465)
    NONE = "none"  # no TLS at all: only for a relay on loopback; never with a password


DEFAULT_PORTS = {Security.STARTTLS: 587, Security.TLS: 465, Security.NONE: 25}


@dataclass(frozen=True)
class TelegramSettings:
    token: str = field(repr=False)  # "123456:ABC...", from @BotFather
    chat_id: str  # "-1001234567890" or "@channel"
    api_url: str = TELEGRAM_API_URL  # a Bot API server (or a local fake in tests)
    ca_file: str | None = None  # CA bundle for a private Bot API server; None: the system CAs
    timeout_s: float = DEFAULT_TIMEOUT_S  # per HTTP request

    def __post_init__(self) -> None:
        check_telegram(self)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    from_addr: str
    to_addrs: tuple[str, ...]
    security: Security = Security.STARTTLS
    port: int | None = None  # None: 587 (starttls), 465 (tls) or 25 (none)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # CA bundle that verifies the server; None: the system CAs
    timeout_s: float = DEFAULT_TIMEOUT_S  # per socket operation

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def __post_init__(self) -> None:
        check_smtp(self)


def check_telegram(s: TelegramSettings) -> None:
    """Raise NotifyError for a token or chat id that cannot work; never names the token."""
    where = f"TELEGRAM_BOT_TOKEN (or the token in the '{TELEGRAM_BLOCK}' block)"
    if not _TOKEN.fullmatch(s.token or ""):
        raise NotifyError(f"telegram: the bot token is not of the form <bot id>:<secret>; set {where} to the "
                          "token @BotFather gave you", channel="telegram")
    if not _CHAT_ID.fullmatch(str(s.chat_id or "")):
        raise NotifyError(f"telegram: chat id {s.chat_id!r} is neither a number (e.g. -1001234567890) nor "
                          "@channelusername; set TELEGRAM_CHAT_ID (or chat_id in the block) to the chat's id "
                          "(getUpdates shows it after you message the bot)", channel="telegram")
    if not re.match(r"https?://[^/]", s.api_url or ""):
        raise NotifyError(f"telegram: API URL {s.api_url!r} is not http(s)://host[:port]; fix TELEGRAM_API_URL or "
                          f"unset it for {TELEGRAM_API_URL}", channel="telegram")


def check_smtp(s: SmtpSettings) -> None:
    """Raise NotifyError for settings that cannot work or would leak; never names the password."""
    if not s.from_addr or "@" not in s.from_addr:
        raise NotifyError(f"smtp {s.host}: sender {s.from_addr!r} is not an address; set SMTP_FROM (or from_addr "
                          f"in the '{SMTP_BLOCK}' block)", channel="smtp")
    bad = [a for a in s.to_addrs if "@" not in a]
    if not s.to_addrs or bad:
        raise NotifyError(f"smtp {s.host}: no valid recipients ({', '.join(bad) or 'none given'}); set SMTP_TO to a "
                          "comma list of addresses", channel="smtp")
    if bool(s.username) != bool(s.password):
        have, lack = ("SMTP_USERNAME", "SMTP_PASSWORD") if s.username else ("SMTP_PASSWORD", "SMTP_USERNAME")
        raise NotifyError(f"smtp {s.host}: {have} is set but {lack} is not; a login needs both (or unset "
                          f"{have} for a relay without login)", channel="smtp")
    if s.password and s.security is Security.NONE:
        raise NotifyError(f"smtp {s.host}: refusing to send the password without TLS (SMTP_SECURITY=none); use "
                          "starttls or tls", channel="smtp")
    if s.port is not None and not 0 < s.port < 65536:
        raise NotifyError(f"smtp {s.host}: port {s.port} is not a TCP port; fix SMTP_PORT", channel="smtp")


def telegram_settings_from_env(env: Mapping[str, str] = os.environ) -> TelegramSettings | None:
    """TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_API_URL (default https://api.telegram.org) and
    TELEGRAM_CA_FILE. None (Telegram off) when neither the token nor the chat id is set."""
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    chat_id = env.get("TELEGRAM_CHAT_ID", "").strip()
    if not token and not chat_id:
        return None
    if not (token and chat_id):
        have, lack = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID") if token else ("TELEGRAM_CHAT_ID",
                                                                               "TELEGRAM_BOT_TOKEN")
        raise NotifyError(f"telegram: {have} is set but {lack} is not; set both, or unset {have} to turn "
                          "Telegram notifications off", channel="telegram")
    return TelegramSettings(token=token, chat_id=chat_id,
                            api_url=env.get("TELEGRAM_API_URL", "").strip() or TELEGRAM_API_URL,
                            ca_file=env.get("TELEGRAM_CA_FILE", "").strip() or None)


def smtp_settings_from_env(env: Mapping[str, str] = os.environ) -> SmtpSettings | None:
    """SMTP_HOST, SMTP_PORT, SMTP_SECURITY (starttls | tls | none; default starttls), SMTP_USERNAME +
    SMTP_PASSWORD (optional), SMTP_FROM, SMTP_TO (comma list) and SMTP_CA_FILE. None (e-mail off)
    when SMTP_HOST is unset or empty."""
    host = env.get("SMTP_HOST", "").strip()
    if not host:
        return None
    raw_security = env.get("SMTP_SECURITY", "").strip().lower() or Security.STARTTLS.value
    try:
        security = Security(raw_security)
    except ValueError:
        raise NotifyError(f"smtp {host}: SMTP_SECURITY={raw_security!r} is not one of starttls, tls, none",
                          channel="smtp") from None
    raw_port = env.get("SMTP_PORT", "").strip()
    if raw_port and not raw_port.isdigit():
        raise NotifyError(f"smtp {host}: SMTP_PORT={raw_port!r} is not a number", channel="smtp")
    return SmtpSettings(host=host, port=int(raw_port) if raw_port else None, security=security,
                        username=env.get("SMTP_USERNAME", "").strip() or None,
                        password=env.get("SMTP_PASSWORD") or None,
                        from_addr=env.get("SMTP_FROM", "").strip(),
                        to_addrs=split_addresses(env.get("SMTP_TO", "")),
                        ca_file=env.get("SMTP_CA_FILE", "").strip() or None)


def split_addresses(raw: str) -> tuple[str, ...]:
    """``"a@x, b@y"`` -> ``("a@x", "b@y")``."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())
