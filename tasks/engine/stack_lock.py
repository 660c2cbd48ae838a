"""Compose-mutating commands run under the stack's lock on its host (``guards.with_stack_lock``):
two operations on one compose project never overlap, and a retried step waits for its first
attempt instead of racing it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from model.errors import HomelabError, RemoteCommandError
from tasks.engine.transport import CommandResult, SshTransport
from tasks.host_commands.guards import STACK_BUSY, with_stack_lock
from tasks.host_commands.layout import stack_lock_file

STACK_LOCK_WAIT_S = 60


class StackBusy(HomelabError):
    """Another operation held the stack's lock on the host for the whole wait."""

    exit_code = 5

    def __init__(self, host: str, stack: str, waited_s: float, lock: str):
        self.host, self.stack = host, stack
        super().__init__(f"{host}: stack {stack} is busy: another compose operation held its lock {lock} for "
                         f"{waited_s:g}s. Wait for the run working on it to finish (`homelab status`); if there "
                         f"is none, look for a stuck `docker compose` process on {host}")


def lock_wait_s(limit_s: float) -> float:
    """The lock's wait: well inside the command's time limit, so a busy stack is reported as
    busy, not as a time-out."""
    return min(STACK_LOCK_WAIT_S, max(1.0, limit_s / 2))


async def run_locked(transport: SshTransport, state_dir: str, stack: str, argv: Sequence[str], *,
                     input: bytes | None = None, timeout: float | None = None, check: bool = True) -> CommandResult:
    """``transport.run(argv)`` holding ``stack``'s lock; ``StackBusy`` if it could not be had."""
    wait = lock_wait_s(timeout or transport.command_timeout_s)
    done = await transport.run(with_stack_lock(state_dir, stack, argv, wait), input=input, timeout=timeout,
                               check=False)
    if done.exit_status == STACK_BUSY:
        raise StackBusy(transport.name, stack, wait, stack_lock_file(state_dir, stack))
    if check and not done.ok:
        shown = transport.masker.mask(shlex.join(argv))
        raise RemoteCommandError(transport.name, shown if len(shown) <= 300 else shown[:300] + "...",
                                 done.exit_status, done.stderr or done.stdout)
    return done
