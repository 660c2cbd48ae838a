"""The Telegram client and the notify fan-out against a local fake of the Bot API
(``tests/telegram_fake.py``) on 127.0.0.1: successes, trimming to the cap, 429 with retry_after,
400/401/403, a hanging server. Never contacts api.telegram.org."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from model.masking import MASKER
from tasks.engine.notify import METRICS, Channels, notify
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.format import telegram_html
from tasks.integrations.notify.notice import Notice
from tasks.integrations.notify.settings import Security, SmtpSettings, TelegramSettings
from tasks.integrations.notify.telegram import TelegramClient
from tests.telegram_fake import TelegramFake, parse_html, units

TOKEN = "987654321:AAH-fake-bot-token_for-tests-0123456789"
SECRET_PART = TOKEN.split(":", 1)[1]
CHAT = "-1001234567890"
LEAK = "telegram-integration-S3CR3T-value"
MASKER.add(LEAK)
NOTICE = Notice(kind="failed", title="deploy-homelab production @ 3f2c1a9", summary="health gate failed: <jellyfin>",
                details="\n".join(f"jellyfin | line {i} & more" for i in range(3000)) + f"\nAPI_KEY={LEAK}\nexit 1",
                link="http://127.0.0.1:4200/runs/flow-run/1")


@pytest.fixture
def fake() -> Iterator[TelegramFake]:
    with TelegramFake(token=TOKEN, chat_id=CHAT) as server:
        yield server


def client(url: str, *, token: str = TOKEN, chat_id: str = CHAT, timeout_s: float = 5) -> TelegramClient:
    return TelegramClient(TelegramSettings(token=token, chat_id=chat_id, api_url=url, timeout_s=timeout_s))


def assert_no_token(text: str) -> None:
    assert TOKEN not in text and SECRET_PART not in text


async def test_a_notice_arrives_as_one_html_message(fake: TelegramFake):
    message_id = await client(fake.url).send(telegram_html(NOTICE))
    [message] = fake.messages
    assert message["message_id"] == message_id == 1
    assert message["parse_mode"] == "HTML" and message["chat"] == {"id": CHAT}
    assert message["text"].startswith("❌ Deploy failed: deploy-homelab production @ 3f2c1a9\n\n"
                                      "health gate failed: <jellyfin>")
    assert message["text"].endswith("API_KEY=***\nexit 1\n\nOpen the run in Prefect")
    assert LEAK not in message["raw"]
    assert units(message["raw"]) <= 4096


async def test_the_token_in_httpx_request_log_is_masked(fake: TelegramFake, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG):
        await client(fake.url).send("hello")
    assert "HTTP Request: POST" in caplog.text and "/bot***/sendMessage" in caplog.text
    assert_no_token(caplog.text)


async def test_a_too_long_message_is_trimmed_to_the_cap_not_split(fake: TelegramFake):
    text = "<b>report</b>\n<pre>" + "a &amp; b &lt;c&gt;\n" * 1000 + "</pre>"
    await client(fake.url).send(text)
    [message] = fake.messages
    assert len(fake.requests) == 1
    assert units(message["raw"]) <= 4096
    assert message["raw"].endswith("…</pre>")
    assert message["text"].startswith("report\na & b <c>\n")


async def test_the_fake_refuses_what_telegram_refuses(fake: TelegramFake):
    """The fake has teeth: unescaped text and an over-long message are 400s, as on Telegram."""
    with pytest.raises(NotifyError, match=r"could not parse the message's HTML \(400: Bad Request: can't parse"):
        await client(fake.url).send("a < b")
    long_text = "x" * 5000
    fake_answer = fake.answer(f"/bot{TOKEN}/sendMessage", "application/json",
                              f'{{"chat_id": "{CHAT}", "text": "{long_text}"}}'.encode())
    assert fake_answer == (400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"})
    assert fake.messages == []


async def test_429_is_waited_out_once_then_sent(fake: TelegramFake):
    fake.fail_next(429, retry_after=1)
    started = time.monotonic()
    assert await client(fake.url).send("hello") == 1
    first, second = fake.requests
    assert second["at"] - first["at"] >= 1
    assert time.monotonic() - started < 3
    assert [m["text"] for m in fake.messages] == ["hello"]


async def test_a_second_429_is_an_error(fake: TelegramFake):
    fake.fail_next(429, retry_after=1)
    fake.fail_next(429, retry_after=1)
    with pytest.raises(NotifyError, match=r"rate limited by Telegram \(429: Too Many Requests") as caught:
        await client(fake.url).send("hello")
    assert caught.value.http_status == 429 and len(fake.requests) == 2


async def test_a_429_wait_past_the_deadline_is_not_waited(fake: TelegramFake):
    fake.fail_next(429, retry_after=30)
    started = time.monotonic()
    with pytest.raises(NotifyError, match=r"it asks to wait 30s, longer than the \d\.\ds left"):
        await client(fake.url).send("hello", deadline=time.monotonic() + 2)
    assert time.monotonic() - started < 1 and len(fake.requests) == 1


async def test_a_wrong_token_is_a_clear_error_without_the_token(fake: TelegramFake):
    wrong = "987654321:AAH-wrong-token-for-tests-9876543210"
    with pytest.raises(NotifyError) as caught:
        await client(fake.url, token=wrong).send("hello")
    text = f"{caught.value}\n{caught.value!r}"
    assert f"telegram {fake.url}: sending to chat {CHAT} failed: the bot token was refused (401 Unauthorized)" in text
    assert "TELEGRAM_BOT_TOKEN" in text and "@BotFather" in text
    assert wrong not in text and wrong.split(":")[1] not in text
    assert caught.value.http_status == 401
    assert fake.requests[0]["path"] == f"/bot{wrong}/sendMessage"  # it was sent, only never shown


@pytest.mark.parametrize(("code", "description", "says"), [
    (400, "Bad Request: chat not found", f"chat {CHAT} was not found (400)"),
    (401, "Unauthorized", "the bot token was refused (401 Unauthorized)"),
    (403, "Forbidden: bot was kicked from the group chat", f"the bot may not post to chat {CHAT} (403"),
])
async def test_scripted_errors_are_explained(fake: TelegramFake, code: int, description: str, says: str):
    fake.fail_next(code, description)
    with pytest.raises(NotifyError) as caught:
        await client(fake.url).send("hello")
    assert says in str(caught.value)
    assert_no_token(str(caught.value))


async def test_a_wrong_chat_id_is_named(fake: TelegramFake):
    with pytest.raises(NotifyError, match=r"chat -100999 was not found \(400\)\n  next: check TELEGRAM_CHAT_ID"):
        await client(fake.url, chat_id="-100999").send("hello")


async def test_nothing_listening_is_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NotifyError, match=r"cannot connect: connection refused") as caught:
        await client(f"http://127.0.0.1:{port}").send("hello")
    assert_no_token(str(caught.value))


async def test_an_api_outside_the_allowed_networks_is_never_contacted(fake: TelegramFake,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMELAB_ALLOWED_NETWORKS", "10.203.0.0/24")
    with pytest.raises(NotifyError, match="refused before connecting"):
        await client(fake.url).send("hello")
    assert fake.requests == []


async def test_the_fan_out_returns_within_its_timeout_when_telegram_hangs(fake: TelegramFake):
    fake.hang = True
    before = METRICS.get_sample_value("homelab_notification_failures_total", {"channel": "telegram"}) or 0
    started = time.monotonic()
    outcome = await notify(NOTICE, Channels(telegram=TelegramSettings(token=TOKEN, chat_id=CHAT, api_url=fake.url,
                                                                      timeout_s=30)), timeout_s=1)
    assert time.monotonic() - started < 2
    assert not outcome.ok and outcome.sent == {} and outcome.off == ("smtp",)
    failure = outcome.failed["telegram"]
    assert "no delivery within 1s" in failure or "no answer within" in failure
    assert_no_token(failure)
    assert len(fake.requests) == 1
    assert METRICS.get_sample_value("homelab_notification_failures_total", {"channel": "telegram"}) == before + 1


async def test_the_fan_out_sends_and_reports_each_channel(fake: TelegramFake):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    smtp = SmtpSettings(host="127.0.0.1", port=dead_port, security=Security.NONE, from_addr="homelab@example.test",
                        to_addrs=("ops@example.test",))
    outcome = await notify(NOTICE, Channels(telegram=TelegramSettings(token=TOKEN, chat_id=CHAT, api_url=fake.url),
                                            smtp=smtp))
    assert outcome.sent == {"telegram": f"message 1 to chat {CHAT}"}
    assert "connection refused" in outcome.failed["smtp"]
    assert outcome.off == ()
    parse_html(fake.messages[0]["raw"])
