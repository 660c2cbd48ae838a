"""Prefect Blocks holding the notification channels: a Telegram bot and an SMTP account.

The plain settings objects and the env-var readers are in ``tasks/integrations/notify/settings.py``, so that
package stays free of Prefect.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.integrations.notify.settings import (
    DEFAULT_TIMEOUT_S,
    SMTP_BLOCK,
    TELEGRAM_API_URL,
    TELEGRAM_BLOCK,
    Security,
    SmtpSettings,
    TelegramSettings,
    split_addresses,
)


class TelegramBot(Block):
    """A Telegram bot and the chat it posts deploy notices to."""

    _block_type_name = TELEGRAM_BLOCK
    _description = "Telegram bot token and chat id, for deploy notifications."

    token: SecretStr = Field(description='Bot token from @BotFather, "123456789:AA...".')
    chat_id: str = Field(description='Chat to post to: a numeric id ("-1001234567890") or "@channelusername".')
    api_url: str = Field(default=TELEGRAM_API_URL, description="Bot API server; the default is Telegram's.")
    ca_file: str | None = Field(default=None, description="CA bundle of a private Bot API server; empty: the "
                                                          "system CAs.")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, description="Timeout of one request, in seconds.")

    def settings(self) -> TelegramSettings:
        return TelegramSettings(token=self.token.get_secret_value().strip(), chat_id=self.chat_id.strip(),
                                api_url=self.api_url.strip() or TELEGRAM_API_URL, ca_file=self.ca_file or None,
                                timeout_s=self.timeout_s)


class SmtpAccount(Block):
    """A mail server account that sends deploy notices."""

    _block_type_name = SMTP_BLOCK
    _description = "SMTP server, login, sender and recipients, for deploy notifications by e-mail."

    host: str = Field(description="Mail server host name.")
    port: int | None = Field(default=None, description="Port; empty: 587 (starttls), 465 (tls) or 25 (none).")
    security: Security = Field(default=Security.STARTTLS, description="starttls, tls (implicit, port 465) or "
                                                                      "none (a relay on loopback only).")
    username: str | None = Field(default=None, description="Login user; empty: no login.")
    password: SecretStr | None = Field(default=None, description="Login password (often an app password).")
    from_addr: str = Field(description="Sender address (From).")
    to_addrs: str = Field(description="Recipients, a comma-separated list.")
    ca_file: str | None = Field(default=None, description="CA bundle that signs the server's certificate; empty: "
                                                          "the system CAs.")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, description="Timeout of one socket operation, in seconds.")

    def settings(self) -> SmtpSettings:
        return SmtpSettings(host=self.host.strip(), port=self.port or None, security=Security(self.security),
                            username=(self.username or "").strip() or None,
                            password=(self.password.get_secret_value() if self.password else None) or None,
                            from_addr=self.from_addr.strip(), to_addrs=split_addresses(self.to_addrs),
                            ca_file=self.ca_file or None, timeout_s=self.timeout_s)
