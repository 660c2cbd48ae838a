"""Running a stack's data hooks on its host, and what each one did (for the report and the
release record). A hook's output is masked before it is kept anywhere."""

from __future__ import annotations

from dataclasses import dataclass

from model.inventory import Hook
from model.masking import MASKER
from tasks.engine.host_pool import HostPool
from tasks.engine.stack_lock import run_locked
from tasks.host_commands.compose import ComposeProject
from tasks.host_commands.hooks import TIMED_OUT, hook_command

OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class HookOutcome:
    name: str  # backup | migrate | restore
    exit_status: int | None
    output: str  # masked, the last OUTPUT_TAIL characters of stdout and stderr
    timeout_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        if self.exit_status == TIMED_OUT:
            return f"{self.name} hook timed out after {self.timeout_s:g} s"
        return f"{self.name} hook failed (exit {self.exit_status})"

    def to_record(self) -> dict:
        return {"exit": self.exit_status, "output": self.output}


async def run_hook(pool: HostPool, host: str, project: ComposeProject, name: str, hook: Hook, *,
                   state_dir: str | None = None) -> HookOutcome:
    """With ``state_dir``, the hook runs holding the stack's lock (no compose operation meanwhile)."""
    argv, limit = hook_command(project, hook), hook.timeout_s + 30
    if state_dir is None:
        done = await pool[host].run(argv, check=False, timeout=limit)
    else:
        done = await run_locked(pool[host], state_dir, project.name, argv, check=False, timeout=limit)
    output = MASKER.mask(done.stdout + done.stderr)[-OUTPUT_TAIL:]  # masked, then cut: no part of a secret left
    return HookOutcome(name, done.exit_status, output, hook.timeout_s)
