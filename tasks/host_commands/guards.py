"""Guards put around a remote command: a time limit enforced on the host, and a per-stack lock.

- ``with_timeout``: coreutils ``timeout`` ends the command on the host itself, so a command
  the orchestrator gave up on never keeps running (and never races its retry or the undo).
  Not ``--foreground``: ``timeout`` then signals its whole process group, so the children of
  an ``sh -c`` script go too. Not ``--verbose``: its message is written *before* the signal
  is sent, and once the SSH channel is gone that write kills ``timeout`` (SIGPIPE) and leaves
  the command running. So a time-out is told by its exit (124, or KILL after the grace) and
  the time it took: ``timed_out``.
- ``with_stack_lock``: ``flock`` on ``locks/<stack>.lock`` under the state dir, so two compose
  operations on one project never overlap. It waits a bounded time; exit ``STACK_BUSY`` (75)
  means the lock was not had. The command inherits the lock's descriptor, so a child that
  outlives ``flock`` still holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.host_commands.layout import stack_lock_file, stack_locks_dir
from tasks.host_commands.shell import sh

KILL_GRACE_S = 5  # after the limit, TERM; this much later, KILL
TIMED_OUT = 124  # timeout(1): the command was sent TERM
KILLED = 137  # 128 + SIGKILL, as a shell reports it
STACK_BUSY = 75  # EX_TEMPFAIL: the stack's lock was held for the whole wait


def _seconds(value: float) -> str:
    return f"{max(value, 0.1):g}"


def with_timeout(argv: Sequence[str], limit_s: float, grace_s: float = KILL_GRACE_S) -> list[str]:
    """``argv`` ended on the host after ``limit_s`` (TERM to its process group, then KILL)."""
    return ["timeout", "-k", _seconds(grace_s), _seconds(limit_s), *argv]


def timed_out(exit_status: int | None, signal: str | None, duration_s: float, limit_s: float) -> bool:
    """Whether ``with_timeout`` ended the command: exit 124 or 137, or killed by KILL (when
    ``timeout`` itself is the session's process, the KILL to the group takes it too), and not
    before the limit (a command may exit 124 by itself)."""
    ended = exit_status in (TIMED_OUT, KILLED) or signal == "KILL"
    return ended and duration_s >= limit_s


STACK_LOCK = 'locks=$1; file=$2; wait=$3; shift 3; mkdir -p -- "$locks" || exit; ' \
             f'exec flock -w "$wait" -E {STACK_BUSY} -- "$file" "$@"'


def with_stack_lock(state_dir: str, stack: str, argv: Sequence[str], wait_s: float) -> list[str]:
    """``argv`` run holding ``stack``'s lock on the host; exit ``STACK_BUSY`` after ``wait_s``
    without it."""
    return sh(STACK_LOCK, "stack-lock", stack_locks_dir(state_dir), stack_lock_file(state_dir, stack),
              _seconds(wait_s), *argv)
