"""The Telegram Bot API client: ``POST {api_url}/bot<token>/sendMessage`` (httpx, async).

- One notice is **one message**: text longer than Telegram's cap (4096) is **trimmed**, never
  split (``html.fit_html``: cut between tags and entities, open tags closed, ``…`` appended), so
  a notice never arrives in pieces or trips the per-chat rate limit. The formatter keeps the
  end of long details, so trimming here is only a safety net.
- A 429 answer is waited out (its ``retry_after``) once, and only if the wait ends before the
  caller's deadline; 400/401/403 become a ``NotifyError`` that says what to fix.
- The token is registered with ``MASKER`` and never shown: it is part of the URL, so httpx's
  exception text is never passed on, and httpx's request log is masked. The API address is
  checked against HOMELAB_ALLOWED_NETWORKS before the first packet. Proxy variables are ignored
  (a proxy would bypass that check).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import httpx

from model.errors import AddressNotAllowed
from model.masking import MASKER
from tasks.integrations.netpolicy import ALLOWED_NETWORKS_ENV, check_url_allowed
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.hints import telegram_explain, telegram_reach_hint, telegram_tls_hint
from tasks.integrations.notify.html import fit_html
from tasks.integrations.notify.settings import TELEGRAM_BLOCK, TelegramSettings, check_telegram
from tasks.integrations.request_errors import network_cause

log = logging.getLogger("homelab.notify")


class _MaskedRecords(logging.Filter):
    """httpx logs every request's URL at INFO, and the URL holds the token: mask its records."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = MASKER.mask(record.getMessage()), None
        return True


def _mask_httpx_log() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskedRecords) for f in logger.filters):
        logger.addFilter(_MaskedRecords())


class TelegramClient:
    """Sends HTML messages to one chat."""

    def __init__(self, settings: TelegramSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        check_telegram(settings)
        MASKER.add(settings.token)
        _mask_httpx_log()
        self.settings = settings
        self._api = settings.api_url.rstrip("/")
        self._url = f"{self._api}/bot{settings.token}/sendMessage"
        self._transport = transport
        self._address_allowed = False

    def __repr__(self) -> str:
        return f"TelegramClient(api_url={self._api!r}, chat_id={self.settings.chat_id!r})"

    async def send(self, text: str, *, deadline: float | None = None) -> int:
        """Send ``text`` (Telegram HTML, already escaped) as one message; its message_id.

        The text is masked, then trimmed to 4096. ``deadline`` (``time.monotonic()``) bounds
        every request and the wait of a 429. Raises NotifyError.
        """
        text = fit_html(MASKER.mask(text))
        if not text.strip():
            raise self._fail("nothing to send: the message is empty", hint="give the notice a title")
        await self._check_address()
        payload = {"chat_id": self.settings.chat_id, "text": text, "parse_mode": "HTML"}
        try:
            return await self._post(payload, deadline)
        except NotifyError as exc:
            if exc.http_status != 429:
                raise
            wait = exc.retry_after if exc.retry_after is not None else 1.0
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and wait >= left:
                raise self._fail(f"rate limited by Telegram (429): it asks to wait {wait:g}s, longer than the "
                                 f"{max(left, 0):.1f}s left", hint="too many messages at once; later notices "
                                                                   "will get through", status=429) from None
            log.info("telegram %s: rate limited, retrying in %gs", self._api, wait)
        await asyncio.sleep(wait)
        return await self._post(payload, deadline)

    async def _post(self, payload: dict[str, Any], deadline: float | None) -> int:
        timeout = self.settings.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise self._fail("no time left before the deadline", hint=telegram_reach_hint(self._api))
        try:
            async with httpx.AsyncClient(verify=self._tls_context(), trust_env=False, timeout=timeout,
                                         transport=self._transport, follow_redirects=False) as client:
                response = await client.post(self._url, json=payload)
        except httpx.TimeoutException:
            raise self._fail(f"no answer within {timeout:.3g}s", hint=telegram_reach_hint(self._api)) from None
        except httpx.ConnectError as exc:
            if _is_tls(exc):
                raise self._fail("TLS verification failed",
                                 hint=telegram_tls_hint(self._api, self.settings.ca_file)) from None
            raise self._fail(f"cannot connect: {_reason(exc)}", hint=telegram_reach_hint(self._api)) from None
        except httpx.HTTPError as exc:
            raise self._fail(f"the request failed ({type(exc).__name__})",
                             hint=telegram_reach_hint(self._api)) from None
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> int:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            raise self._fail(f"the answer (HTTP {response.status_code}) is not from the Bot API",
                             hint=f"check that TELEGRAM_API_URL ({self._api}) points at a Bot API server",
                             status=response.status_code)
        if body["ok"]:
            result = body.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return message_id if isinstance(message_id, int) else 0
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else response.status_code
        description = str(body.get("description") or "")
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        retry_after = parameters.get("retry_after")
        cause, hint = telegram_explain(code, description, self.settings.chat_id)
        raise self._fail(cause, hint=hint, status=code,
                         retry_after=float(retry_after) if isinstance(retry_after, int | float) else None)

    async def _check_address(self) -> None:
        if self._address_allowed:
            return
        try:
            await asyncio.to_thread(check_url_allowed, "Telegram", self._api)
        except AddressNotAllowed as exc:
            raise self._fail(f"refused before connecting: {exc}",
                             hint=f"point TELEGRAM_API_URL (or the '{TELEGRAM_BLOCK}' block) at an address inside "
                                  f"{ALLOWED_NETWORKS_ENV}, or add its network there") from None
        self._address_allowed = True

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file or None)

    def _fail(self, cause: str, *, hint: str, status: int | None = None,
              retry_after: float | None = None) -> NotifyError:
        return NotifyError(f"telegram {self._api}: sending to chat {self.settings.chat_id} failed: {cause}\n"
                           f"  next: {hint}", channel="telegram", http_status=status, cause=cause,
                           retry_after=retry_after)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_tls(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) for e in _chain(exc)) or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _reason(exc: BaseException) -> str:
    """'connection refused', ... on one line, from the OS error inside, never the URL."""
    for inner in _chain(exc):
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror.lower()
    return network_cause(str(exc)) or type(exc).__name__
