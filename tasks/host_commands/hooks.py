"""A stack's data hooks (backup, migrate, restore) as one command each: compose ``exec`` in
the running service, or ``run`` in a one-off container, under ``timeout`` (exit 124)."""

from __future__ import annotations

from model.inventory import Hook
from tasks.host_commands.compose import ComposeProject

TIMED_OUT = 124  # timeout(1)


def hook_command(project: ComposeProject, hook: Hook) -> list[str]:
    if hook.mode == "exec":
        inner = project.argv("exec", "-T", hook.service, "sh", "-c", hook.run)
    else:
        inner = project.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", hook.service, "-c", hook.run)
    return ["timeout", str(max(1, round(hook.timeout_s))), *inner]
