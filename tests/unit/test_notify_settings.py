"""Notification settings from the environment and the blocks, the error hints, and the fan-out
when nothing (or something broken) is configured. No network."""

from __future__ import annotations

import pytest

from blocks.notify import SmtpAccount, TelegramBot
from tasks.engine.notify import Channels, notify
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.hints import telegram_explain
from tasks.integrations.notify.notice import Notice
from tasks.integrations.notify.settings import (
    Security,
    SmtpSettings,
    TelegramSettings,
    smtp_settings_from_env,
    telegram_settings_from_env,
)

TOKEN = "123456789:AAF-unit-test-token_not-real-0123456789"
SMTP_BASE = {"SMTP_HOST": "mail.example.test", "SMTP_FROM": "homelab@example.test", "SMTP_TO": "a@x.test, b@y.test"}


def test_no_telegram_variables_means_telegram_is_off():
    assert telegram_settings_from_env({}) is None


def test_telegram_from_env():
    settings = telegram_settings_from_env({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "-1001234567890",
                                           "TELEGRAM_API_URL": "http://127.0.0.1:8081"})
    assert settings == TelegramSettings(token=TOKEN, chat_id="-1001234567890", api_url="http://127.0.0.1:8081")
    assert TOKEN not in repr(settings)
    assert telegram_settings_from_env({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "@ops_channel"}).api_url == \
        "https://api.telegram.org"


@pytest.mark.parametrize(("env", "says"), [
    ({"TELEGRAM_BOT_TOKEN": TOKEN}, "TELEGRAM_BOT_TOKEN is set but TELEGRAM_CHAT_ID is not"),
    ({"TELEGRAM_CHAT_ID": "42"}, "TELEGRAM_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not"),
    ({"TELEGRAM_BOT_TOKEN": "not a token", "TELEGRAM_CHAT_ID": "42"}, "is not of the form <bot id>:<secret>"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "ops"}, "chat id 'ops' is neither a number"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": "api.telegram.org"},
     "is not http(s)://host"),
], ids=["token-only", "chat-only", "bad-token", "bad-chat", "bad-url"])
def test_half_or_wrong_telegram_settings_say_what_to_fix(env: dict[str, str], says: str):
    with pytest.raises(NotifyError) as caught:
        telegram_settings_from_env(env)
    assert says in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_no_smtp_host_means_email_is_off():
    assert smtp_settings_from_env({"SMTP_TO": "a@x.test"}) is None


@pytest.mark.parametrize(("extra", "security", "port"), [
    ({}, Security.STARTTLS, 587),
    ({"SMTP_SECURITY": "tls"}, Security.TLS, 465),
    ({"SMTP_SECURITY": "NONE"}, Security.NONE, 25),
    ({"SMTP_SECURITY": "starttls", "SMTP_PORT": "2525"}, Security.STARTTLS, 2525),
])
def test_smtp_from_env(extra: dict[str, str], security: Security, port: int):
    settings = smtp_settings_from_env({**SMTP_BASE, **extra})
    assert settings is not None
    assert (settings.security, settings.effective_port) == (security, port)
    assert settings.to_addrs == ("a@x.test", "b@y.test")


@pytest.mark.parametrize(("extra", "says"), [
    ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY='ssl' is not one of starttls, tls, none"),
    ({"SMTP_PORT": "smtp"}, "SMTP_PORT='smtp' is not a number"),
    ({"SMTP_TO": ""}, "no valid recipients"),
    ({"SMTP_FROM": "homelab"}, "sender 'homelab' is not an address"),
    ({"SMTP_USERNAME": "bot"}, "SMTP_USERNAME is set but SMTP_PASSWORD is not"),
    ({"SMTP_PASSWORD": "unit-smtp-pw-123"}, "SMTP_PASSWORD is set but SMTP_USERNAME is not"),
    ({"SMTP_SECURITY": "none", "SMTP_USERNAME": "bot", "SMTP_PASSWORD": "unit-smtp-pw-123"},
     "refusing to send the password without TLS"),
])
def test_wrong_smtp_settings_say_what_to_fix(extra: dict[str, str], says: str):
    with pytest.raises(NotifyError) as caught:
        smtp_settings_from_env({**SMTP_BASE, **extra})
    assert says in str(caught.value)
    assert "unit-smtp-pw-123" not in str(caught.value)


def test_blocks_give_the_same_settings_types():
    bot = TelegramBot(token=TOKEN, chat_id=" 42 ", api_url="http://127.0.0.1:1")
    assert bot.settings() == TelegramSettings(token=TOKEN, chat_id="42", api_url="http://127.0.0.1:1")
    assert TOKEN not in repr(bot)
    account = SmtpAccount(host="mail.example.test", security="tls", username="bot", password="unit-smtp-pw-123",
                          from_addr="homelab@example.test", to_addrs="a@x.test,b@y.test")
    assert account.settings() == SmtpSettings(host="mail.example.test", security=Security.TLS, username="bot",
                                              password="unit-smtp-pw-123", from_addr="homelab@example.test",
                                              to_addrs=("a@x.test", "b@y.test"))
    assert "unit-smtp-pw-123" not in repr(account)


@pytest.mark.parametrize(("code", "description", "cause", "hint"), [
    (401, "Unauthorized", "the bot token was refused", "@BotFather"),
    (400, "Bad Request: chat not found", "chat -42 was not found", "TELEGRAM_CHAT_ID"),
    (400, "Bad Request: can't parse entities: x", "could not parse the message's HTML", "bug"),
    (403, "Forbidden: bot was blocked by the user", "the bot may not post to chat -42", "unblock the bot"),
    (429, "Too Many Requests: retry after 5", "rate limited", "wait"),
    (502, "Bad Gateway", "failed to serve", "retry later"),
    (400, "Bad Request: something new", "Telegram refused the message (400: Bad Request: something new)",
     "TELEGRAM_CHAT_ID"),
])
def test_telegram_errors_are_explained(code: int, description: str, cause: str, hint: str):
    said, next_step = telegram_explain(code, description, "-42")
    assert cause in said
    assert hint in next_step


async def test_with_no_channel_configured_notify_sends_nothing_and_is_ok():
    outcome = await notify(Notice(kind="started", title="run"), Channels())
    assert outcome.ok and outcome.sent == {} and outcome.off == ("telegram", "smtp")


async def test_a_misconfigured_channel_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch):
    for name in ("SMTP_HOST", "TELEGRAM_CHAT_ID", "TELEGRAM_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    outcome = await notify(Notice(kind="failed", title="run"))
    assert not outcome.ok
    assert "TELEGRAM_CHAT_ID is not" in outcome.failed["telegram"]
    assert TOKEN not in outcome.failed["telegram"]
    assert outcome.off == ("smtp",)
