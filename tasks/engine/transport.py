"""The only code that touches the network to run commands: SSH to the hosts.

- Strict host-key checking against a known_hosts file; unknown or changed keys are refused.
- Every remote command goes through ``SshTransport.run``, which logs it with secrets masked.
- Every address is checked against ``HOMELAB_ALLOWED_NETWORKS`` first (``netpolicy.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from model.errors import HostKeyRejected, HostUnreachable, RemoteCommandError, RemoteTimeout
from model.masking import MASKER, SecretMasker
from tasks.engine.busy_clock import BusyClock
from tasks.engine.netpolicy import resolve_allowed
from tasks.host_commands.guards import KILL_GRACE_S, timed_out, with_timeout
from tasks.host_commands.release_files import upload_file


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


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class SshTarget:
    name: str
    address: str
    port: int
    user: str
    known_hosts: Path
    identity: Path
    connect_timeout_s: float = 10
    command_timeout_s: float = 300


LOCAL_MARGIN_S = 5  # the local wait's slack beyond the host's limit and kill grace


class SshTransport:
    """One SSH connection to one host. Not thread-safe; lives on one event loop."""

    def __init__(self, target: SshTarget, masker: SecretMasker = MASKER, busy: BusyClock | None = None):
        self.target = target
        self.masker = masker
        self.busy = busy or BusyClock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        # Shared by the transports of one pool: at most so many SSH handshakes at once.
        self.handshakes: asyncio.Semaphore | None = None

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def command_timeout_s(self) -> float:
        return self.target.command_timeout_s

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
            async with self.handshakes or contextlib.nullcontext():
                return await self._handshake(address)
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

    async def _handshake(self, address: str) -> asyncssh.SSHClientConnection:
        t = self.target
        return await asyncssh.connect(
            address, t.port, username=t.user, known_hosts=str(t.known_hosts),
            client_keys=[str(t.identity)], agent_path=None, config=None,
            connect_timeout=t.connect_timeout_s, keepalive_interval=15, keepalive_count_max=3,
            preferred_auth="publickey",
            # no X.509 host certificates: a CA bundle found on disk (~/.ssh/ca-bundle.crt) must not
            # widen trust beyond the keys pinned in known_hosts
            x509_trusted_certs=None,
        )

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None,
                  check: bool = True, quiet: bool = False) -> CommandResult:
        """Run ``argv`` on the host. The single choke point for remote commands."""
        return await run_guarded(self, argv, input=input, timeout=timeout or self.target.command_timeout_s,
                                 check=check, quiet=quiet)

    async def execute(self, command: str, input: bytes | None, wait_s: float) -> tuple[int | None, str | None,
                                                                                      bytes, bytes]:
        """One shell command line on the host: (exit status, signal, stdout, stderr)."""
        conn = await self.connection()
        try:
            done = await asyncio.wait_for(conn.run(command, input=input, encoding=None, check=False), timeout=wait_s)
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
            raise HostUnreachable(self.name, f"connection lost during `{_short(self.masker.mask(command))}`: "
                                             f"{exc}") from None
        return done.exit_status, done.exit_signal[0] if done.exit_signal else None, done.stdout, done.stderr

    async def upload(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        """Atomic write: temp file in the target directory, then rename."""
        return await self.run(upload_file(path, mode, len(data)), input=data)

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


async def run_guarded(transport, argv: Sequence[str], *, input: bytes | None, timeout: float, check: bool,
                      quiet: bool) -> CommandResult:
    """The shared discipline of every transport: the host ends the command at the limit (see
    guards.py) and the local wait is longer, so that the host's side ends first and its exit is
    seen; the command is logged masked; stdout/stderr stay raw for the parsers."""
    shown = transport.masker.mask(shlex.join(argv))
    command = shlex.join(with_timeout(argv, timeout))
    started = time.monotonic()
    try:
        with transport.busy.running():
            status, signal, out, err = await transport.execute(command, input, timeout + KILL_GRACE_S + LOCAL_MARGIN_S)
    except TimeoutError:
        raise RemoteTimeout(transport.name, _short(shown), timeout) from None
    result = CommandResult(host=transport.name, command=shown, exit_status=status, stdout=_text(out),
                           stderr=_text(err), duration_s=time.monotonic() - started)
    if timed_out(status, signal, result.duration_s, timeout):
        raise RemoteTimeout(transport.name, _short(shown), timeout)
    if not quiet:
        _logger().info("%s$ %s  [exit %s, %.2fs]", transport.name, _short(shown), result.exit_status,
                       result.duration_s)
    if check and not result.ok:
        raise RemoteCommandError(transport.name, _short(shown), result.exit_status, result.stderr or result.stdout)
    return result


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


def is_transient(exc: BaseException | None) -> bool:
    """Worth a retry: the connection dropped or could not be made. Never a refused host key,
    a disallowed address, a failed command or a failed health gate."""
    return isinstance(exc, HostUnreachable) and not isinstance(exc, HostKeyRejected)
