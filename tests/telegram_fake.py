"""A local fake of the Telegram Bot API's ``sendMessage``, on 127.0.0.1 (no trustworthy fake exists).

It checks what the real API checks and answers the way it answers:

- ``POST /bot<token>/sendMessage`` (JSON or form body); a wrong token is ``401 Unauthorized``,
  another method ``404 Not Found``;
- ``chat_id`` must be the configured chat (``400 Bad Request: chat not found``);
- with ``parse_mode=HTML``, only Telegram's tags and entities, properly nested (``400 Bad
  Request: can't parse entities: ...``); the text must be 1-4096 characters (UTF-16 code units)
  after entity parsing, and the raw text is held to the same cap (stricter than Telegram);
- success is ``{"ok": true, "result": {message}}``; errors are ``{"ok": false, "error_code": ...,
  "description": ..., "parameters": {"retry_after": N}}``.

Tests script failures with ``fail_next(code, ...)`` (answered in order, before any check) and
``hang`` (the request is read, then never answered until the fake stops). Every request is in
``requests``; every delivered message is in ``messages``.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

LIMIT = 4096
TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span",
        "blockquote", "tg-emoji"}
_TOKEN = re.compile(r"<(/?)([A-Za-z][\w-]*)([^<>]*)>|&([^;\s<>&]*);|[<>&]|[^<>&]+")
DESCRIPTIONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
                429: "Too Many Requests: retry after {retry_after}"}


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> str:
    """The text Telegram would show; raises ValueError the way the API refuses bad markup."""
    shown: list[str] = []
    stack: list[str] = []
    for match in _TOKEN.finditer(text):
        closing, tag, _attrs, entity = match.group(1), match.group(2), match.group(3), match.group(4)
        token = match.group()
        if tag is not None:
            name = tag.lower()
            if name not in TAGS:
                raise ValueError(f"unsupported start tag \"{name}\" at byte offset {match.start()}")
            if closing:
                if not stack or stack[-1] != name:
                    opened = stack[-1] if stack else name
                    raise ValueError(f"can't find end tag corresponding to start tag \"{opened}\"")
                stack.pop()
            else:
                stack.append(name)
        elif entity is not None:
            if entity in ("lt", "gt", "amp", "quot") or re.fullmatch(r"#\d+|#x[0-9a-fA-F]+", entity):
                shown.append(html.unescape(token))
            else:
                raise ValueError(f"unsupported entity \"&{entity};\"")
        elif token in "<>&":
            raise ValueError(f"unexpected {token!r} at byte offset {match.start()}; escape it")
        else:
            shown.append(token)
    if stack:
        raise ValueError(f"can't find end tag corresponding to start tag \"{stack[-1]}\"")
    return "".join(shown)


@dataclass
class Failure:
    code: int
    description: str
    retry_after: int | None = None


@dataclass
class TelegramFake:
    token: str
    chat_id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    hang: bool = False
    _failures: list[Failure] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, code: int, description: str | None = None, *, retry_after: int | None = None) -> None:
        text = description or DESCRIPTIONS.get(code, "Error").format(retry_after=retry_after)
        with self._lock:
            self._failures.append(Failure(code, text, retry_after))

    def __enter__(self) -> TelegramFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body = fake.answer(self.path, self.headers.get("Content-Type", ""), raw)
                if status is None:  # hang: never answer
                    fake._release.wait(60)
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="telegram-fake",
                         daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ the API

    def answer(self, path: str, content_type: str, raw: bytes) -> tuple[int | None, dict[str, Any]]:
        params = _params(content_type, raw)
        with self._lock:
            self.requests.append({"path": path, "params": params, "at": time.monotonic()})
            failure = self._failures.pop(0) if self._failures else None
        if self.hang:
            return None, {}
        if failure is not None:
            return failure.code, _error(failure.code, failure.description, failure.retry_after)
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", path)
        if not match or match.group(1) != self.token:
            return 401, _error(401, "Unauthorized")
        if match.group(2) != "sendMessage":
            return 404, _error(404, "Not Found: method not found")
        if str(params.get("chat_id", "")) != self.chat_id:
            return 400, _error(400, "Bad Request: chat not found")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        shown = text
        if str(params.get("parse_mode", "")).lower() == "html":
            try:
                shown = parse_html(text)
            except ValueError as exc:
                return 400, _error(400, f"Bad Request: can't parse entities: {exc}")
        if not shown.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        if units(shown) > LIMIT or units(text) > LIMIT:
            return 400, _error(400, "Bad Request: message is too long")
        with self._lock:
            message = {"message_id": len(self.messages) + 1, "date": int(time.time()),
                       "chat": {"id": self.chat_id}, "text": shown}
            self.messages.append({**message, "raw": text, "parse_mode": params.get("parse_mode")})
        return 200, {"ok": True, "result": message}


def _params(content_type: str, raw: bytes) -> dict[str, Any]:
    if "json" in content_type:
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


def _error(code: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body
