"""The only module that touches the network: SSH to the hosts.

- Strict host-key checking against a known_hosts file; unknown or changed keys are refused.
- One connection per host per flow run (``HostPool``), reused by every step, reopened
  after a drop so a retried task gets a fresh one.
- Every remote command goes through ``SshTransport.run``, which logs it with secrets masked.
- ``HOMELAB_ALLOWED_NETWORKS`` (comma-separated CIDRs), when set, is checked before any
  packet is sent, so a misconfigured test can never reach a real host.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import os
import shlex
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from tasks.errors import (
    AddressNotAllowed,
    HostKeyRejected,
    HostUnreachable,
    RemoteCommandError,
    RemoteTimeout,
)
from tasks.masking import MASKER, SecretMasker

ALLOWED_NETWORKS_ENV = "HOMELAB_ALLOWED_NETWORKS"

# Phase label for remote-time accounting (bench: orchestration overhead).
current_phase: contextvars.ContextVar[str] = contextvars.ContextVar("homelab_phase", default="-")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    # Only look for a Prefect run context if Prefect is already loaded (keeps `plan` light).
    if "prefect" in sys.modules:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger
        try:
            return get_run_logger()
        except MissingContextError:
            pass
    return logging.getLogger("homelab.remote")


def allowed_networks(env: str | None = None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    raw = os.environ.get(ALLOWED_NETWORKS_ENV) if env is None else env
    if not raw:
        return None
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise AddressNotAllowed(f"{ALLOWED_NETWORKS_ENV} is not a list of CIDRs: {exc}") from exc


def check_allowed(host: str, address: str, networks: Sequence | None) -> None:
    if networks is None:
        return
    ip = ipaddress.ip_address(address)
    if not any(ip in net for net in networks):
        shown = ", ".join(str(n) for n in networks)
        raise AddressNotAllowed(f"{host}: address {address} is outside {ALLOWED_NETWORKS_ENV} ({shown}); "
                                "refusing to connect")


async def resolve_allowed(host: str, address: str) -> str:
    """The IP to connect to; raises before any connection if it is not allowed."""
    networks = allowed_networks()
    try:
        ipaddress.ip_address(address)
        candidates = [address]
    except ValueError:
        if networks is None:
            return address
        infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=socket.SOCK_STREAM)
        candidates = list(dict.fromkeys(info[4][0] for info in infos))
    for candidate in candidates:
        check_allowed(host, candidate, networks)
    return candidates[0]


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str  # masked
    exit_status: int | None
    stdout: str  # raw: may hold secret values; never log it as is
    stderr: str  # raw
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class SshTarget:
    name: str
    address: str
    port: int
    user: str
    known_hosts: Path
    identity: Path
    connect_timeout_s: float = 10
    command_timeout_s: float = 300


class SshTransport:
    """One SSH connection to one host. Not thread-safe; lives on one event loop."""

    def __init__(self, target: SshTarget, masker: SecretMasker = MASKER, busy: BusyClock | None = None):
        self.target = target
        self.masker = masker
        self.busy = busy or BusyClock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t = self.target
        address = await resolve_allowed(t.name, t.address)
        if not t.known_hosts.is_file():
            raise HostKeyRejected(t.name, f"known_hosts file {t.known_hosts} does not exist; "
                                          "pin the host keys there first")
        try:
            return await asyncssh.connect(
                address, t.port, username=t.user, known_hosts=str(t.known_hosts),
                client_keys=[str(t.identity)], agent_path=None, config=None,
                connect_timeout=t.connect_timeout_s, keepalive_interval=15, keepalive_count_max=3,
                preferred_auth="publickey",
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRejected(t.name, f"host key for {address}:{t.port} is unknown or changed "
                                          f"({exc.reason}); refusing to connect. If the host was "
                                          f"reinstalled, verify its key and update {t.known_hosts}") from None
        except asyncssh.PermissionDenied:
            raise HostUnreachable(t.name, f"SSH login as {t.user} with {t.identity} was denied") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError | TimeoutError):
                reason = f"connection timed out after {t.connect_timeout_s:g}s"
            raise HostUnreachable(t.name, f"cannot connect to {address}:{t.port}: {reason}") from None

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None,
                  check: bool = True, quiet: bool = False) -> CommandResult:
        """Run ``argv`` on the host. The single choke point for remote commands."""
        command = shlex.join(argv)
        shown = self.masker.mask(command)
        limit = timeout or self.target.command_timeout_s
        conn = await self.connection()
        started = time.monotonic()
        try:
            with self.busy.running():
                done = await asyncio.wait_for(
                    conn.run(command, input=input, encoding=None, check=False), timeout=limit)
        except TimeoutError:
            raise RemoteTimeout(self.name, _short(shown), limit) from None
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
            raise HostUnreachable(self.name, f"connection lost during `{_short(shown)}`: {exc}") from None
        # stdout/stderr stay raw for the parsers; every error and report masks what it shows
        result = CommandResult(self.name, shown, done.exit_status, _text(done.stdout), _text(done.stderr),
                               time.monotonic() - started)
        if not quiet:
            _logger().info("%s$ %s  [exit %s, %.2fs]", self.name, _short(shown), result.exit_status,
                           result.duration_s)
        if check and not result.ok:
            raise RemoteCommandError(self.name, _short(shown), result.exit_status, result.stderr or result.stdout)
        return result

    async def upload(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        """Atomic write: temp file in the target directory, then rename."""
        from tasks.compose import upload_file

        return await self.run(upload_file(path, mode), input=data)

    async def open_tcp(self, host: str, port: int, timeout: float) -> tuple:
        """A TCP stream opened *from the host* (direct-tcpip), for health probes."""
        conn = await self.connection()
        with self.busy.running():
            return await asyncio.wait_for(conn.open_connection(host, port), timeout=timeout)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(self._conn.wait_closed(), timeout=2)
            self._conn = None


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _short(command: str, limit: int = 300) -> str:
    """Long inline scripts are logged by their name (the $0 argument), not in full."""
    if command.startswith("sh -c ") and len(command) > limit:
        parts = shlex.split(command)
        return f"sh -c <{parts[3] if len(parts) > 3 else 'script'}> {shlex.join(parts[4:])}"[:limit]
    return command if len(command) <= limit else command[:limit] + "..."


class BusyClock:
    """Wall time during which at least one remote command ran, per phase label.

    Parallel commands on one host overlap, so summing their durations would overstate the
    remote critical path; the union of busy intervals does not.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._active = 0
        self._since = 0.0

    def running(self) -> _Busy:
        return _Busy(self)


class _Busy:
    def __init__(self, clock: BusyClock):
        self.clock = clock
        self.phase = current_phase.get()

    def __enter__(self) -> None:
        if self.clock._active == 0:
            self.clock._since = time.monotonic()
        self.clock._active += 1

    def __exit__(self, *exc: object) -> None:
        self.clock._active -= 1
        if self.clock._active == 0:
            self.clock.seconds[self.phase] += time.monotonic() - self.clock._since


# Connections opened ahead of a flow run (see ``prewarm``), waiting to be adopted by its pool.
_PREWARMED: dict[SshTarget, SshTransport] = {}


async def prewarm(targets: Iterable[SshTarget]) -> None:
    """Open connections before the flow starts (e.g. while Prefect is still importing), so the
    handshakes overlap with work that does not need the network. Failures are left for the
    flow's own pre-flight to report."""
    transports = [SshTransport(t) for t in targets]
    outcomes = await asyncio.gather(*(t.connection() for t in transports), return_exceptions=True)
    for transport, outcome in zip(transports, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            _PREWARMED[transport.target] = transport


class HostPool:
    """The connections of one flow run, opened on first use and closed together."""

    def __init__(self, targets: Iterable[SshTarget], masker: SecretMasker = MASKER):
        self.transports = {t.name: _PREWARMED.pop(t, None) or SshTransport(t, masker) for t in targets}

    def __getitem__(self, name: str) -> SshTransport:
        return self.transports[name]

    def remote_seconds(self) -> dict[str, dict[str, float]]:
        """phase -> host -> busy seconds."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for name, transport in self.transports.items():
            for phase, seconds in transport.busy.seconds.items():
                out[phase][name] = round(seconds, 4)
        return dict(out)

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.transports.values()))

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def is_transient(exc: BaseException | None) -> bool:
    """Worth a retry: the connection dropped or could not be made. Never a refused host key,
    a disallowed address, a failed command or a failed health gate."""
    return isinstance(exc, HostUnreachable) and not isinstance(exc, HostKeyRejected)
