"""An ``exec`` smoke test as one command: compose ``exec`` in the running service, under
``timeout`` (exit 124, as for hooks)."""

from __future__ import annotations

from model.smoke import SmokeCheck
from tasks.host_commands.compose import ComposeProject
from tasks.host_commands.hooks import TIMED_OUT

__all__ = ["TIMED_OUT", "exec_limit_s", "smoke_exec_command"]


def smoke_exec_command(project: ComposeProject, check: SmokeCheck) -> list[str]:
    if check.exec is None or check.service is None:
        raise ValueError(f"not an exec smoke test: {check.describe()}")
    inner = project.argv("exec", "-T", check.service, "sh", "-c", check.exec)
    return ["timeout", str(exec_limit_s(check)), *inner]


def exec_limit_s(check: SmokeCheck) -> int:
    """The whole seconds ``timeout`` gives an exec smoke test (at least 1)."""
    return max(1, round(check.timeout_s))
