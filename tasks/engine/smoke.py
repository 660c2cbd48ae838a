"""Smoke tests of a deployed stack, run from its host: an HTTP GET through the SSH connection
(like the health gate's probes), or a command in one of its services (compose ``exec``).

A failing check never raises: each check ends as one ``SmokeResult``, and the caller decides.
How a response or an exit is judged is pure (``judge_http``, ``judge_exec``), so it is tested
on recorded answers without a host.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from model.masking import MASKER
from model.smoke import SmokeCheck
from tasks.engine.health import http_request, parse_status_line
from tasks.engine.host_pool import HostPool
from tasks.engine.netpolicy import resolve_allowed
from tasks.engine.report import markdown_table
from tasks.engine.transport import SshTransport
from tasks.host_commands.compose import ComposeProject
from tasks.host_commands.smoke import TIMED_OUT, exec_limit_s, smoke_exec_command

DETAIL_LIMIT = 300  # characters of a result's detail
BODY_SHOWN = 200  # characters of a response body quoted in a detail
READ_LIMIT = 1 << 20  # bytes of a response read at most
EXEC_MARGIN_S = 30  # the transport's limit beyond the check's own `timeout`
CHECK_SHOWN = 60  # characters of a check's name in the text table

Mask = Callable[[str], str]


@dataclass(frozen=True)
class SmokeResult:
    stack: str
    host: str
    check: str  # the check's name, or its description
    ok: bool
    detail: str  # masked, at most DETAIL_LIMIT characters
    latency_ms: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


# --- judging (pure) ---

def split_response(data: bytes) -> tuple[int | None, str]:
    """Raw HTTP answer -> (status, decoded body). No status line: (None, everything received)."""
    status = parse_status_line(data)
    if status is None:
        return None, data.decode(errors="replace")
    return status, data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def judge_http(check: SmokeCheck, status: int | None, body: str, latency_ms: float | None,
               mask: Mask = MASKER.mask) -> tuple[bool, str]:
    """(ok, detail): every expectation of ``check`` that the answer misses, or the status and time."""
    problems = []
    if status != check.expect_status:
        problems.append(f"got {'no HTTP answer' if status is None else status}, expected {check.expect_status}")
    if check.body_contains is not None and check.body_contains not in body:
        problems.append(f"body does not contain {check.body_contains!r}")
    if check.body_regex is not None and re.search(check.body_regex, body) is None:
        problems.append(f"body does not match /{check.body_regex}/")
    show_body = bool(problems)
    if check.max_latency_ms is not None and latency_ms is not None and latency_ms > check.max_latency_ms:
        problems.append(f"took {format_ms(latency_ms)} ms > {format_ms(check.max_latency_ms)} ms")
    if not problems:
        return True, f"{status}" + (f" in {format_ms(latency_ms)} ms" if latency_ms is not None else "")
    if show_body:  # masked before it is cut: a cut through a secret would leave a part that no longer matches
        problems.append(f"body: {mask(body)[:BODY_SHOWN]!r}")
    return False, cut(mask("; ".join(problems)))


def judge_exec(check: SmokeCheck, exit_status: int | None, output: str,
               mask: Mask = MASKER.mask) -> tuple[bool, str]:
    """(ok, detail): ok iff the command exited with ``expect_exit``; the detail ends with the
    last of its output."""
    ok = exit_status == check.expect_exit
    if ok:
        head = f"exit {exit_status}"
    elif exit_status == TIMED_OUT:
        head = f"timed out after {exec_limit_s(check)} s"
    elif exit_status is None:
        head = f"ended without an exit status (killed by a signal?), expected exit {check.expect_exit}"
    else:
        head = f"exit {exit_status}, expected {check.expect_exit}"
    tail = " ".join(mask(output).split())  # masked before it is cut; one line
    if tail:
        head += ": " + tail[-max(0, DETAIL_LIMIT - len(head) - 2):]
    return ok, cut(head)


def format_ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def cut(text: str, limit: int = DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- running ---

async def run_smoke_tests(pool: HostPool, host: str, project: ComposeProject, stack: str,
                          checks: Sequence[SmokeCheck]) -> list[SmokeResult]:
    """Every check in order, from ``host``; an exception becomes a failed result with its message."""
    results = []
    for check in checks:
        try:
            if check.http is not None:
                result = await _http_check(pool[host], stack, check)
            else:
                result = await _exec_check(pool[host], project, stack, check)
        except Exception as exc:  # a failing check is a result, never an exception
            detail = MASKER.mask(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            result = SmokeResult(stack, host, check.describe(), False, cut(detail))
        results.append(result)
    return results


async def _http_check(transport: SshTransport, stack: str, check: SmokeCheck) -> SmokeResult:
    host, port = check.endpoint()
    name = check.describe()
    target = await resolve_allowed(f"{transport.name}: smoke test {name}", host)

    def failed(detail: str, latency_ms: float | None = None) -> SmokeResult:
        return SmokeResult(stack, transport.name, name, False, cut(transport.masker.mask(detail)), latency_ms)

    started = time.monotonic()
    try:
        reader, writer = await transport.open_tcp(target, port, check.timeout_s)
    except Exception as exc:
        return failed(f"cannot connect to {host}:{port} from {transport.name}: {exc or type(exc).__name__}")
    try:
        writer.write(http_request(check.http or ""))
        remaining = max(0.001, started + check.timeout_s - time.monotonic())
        data = await asyncio.wait_for(read_to_end(reader, READ_LIMIT), timeout=remaining)
    except TimeoutError:
        return failed(f"no complete answer within {check.timeout_s:g} s", (time.monotonic() - started) * 1000)
    finally:
        writer.close()
    latency_ms = (time.monotonic() - started) * 1000
    status, body = split_response(data)
    ok, detail = judge_http(check, status, body, latency_ms, transport.masker.mask)
    return SmokeResult(stack, transport.name, name, ok, cut(transport.masker.mask(detail)), latency_ms)


async def read_to_end(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Until EOF or ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await reader.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _exec_check(transport: SshTransport, project: ComposeProject, stack: str,
                      check: SmokeCheck) -> SmokeResult:
    done = await transport.run(smoke_exec_command(project, check), check=False,
                               timeout=check.timeout_s + EXEC_MARGIN_S)
    ok, detail = judge_exec(check, done.exit_status, done.stdout + done.stderr, transport.masker.mask)
    return SmokeResult(stack, transport.name, check.describe(), ok, cut(transport.masker.mask(detail)),
                       done.duration_s * 1000)


# --- reporting (pure) ---

HEADERS = ["stack", "host", "check", "result", "ms", "detail"]


def _row(result: SmokeResult) -> list[str]:
    ms = "-" if result.latency_ms is None else format_ms(result.latency_ms)
    return [result.stack, result.host, result.check, "pass" if result.ok else "FAIL", ms, result.detail]


def smoke_table_markdown(results: Sequence[SmokeResult]) -> str:
    return markdown_table(HEADERS, [_row(r) for r in results])


def smoke_table_text(results: Sequence[SmokeResult]) -> str:
    """Fixed-width lines (notifications, the terminal); the detail is the last column, unpadded."""
    if not results:
        return "no smoke tests"
    rows = [HEADERS, *([" ".join(MASKER.mask(cell).split()) for cell in _row(r)] for r in results)]
    rows = [[*row[:2], cut(row[2], CHECK_SHOWN), *row[3:]] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in rows)


def smoke_summary(results: Sequence[SmokeResult]) -> str:
    """``3 of 4 smoke tests passed; failed: web-staging: http http://...: got 500, expected 200``."""
    if not results:
        return "no smoke tests"
    passed = sum(r.ok for r in results)
    text = f"{passed} of {len(results)} smoke test{'' if len(results) == 1 else 's'} passed"
    failed = [f"{r.stack}: {r.check}: {r.detail}" for r in results if not r.ok]
    if failed:
        text += "; failed: " + "; ".join(failed)
    return MASKER.mask(text)
