"""Local agent hook servers on 127.0.0.1, one behaviour each, for the agent hook tests.

Each is a real HTTP server (the standard library's, threaded) that records what it was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict, int], tuple[int, bytes]]  # (request JSON, attempt number) -> (status, body)


def answer(body: Any) -> Reply:
    return lambda request, attempt: (200, json.dumps(body).encode())


def slow(seconds: float, body: Any) -> Reply:
    def reply(request: dict, attempt: int) -> tuple[int, bytes]:
        time.sleep(seconds)
        return 200, json.dumps(body).encode()
    return reply


def garbage() -> Reply:
    return lambda request, attempt: (200, b"<html>I am not JSON</html>")


def status(code: int) -> Reply:
    return lambda request, attempt: (code, b'{"error": "boom"}')


def fails_once_then(body: Any) -> Reply:
    return lambda request, attempt: (500, b"{}") if attempt == 1 else (200, json.dumps(body).encode())


class HookServer:
    def __init__(self, reply: Reply):
        self.reply = reply
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(request)
                server.headers.append(dict(self.headers))
                code, body = server.reply(request, len(server.requests))
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def __enter__(self) -> HookServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def serving(reply: Reply) -> Iterator[HookServer]:
    with HookServer(reply) as server:
        yield server


def down_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
