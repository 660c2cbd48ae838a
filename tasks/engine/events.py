"""Prefect events a run emits, for the J-Jeco agents and Prefect automations to follow.

``homelab.deploy.started`` / ``.completed`` (resource: the environment), ``.phase.completed``
(resource: the phase), ``.stack.failed`` and ``.rolled_back`` (resource: the host's stack), and
``homelab.approval.requested``. Every event names the flow run (and the deployment, for a
deployment's run) as related resources; payloads carry the result, durations and the commit.
The schema is in the README ("Events"). Emitting never fails a run: Prefect's events worker
sends them in the background, and an error here is only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from model.masking import MASKER
from tasks.engine.report import StackResult

log = logging.getLogger("homelab.events")

PREFIX = "homelab"


def stack_resource(host: str, stack: str, phase: str, environment: str,
                   restore: str | None = None) -> dict[str, str]:
    resource = {"prefect.resource.id": f"homelab.stack.{host}.{stack}", "prefect.resource.name": f"{stack}@{host}",
                "homelab.host": host, "homelab.stack": stack, "homelab.phase": phase,
                "homelab.environment": environment}
    if restore:  # the release to go back to; the shipped automation only acts when there is one
        resource["homelab.restore-release"] = restore
    return resource


def environment_resource(environment: str, inventory: str) -> dict[str, str]:
    return {"prefect.resource.id": f"homelab.environment.{environment}", "prefect.resource.name": environment,
            "homelab.environment": environment, "homelab.inventory": inventory}


def phase_resource(phase: str, environment: str, hosts: Iterable[str]) -> dict[str, str]:
    return {"prefect.resource.id": f"homelab.phase.{phase}", "prefect.resource.name": phase,
            "homelab.phase": phase, "homelab.environment": environment, "homelab.hosts": ",".join(sorted(hosts))}


def related(flow_run_id: str | None, deployment_id: str | None, flow_run_name: str | None = None) -> list[dict]:
    out = []
    if flow_run_id:
        out.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run",
                    **({"prefect.resource.name": flow_run_name} if flow_run_name else {})})
    if deployment_id:
        out.append({"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                    "prefect.resource.role": "deployment"})
    return out


def stack_payload(result: StackResult, *, commit: str | None, environment: str) -> dict:
    return {"result": result.result, "action": result.action, "duration_s": round(result.duration_s, 3),
            "commit": commit, "environment": environment, "release": result.release,
            "error": MASKER.mask(result.error) if result.error else None,
            "rollback": MASKER.mask(result.rollback) if result.rollback else None}


class RunEvents:
    """The events of one run, with what every event shares (environment, commit, related runs)."""

    def __init__(self, *, environment: str, inventory: str, commit: str | None, trigger: str,
                 flow_run_id: str | None, deployment_id: str | None, flow_run_name: str | None = None):
        self.environment = environment
        self.inventory = inventory
        self.commit = commit
        self.trigger = trigger
        self.related = related(flow_run_id, deployment_id, flow_run_name)

    def emit(self, event: str, resource: dict[str, str], payload: dict) -> None:
        try:
            from prefect.events import emit_event

            emit_event(event=f"{PREFIX}.{event}", resource=resource, related=self.related,
                       payload=MASKER.mask_json({"environment": self.environment, "commit": self.commit,
                                        "trigger": self.trigger, **payload}))
        except Exception as exc:  # an event is never worth a failed deploy
            log.warning("event %s not emitted: %s", event, type(exc).__name__)

    def started(self, source: str) -> None:
        self.emit("deploy.started", environment_resource(self.environment, self.inventory), {"source": source})

    def phase_completed(self, phase: str, results: list[StackResult], seconds: float) -> None:
        failed = [r for r in results if r.result == "failed"]
        self.emit("deploy.phase.completed", phase_resource(phase, self.environment, {r.host for r in results}),
                  {"result": "failed" if failed else "success", "duration_s": round(seconds, 3),
                   "stacks": [{"host": r.host, "stack": r.stack, "action": r.action, "result": r.result,
                               "duration_s": round(r.duration_s, 3)} for r in results]})

    def stack_failed(self, result: StackResult, restore: str | None) -> None:
        resource = stack_resource(result.host, result.stack, result.phase, self.environment, restore)
        self.emit("deploy.stack.failed", resource,
                  stack_payload(result, commit=self.commit, environment=self.environment)
                  | {"restore_release": restore})

    def rolled_back(self, result: StackResult, reason: str) -> None:
        self.emit("deploy.rolled_back", stack_resource(result.host, result.stack, result.phase, self.environment),
                  stack_payload(result, commit=self.commit, environment=self.environment) | {"reason": reason})

    def completed(self, result: str, wall_s: float, stacks: list[StackResult], reason: str | None = None) -> None:
        counts: dict[str, int] = {}
        for s in stacks:
            counts[s.result] = counts.get(s.result, 0) + 1
        changed = [{"host": s.host, "stack": s.stack, "action": s.action, "result": s.result, "release": s.release}
                   for s in stacks if s.result not in ("unchanged", "not-run")]
        self.emit("deploy.completed", environment_resource(self.environment, self.inventory),
                  {"result": result, "duration_s": round(wall_s, 3), "counts": counts, "changed": changed,
                   **({"reason": MASKER.mask(reason)} if reason else {})})

    def approval_requested(self, summary: str, link: str | None, approve_command: str, timeout_s: float) -> None:
        resource = environment_resource(self.environment, self.inventory)
        self.emit("approval.requested", resource, {"summary": summary, "ui_url": link,
                                                   "approve_command": approve_command, "timeout_s": timeout_s})

