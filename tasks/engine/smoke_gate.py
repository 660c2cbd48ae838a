"""Staging's last step: every staging copy's smoke tests, from the staging host, once all of
them are healthy. Used as the staging rollout's ``verify``: a failed test fails its stack and
undoes the staging run."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.desired import DesiredState
from model.inventory import Inventory
from model.staging import smoke_checks
from tasks.engine.host_pool import HostPool
from tasks.engine.report import StackResult
from tasks.engine.smoke import SmokeResult
from tasks.engine.stack_deploy import new_record
from tasks.engine.step_set import PLAIN_STEPS, Steps
from tasks.host_commands.compose import release_project


@dataclass
class SmokeGate:
    staging: DesiredState
    production: Inventory  # where the smoke tests are declared (each stack's ``staging.smoke``)
    results: list[SmokeResult] = field(default_factory=list)

    async def __call__(self, pool: HostPool, stacks: list[StackResult],
                       steps: Steps = PLAIN_STEPS) -> dict[tuple[str, str], str]:
        failures: dict[tuple[str, str], str] = {}
        for result in stacks:
            checks = smoke_checks(self.production, result.stack)
            if not checks or not result.release or result.result not in ("healthy", "unchanged"):
                continue
            stack = self.staging.stacks[result.stack]
            record = new_record(self.staging, None, stack, result.host, result.release)
            project = release_project(self.staging.inventory.state_dir(result.host), record)
            done = await steps.smoke(pool, result.host, project, result.stack, checks)
            self.results += done
            failed = [r for r in done if not r.ok]
            if failed:
                failures[(result.host, result.stack)] = "smoke test(s) failed: " + "; ".join(
                    f"{r.check}: {r.detail}" for r in failed)
        return failures
