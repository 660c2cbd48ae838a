"""A run's Prometheus metrics: recorded as the run goes, pushed to a Pushgateway at the start,
at each phase's end and at the run's end (grouping key: job and environment).

The recorder is the run's context (``recording``): engine code calls ``record_*`` and those are
no-ops outside a run. A push never fails or stalls a deploy: it runs in a thread under the
target's short time limit, a failure is logged once, and after one failure the run pushes only
its final state. The series are listed in ``metric_totals.SERIES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar

from model.inventory import Inventory
from tasks.engine.metric_totals import Samples, totals_path, updating_totals
from tasks.engine.report import StackResult
from tasks.integrations.pushgateway import PushFailed, PushTarget, push, target_from_env

log = logging.getLogger("homelab.metrics")

RESULTS = ("success", "failed", "rolled-back", "not-approved", "aborted")


class RunMetrics:
    def __init__(self, environment: str, trigger: str, target: PushTarget | None):
        self.environment = environment
        self.trigger = trigger
        self.target = target
        self.pending = Samples()  # observed since the last merge into the totals
        self.gateway_failed = False
        self.pushes = 0
        self.result: str | None = None

    @property
    def grouping_key(self) -> dict[str, str]:
        return {"environment": self.environment}

    async def push(self, *, final: bool = False) -> None:
        """Merge what is pending into the saved totals and push them; never raises."""
        skip = self.target is None or (self.gateway_failed and not final)
        try:
            await asyncio.to_thread(self._merge_and_push, skip)
        except Exception as exc:  # never fail the run for its metrics
            log.warning("metrics not saved: %s", exc)

    def _merge_and_push(self, skip_push: bool) -> None:
        with updating_totals(totals_path(self.environment)) as totals:
            totals.add(self.pending)
            self.pending = Samples()
            if skip_push or self.target is None:
                return
            try:
                push(self.target, totals.registry(), self.grouping_key)
                self.pushes += 1
            except PushFailed as exc:
                if not self.gateway_failed:
                    log.warning("metrics not pushed (the run goes on; later pushes of this run are skipped "
                                "until its end): %s", exc)
                self.gateway_failed = True

    def finished(self, result: str) -> None:
        """The run's outcome (once: the first one stands)."""
        if self.result is not None:
            return
        self.result = result
        now = time.time()
        self.pending.inc("homelab_deploys_total", trigger=self.trigger, result=result)
        self.pending.set("homelab_deploy_in_progress", 0)
        self.pending.set("homelab_last_deploy_success", 1 if result == "success" else 0)
        self.pending.set("homelab_last_deploy_timestamp_seconds", now)
        if result == "success":
            self.pending.set("homelab_last_success_timestamp_seconds", now)


_CURRENT: ContextVar[RunMetrics | None] = ContextVar("homelab_run_metrics", default=None)


def current() -> RunMetrics | None:
    return _CURRENT.get()


def push_target(inventory: Inventory, block_target: PushTarget | None = None) -> PushTarget | None:
    """HOMELAB_PUSHGATEWAY_URL, else the inventory's ``metrics.pushgateway_url``, else its block's."""
    section = inventory.metrics
    from_env = target_from_env(job=section.job, timeout_s=section.timeout_s)
    if from_env:
        return from_env
    if section.pushgateway_url:
        return PushTarget(url=section.pushgateway_url, job=section.job, timeout_s=section.timeout_s)
    return block_target


async def load_block_target(inventory: Inventory) -> PushTarget | None:
    """The inventory's Pushgateway block, if it names one and nothing overrides it; a block that
    cannot be loaded is logged, never raised."""
    section = inventory.metrics
    if not section.block or target_from_env() or section.pushgateway_url:
        return None
    from blocks.metrics import PushgatewayTarget

    try:
        block = await PushgatewayTarget.aload(section.block)
    except Exception as exc:
        log.warning("metrics block %r cannot be loaded (%s); this run pushes no metrics", section.block,
                    type(exc).__name__)
        return None
    return block.target(section.job)


@contextlib.asynccontextmanager
async def recording(inventory: Inventory, *, environment: str, trigger: str) -> AsyncIterator[RunMetrics]:
    """The run's metrics: in progress at the start, pushed at the end. A run that leaves without
    ``finished`` (an exception) counts as ``failed``."""
    target = push_target(inventory, await load_block_target(inventory))
    run = RunMetrics(environment, trigger, target)
    token = _CURRENT.set(run)
    run.pending.set("homelab_deploy_in_progress", 1)
    await run.push()
    try:
        yield run
    except BaseException:
        run.finished("failed")
        raise
    finally:
        if run.result is None:  # left without an outcome: still leave no stuck in-progress gauge
            run.pending.set("homelab_deploy_in_progress", 0)
        await run.push(final=True)
        _CURRENT.reset(token)


# What the engine records: no-ops outside a run.

def record_health(host: str, stack: str, seconds: float, ok: bool) -> None:
    if run := current():
        run.pending.observe("homelab_health_check_seconds", seconds, host=host, stack=stack)
        if not ok:
            run.pending.inc("homelab_health_check_failures_total", host=host, stack=stack)


def record_lock_wait(hosts: Iterable[str], seconds: float) -> None:
    if run := current():
        for host in hosts:
            run.pending.observe("homelab_lock_wait_seconds", seconds, host=host)


def record_notification_failure(channel: str) -> None:
    if run := current():
        run.pending.inc("homelab_notification_failures_total", channel=channel)


def record_agent_hook(hook: str, decision: str, outcome: str, seconds: float) -> None:
    if run := current():
        run.pending.inc("homelab_agent_hook_calls_total", hook=hook, decision=decision, outcome=outcome)
        run.pending.observe("homelab_agent_hook_seconds", seconds, hook=hook)


def record_host_phase(host: str, phase: str, seconds: float) -> None:
    if run := current():
        run.pending.observe("homelab_deploy_duration_seconds", seconds, host=host, phase=phase)


def record_stack(r: StackResult, undone_because: str | None) -> None:
    """A stack's time and outcome (if it was changed), and why it was undone (if it was)."""
    run = current()
    if run is None or r.result in ("unchanged", "not-run", "kept"):
        return
    run.pending.inc("homelab_stack_changes_total", action=r.action, result=r.result)
    if r.duration_s:
        run.pending.observe("homelab_stack_deploy_seconds", r.duration_s, host=r.host, stack=r.stack,
                            action=r.action)
    if undone_because:
        run.pending.inc("homelab_rollbacks_total", reason=undone_because)


async def push_manual_rollbacks(inventory: Inventory, count: int, environment: str = "production") -> None:
    """A rollback run is no deploy: it only adds to ``homelab_rollbacks_total{reason="manual"}``."""
    if count:
        run = RunMetrics(environment, "manual", push_target(inventory, await load_block_target(inventory)))
        run.pending.inc("homelab_rollbacks_total", by=count, reason="manual")
        await run.push(final=True)


async def push_now() -> None:
    """A phase ended: push what the run has so far."""
    if run := current():
        await run.push()
