"""The homelab.* events' shape (the schema the README documents for the agents) and the shipped
automation's trigger, matched by Prefect's own server-side trigger logic."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger
from prefect.server.events.schemas.events import ReceivedEvent

from deployments.automations import rollback_failed_stack
from model.masking import MASKER
from tasks.engine.events import RunEvents, stack_resource
from tasks.engine.report import StackResult


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **event: sent.append(event))
    return sent


def run_events(environment: str = "production") -> RunEvents:
    return RunEvents(environment=environment, inventory="homelab", commit="abc123", trigger="webhook",
                     flow_run_id="run-1", deployment_id="dep-1", flow_run_name="brave-fox")


def failed(error: str = "health gate failed: web unhealthy") -> StackResult:
    return StackResult(phase="apps", host="rtx1080", stack="media", action="update", result="failed",
                       duration_s=12.34567, release="r2", error=error, from_release="r1")


def test_a_failed_stack_names_its_host_stack_release_to_restore_and_the_run(emitted: list[dict]) -> None:
    run_events().stack_failed(failed(), restore="r1")
    [event] = emitted
    assert event["event"] == "homelab.deploy.stack.failed"
    assert event["resource"] == {
        "prefect.resource.id": "homelab.stack.rtx1080.media", "prefect.resource.name": "media@rtx1080",
        "homelab.host": "rtx1080", "homelab.stack": "media", "homelab.phase": "apps",
        "homelab.environment": "production", "homelab.restore-release": "r1"}
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]} == {
        "flow-run": "prefect.flow-run.run-1", "deployment": "prefect.deployment.dep-1"}
    payload = event["payload"]
    assert payload["result"] == "failed" and payload["commit"] == "abc123" and payload["trigger"] == "webhook"
    assert payload["duration_s"] == 12.346 and payload["restore_release"] == "r1"
    assert payload["error"].startswith("health gate failed")


def test_a_first_deploy_that_fails_names_no_release_to_restore(emitted: list[dict]) -> None:
    run_events().stack_failed(failed(), restore=None)
    assert "homelab.restore-release" not in emitted[0]["resource"]


def test_secrets_never_reach_an_event(emitted: list[dict]) -> None:
    secret = f"s3cr3t-{uuid4().hex}"
    MASKER.add(secret)
    run_events().stack_failed(failed(f"health gate failed: password={secret}"), restore="r1")
    run_events().completed("failed", 3.0, [failed(secret)], reason=f"boom {secret}")
    assert emitted and all(secret not in repr(e) for e in emitted)


def test_completed_counts_results_and_lists_only_changed_stacks(emitted: list[dict]) -> None:
    unchanged = StackResult(phase="core", host="thinkpad", stack="traefik", action="unchanged", result="unchanged")
    run_events().completed("failed", 61.5, [failed(), unchanged])
    [event] = emitted
    assert event["event"] == "homelab.deploy.completed"
    assert event["resource"]["prefect.resource.id"] == "homelab.environment.production"
    assert event["payload"]["counts"] == {"failed": 1, "unchanged": 1}
    assert [c["stack"] for c in event["payload"]["changed"]] == ["media"]


def test_an_event_that_cannot_be_sent_never_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> None:
        raise ConnectionError("events API down")

    monkeypatch.setattr("prefect.events.emit_event", broken)
    run_events().started("deployments/homelab.yaml")  # no exception


def _received(resource: dict[str, str], name: str = "homelab.deploy.stack.failed") -> ReceivedEvent:
    return ReceivedEvent(occurred=datetime.now(UTC), event=name, resource=resource, id=uuid4())


@pytest.mark.parametrize(("resource", "name", "fires"), [
    (stack_resource("rtx1080", "media", "apps", "production", "r1"), "homelab.deploy.stack.failed", True),
    (stack_resource("thinkpad", "web-staging", "apps", "staging", "r1"), "homelab.deploy.stack.failed", False),
    (stack_resource("rtx1080", "media", "apps", "production"), "homelab.deploy.stack.failed", False),
    (stack_resource("rtx1080", "media", "apps", "production", "r1"), "homelab.deploy.rolled_back", False),
])
def test_the_automation_fires_only_for_a_failed_production_stack_with_a_release_to_restore(
        resource: dict[str, str], name: str, fires: bool) -> None:
    automation = rollback_failed_stack(uuid4())
    trigger = ServerTrigger(**automation.trigger.model_dump(exclude={"type"}))
    assert trigger.covers(_received(resource, name)) is fires


def test_the_automation_rolls_back_exactly_that_host_stack_and_release() -> None:
    deployment = uuid4()
    [action] = rollback_failed_stack(deployment).actions
    assert action.deployment_id == deployment
    assert action.parameters == {"hosts": ["{{ event.resource['homelab.host'] }}"],
                                 "stacks": ["{{ event.resource['homelab.stack'] }}"],
                                 "to_release": "{{ event.resource['homelab.restore-release'] }}"}

