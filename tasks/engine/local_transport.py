"""Commands run on this machine: the transport of a host's own worker (``flows/host_steps.py``).

The same steps as over SSH, behind the same guards (``transport.run_guarded``): the host-side
time limit, masked logging, the exit check. Only the pipe differs: a local ``sh -c``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from model.masking import MASKER, SecretMasker
from tasks.engine.busy_clock import BusyClock
from tasks.engine.transport import CommandResult, run_guarded
from tasks.host_commands.release_files import upload_file

DEFAULT_TIMEOUT_S = 300


class LocalTransport:
    """The host this process runs on, under the name the inventory gives it."""

    connected = True

    def __init__(self, name: str, masker: SecretMasker = MASKER, busy: BusyClock | None = None,
                 command_timeout_s: float = DEFAULT_TIMEOUT_S):
        self.name = name
        self.masker = masker
        self.busy = busy or BusyClock()
        self.command_timeout_s = command_timeout_s

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None,
                  check: bool = True, quiet: bool = False) -> CommandResult:
        return await run_guarded(self, argv, input=input, timeout=timeout or self.command_timeout_s, check=check,
                                 quiet=quiet)

    async def execute(self, command: str, input: bytes | None, wait_s: float) -> tuple[int | None, str | None,
                                                                                      bytes, bytes]:
        # A login shell's view, as over SSH: from the home directory, in a session of its own
        # (so a time-out can end the whole group).
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", command, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=os.path.expanduser("~"),
            start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout=wait_s)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        code = proc.returncode
        return (code, signal.Signals(-code).name.removeprefix("SIG") if code is not None and code < 0 else None,
                out, err)

    async def upload(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        return await self.run(upload_file(path, mode, len(data)), input=data)

    async def open_tcp(self, host: str, port: int, timeout: float) -> tuple:
        """A TCP stream opened from this host, for health probes."""
        with self.busy.running():
            return await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout)

    async def close(self) -> None:
        return None
