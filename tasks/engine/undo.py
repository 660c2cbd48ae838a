"""Undoing a stack's deploy: back to the exact previous release, or down if it had none.

``StackUndo.run`` is staged as the ``on_rollback`` hook of the stack's transaction (see
``held_transaction.py``) once compose-up has been attempted. It never raises (Prefect would stop
unwinding the other steps); it writes what happened into the run's ``RollbackJournal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.errors import HomelabError
from model.inventory import HealthCheck, Hook
from model.releases import ReleaseRecord
from tasks.engine.health import wait_healthy
from tasks.engine.hooks import run_hook
from tasks.engine.host_pool import HostPool
from tasks.engine.release_payload import dropped_from, to_recreate
from tasks.engine.stack_lock import run_locked
from tasks.engine.transport import CommandResult
from tasks.host_commands.compose import compose_down, compose_recreate, release_project
from tasks.host_commands.release_files import restore_release, settle_rollback


@dataclass
class RollbackJournal:
    """(host, stack) -> what the undo did, for the run report."""

    entries: dict[tuple[str, str], str] = field(default_factory=dict)
    failed: set[tuple[str, str]] = field(default_factory=set)

    def note(self, host: str, stack: str, text: str, ok: bool = True) -> None:
        self.entries[(host, stack)] = text
        if not ok:
            self.failed.add((host, stack))


@dataclass(frozen=True, kw_only=True)
class StackUndo:
    """How to put one stack on one host back; ``run`` does it."""

    pool: HostPool
    journal: RollbackJournal
    host: str
    state_dir: str
    stack: str
    release: str  # the release being undone
    previous: ReleaseRecord | None  # the release to go back to
    undone_files: dict[str, str] = field(default_factory=dict)  # manifest of the release being undone
    services: tuple[str, ...] = ()  # of the previous release
    checks: list[HealthCheck] = field(default_factory=list)
    health_timeout_s: float = 60
    restore_hook: Hook | None = None  # set when a migrate ran: the data goes back too

    async def run(self) -> None:
        try:
            text = await (self._restore() if self.previous else self._remove())
            self.journal.note(self.host, self.stack, text)
        except Exception as exc:
            self.journal.note(self.host, self.stack, f"rollback FAILED: {exc}", ok=False)

    async def _locked(self, argv: list[str], check: bool = True) -> CommandResult:
        return await run_locked(self.pool[self.host], self.state_dir, self.stack, argv, check=check)

    async def _restore(self) -> str:
        assert self.previous is not None
        transport = self.pool[self.host]
        previous = self.previous
        project = release_project(self.state_dir, previous)
        done = await self._locked(restore_release(self.state_dir, self.stack, previous.id, previous.images, project,
                                                  dropped_from(self.undone_files, previous.files),
                                                  previous.env_files), check=False)
        if done.exit_status == 98:
            raise HomelabError(f"an image of release {self.previous.id} is no longer on {self.host}: "
                               f"{done.stderr.strip()[-300:]}")
        if not done.ok:
            raise HomelabError(f"compose up of release {self.previous.id} failed: {done.stderr.strip()[-500:]}")
        recreate = to_recreate(self.undone_files, previous.files, previous.mounts)
        if recreate:
            await self._locked(compose_recreate(project, recreate))
        restored_data = ""
        if self.restore_hook:
            outcome = await run_hook(self.pool, self.host, project, "restore", self.restore_hook,
                                     state_dir=self.state_dir)
            if not outcome.ok:
                await self._locked(settle_rollback(self.state_dir, self.stack, previous.id, self.release))
                raise HomelabError(f"restored release {previous.id}, but its data was not: {outcome.describe()}: "
                                   f"{outcome.output.strip()[-500:]}")
            restored_data = ", data restored by the restore hook"
        gate = await wait_healthy(transport, self.stack, self.services, self.checks, self.health_timeout_s)
        await self._locked(settle_rollback(self.state_dir, self.stack, self.previous.id, self.release))
        if not gate.ok:
            raise HomelabError(f"restored release {self.previous.id}, but it is not healthy: {gate.reason}")
        return f"restored release {self.previous.id} (healthy{restored_data})"

    async def _remove(self) -> str:
        await self._locked(compose_down(self.stack))
        await self._locked(settle_rollback(self.state_dir, self.stack, None, self.release))
        return "removed (the stack had no previous release)"


async def restore(undo: StackUndo) -> None:
    """A manual rollback's step: run the undo (it records what happened in its journal)."""
    await undo.run()
