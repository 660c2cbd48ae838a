"""Running a stack's data hooks on its host, and what each one did (for the report and the
release record). A hook's output is masked before it is kept anywhere."""

from __future__ import annotations

from dataclasses import dataclass

from model.inventory import Hook
from model.masking import MASKER
from tasks.engine.host_pool import HostPool
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


async def run_hook(pool: HostPool, host: str, project: ComposeProject, name: str, hook: Hook) -> HookOutcome:
    done = await pool[host].run(hook_command(project, hook), check=False, timeout=hook.timeout_s + 30)
    output = MASKER.mask((done.stdout + done.stderr)[-OUTPUT_TAIL:])
    return HookOutcome(name, done.exit_status, output, hook.timeout_s)
