"""The health probe's pure parts: the exact HTTP request bytes and the status-line parser."""

from __future__ import annotations

import pytest

from tasks.engine.health import http_request, parse_status_line


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8080/health",
     b"GET /health HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: homelab-health\r\nConnection: close\r\n\r\n"),
    ("http://127.0.0.1:9002",
     b"GET / HTTP/1.0\r\nHost: 127.0.0.1:9002\r\nUser-Agent: homelab-health\r\nConnection: close\r\n\r\n"),
    ("http://127.0.0.1:9000/api/system/status?verbose=1&x=%20",
     b"GET /api/system/status?verbose=1&x=%20 HTTP/1.0\r\nHost: 127.0.0.1:9000\r\n"
     b"User-Agent: homelab-health\r\nConnection: close\r\n\r\n"),
    ("http://localhost:8123/manifest.json#frag",
     b"GET /manifest.json HTTP/1.0\r\nHost: localhost:8123\r\nUser-Agent: homelab-health\r\nConnection: close\r\n\r\n"),
])
def test_http_request_bytes(url, expected):
    assert http_request(url) == expected


@pytest.mark.parametrize(("data", "status"), [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok", 200),
    (b"HTTP/1.0 204 No Content\r\n\r\n", 204),
    (b"HTTP/1.1 503 Service Unavailable\r\n\r\nwarming up", 503),
    (b"HTTP/1.1 200\r\n\r\n", 200),
    (b"HTTP/2 404\r\n\r\n", 404),
    (b"HTTP/1.1 200 OK", 200),
    (b"", None),
    (b"\r\n", None),
    (b"SSH-2.0-OpenSSH_9.6\r\n", None),
    (b"HTTP/1.1 OK 200\r\n\r\n", None),
    (b"HTTP/1.1\r\n\r\n", None),
    (b"\x00\xff\xfe garbage", None),
    (b"<html>200</html>", None),
])
def test_parse_status_line(data, status):
    assert parse_status_line(data) == status
