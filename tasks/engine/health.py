"""The health gate: applied is not healthy.

A stack passes when every service's container runs (and is healthy, where the image has a
healthcheck) and every HTTP/TCP check from the inventory answers, before a deadline. Probes
run from the host itself, through the SSH connection (direct-tcpip), so they need no tool
on the host and also reach services bound to the host's loopback.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from model.inventory import HealthCheck
from tasks.engine.netpolicy import resolve_allowed
from tasks.engine.transport import SshTransport
from tasks.host_commands.compose import compose_logs
from tasks.host_commands.containers import Container, judge_project, parse_containers, wait_settled

POLL_INTERVAL_S = 0.25  # between HTTP/TCP probe rounds; container state is polled on the host


def http_request(url: str) -> bytes:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return (f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: homelab-health\r\n"
            "Connection: close\r\n\r\n").encode()


def parse_status_line(data: bytes) -> int | None:
    """b"HTTP/1.1 200 OK..." -> 200; None for anything else."""
    first = data.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1])
    return None


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    output: str


async def probe(transport: SshTransport, check: HealthCheck) -> ProbeResult:
    """One probe from the host. Its target is checked against HOMELAB_ALLOWED_NETWORKS first (a
    name: every address it resolves to here), and the probe goes to the address checked; a target
    outside raises AddressNotAllowed, which fails the stack at once."""
    host, port = check.endpoint()
    target = await resolve_allowed(f"{transport.name}: health probe {check.describe()}", host)
    try:
        reader, writer = await transport.open_tcp(target, port, check.timeout_s)
    except Exception as exc:
        return ProbeResult(False, f"{check.describe()}: cannot connect to {host}:{port} "
                                  f"from {transport.name}: {exc or type(exc).__name__}")
    try:
        if check.tcp is not None:
            return ProbeResult(True, f"tcp {host}:{port}: open")
        writer.write(http_request(check.http or ""))
        data = await asyncio.wait_for(reader.read(65536), timeout=check.timeout_s)
        status = parse_status_line(data)
        # masked before it is cut: a cut through a secret would leave a part that no longer matches
        body = transport.masker.mask(data.partition(b"\r\n\r\n")[2].decode(errors="replace")).strip()[:300]
        if status == check.expect_status:
            return ProbeResult(True, f"{check.describe()}: {status}")
        return ProbeResult(False, f"{check.describe()}: got {status or 'no HTTP answer'}, "
                                  f"expected {check.expect_status}; body: {body!r}")
    except (TimeoutError, OSError, EOFError) as exc:
        return ProbeResult(False, f"{check.describe()}: {type(exc).__name__} {exc}")
    finally:
        writer.close()


@dataclass(frozen=True, kw_only=True)
class GateResult:
    ok: bool
    reason: str
    probe_output: str
    containers: tuple[Container, ...]
    waited_s: float


async def wait_healthy(transport: SshTransport, stack: str, services: tuple[str, ...],
                       checks: list[HealthCheck], timeout_s: float, require_containers: bool = True) -> GateResult:
    """Poll until healthy, a final failure (exited/unhealthy), or the deadline."""
    started = time.monotonic()
    deadline = started + timeout_s
    reason, output, containers = "not checked yet", "", ()
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        result = await transport.run(wait_settled(stack, len(services), remaining), quiet=True,
                                     timeout=remaining + 30)
        containers = parse_containers(result.stdout)
        judged = judge_project(services, containers, require_containers)
        reason = transport.masker.mask(judged.reason)
        output = transport.masker.mask("\n".join(f"{c.name}: {c.health_output}" for c in containers
                                                  if c.health_output))
        if judged.ok:
            outcomes = [await probe(transport, check) for check in checks]
            output = transport.masker.mask("\n".join(o.output for o in outcomes))
            if all(o.ok for o in outcomes):
                return GateResult(ok=True, reason="healthy", probe_output=output, containers=containers,
                                  waited_s=time.monotonic() - started)
            reason = transport.masker.mask("health check failed: " + "; ".join(o.output for o in outcomes if not o.ok))
        elif judged.final:
            return GateResult(ok=False, reason=reason, probe_output=output, containers=containers,
                              waited_s=time.monotonic() - started)
        if time.monotonic() + POLL_INTERVAL_S > deadline:
            return GateResult(ok=False, reason=f"not healthy within {timeout_s:g}s: {reason}", probe_output=output,
                              containers=containers, waited_s=time.monotonic() - started)
        await asyncio.sleep(POLL_INTERVAL_S)


async def container_logs(transport: SshTransport, stack: str, tail: int = 50) -> str:
    """Last lines of every container's log, for the failure report; masked, never raw."""
    try:
        result = await transport.run(compose_logs(stack, tail), check=False, timeout=30)
    except Exception as exc:
        return transport.masker.mask(f"(could not read logs: {exc})")
    # masked before it is cut: a cut through a secret would leave a part that no longer matches
    return transport.masker.mask((result.stdout + result.stderr).strip())[-8000:]
