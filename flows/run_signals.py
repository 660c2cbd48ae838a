"""What a deploy run tells the world outside Prefect's own state: Prometheus metrics (pushed at
the start, after each phase and at the end), Prefect events for the agents, and its outcome in
one of the words every signal shares: success, failed, rolled-back, not-approved, aborted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from prefect import get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.states import State

from flows.reporting import publish_run_summary, run_summary
from model.desired import DesiredState
from model.errors import DeployFailed, HomelabError
from tasks.engine import metrics
from tasks.engine.events import RunEvents
from tasks.engine.report import DeployReport, StackResult

NOT_APPROVED = "not-approved"


def run_events(desired: DesiredState, environment: str, trigger: str) -> RunEvents:
    return RunEvents(environment=environment, inventory=desired.inventory.name, commit=desired.commit,
                     trigger=trigger, flow_run_id=str(flow_run.get_id()), deployment_id=deployment.get_id(),
                     flow_run_name=flow_run.get_name())


def outcome_of(value: dict | State) -> tuple[str, dict]:
    """The outcome of a run that returned, and its result: a report's, or the not-approved one."""
    if isinstance(value, State):
        data = value.data if isinstance(value.data, dict) else {}
        return NOT_APPROVED, data
    return str(value.get("result", "success")), value


def failure_of(exc: BaseException) -> tuple[str, DeployReport | None, str]:
    """The outcome of a run that raised, its report (if it got that far), and why (one line, masked)."""
    if isinstance(exc, DeployFailed) and isinstance(exc.report, DeployReport):
        undone = any(s.result == "rolled-back" for s in exc.report.stacks)
        return ("rolled-back" if undone else "failed"), exc.report, exc.report.summary()
    if isinstance(exc, HomelabError):  # pre-flight, a held lock, Vault: stopped before any change
        return "aborted", None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "failed", None, type(exc).__name__


class RunSignals:
    def __init__(self, events: RunEvents, recorder: metrics.RunMetrics, desired: DesiredState):
        self.events = events
        self.environment = events.environment
        self.trigger = events.trigger
        self.brief = {"commit": desired.commit, "source": desired.source}  # for a run that ends without a report
        self.recorder = recorder
        self.started = time.monotonic()
        self.stacks: Sequence[StackResult] = ()  # the production (or staging-only) report's stacks

    async def finish(self, result: str, report_json: dict, reason: str | None = None) -> None:
        """The outcome, in every signal; a signal that cannot be sent is logged, never raised."""
        wall_s = time.monotonic() - self.started
        self.recorder.finished(result)
        self.events.completed(result, wall_s, list(self.stacks), reason)
        try:
            await publish_run_summary(run_summary({**report_json, "result": result}, environment=self.environment,
                                                  trigger=self.trigger, duration_s=wall_s, reason=reason))
        except Exception as exc:
            get_run_logger().warning("run summary not published (homelab history shows less): %s",
                                     type(exc).__name__)


@contextlib.asynccontextmanager
async def signalling(desired: DesiredState, *, environment: str, trigger: str) -> AsyncIterator[RunSignals]:
    """Metrics and events around a run: started, then completed with the run's outcome."""
    async with metrics.recording(desired.inventory, environment=environment, trigger=trigger) as recorder:
        signals = RunSignals(run_events(desired, environment, trigger), recorder, desired)
        signals.events.started(desired.source)
        try:
            yield signals
        except Exception as exc:
            result, report, reason = failure_of(exc)
            signals.stacks = report.stacks if report else signals.stacks
            await signals.finish(result, report.to_json() if report else signals.brief, reason)
            raise
