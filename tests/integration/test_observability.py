"""A good and a broken lab deploy, seen from outside: the series in a real Prometheus (through a
real Pushgateway), the alert for the broken one, the events in Prefect's event feed, and the
shipped automation rolling the failed stack back through the control process's rollback
deployment. The control process's own /metrics is scraped by the same Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.fixtures import ControlProcess
from tests.integration.deploying import deploy

pytestmark = pytest.mark.lab


@pytest.fixture
def pushing(pushgateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs push to the test Pushgateway, with totals of their own (a fresh HOMELAB_HOME)."""
    pushgateway.wipe()
    monkeypatch.setenv("HOMELAB_PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path / "home"))
    return pushgateway


def value(prometheus, expr: str) -> float:
    """The one value of ``expr``, once Prometheus has scraped it."""
    found = prometheus.wait_for(expr, timeout_s=20)
    assert len(found) == 1, found
    return float(found[0]["value"][1])


async def read_events(flow_run_id: str, want: set[str], timeout_s: float = 30) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    wanted = EventFilter(event=EventNameFilter(prefix=["homelab."]),
                         related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]))
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=wanted, limit=50)
            if want <= {e.event for e in page.events} or time.monotonic() > deadline:
                return page.events
            await asyncio.sleep(0.5)


@pytest.fixture
def control_with_automations(clean_lab: Path, prefect_api: str, tmp_path: Path, prometheus):
    """`homelab serve` with the shipped automations, its /metrics scraped by Prometheus."""
    from datetime import UTC, datetime

    SINCE["at"] = datetime.now(UTC)
    control = ControlProcess(clean_lab, tmp_path / "serve-home", automations=True)
    control.home.mkdir()
    control.start()
    prometheus.scrape_also(f"127.0.0.1:{control.metrics_port}")
    yield control
    control.stop()
    asyncio.run(_remove_automation_and_leftover_rollbacks())


async def _remove_automation_and_leftover_rollbacks() -> None:
    """Nothing of this test may roll back stacks under later tests."""
    from prefect.automations import Automation

    from deployments.automations import ROLLBACK_AUTOMATION

    with contextlib.suppress(ValueError):
        await (await Automation.aread(name=ROLLBACK_AUTOMATION)).adelete()
    for run in await rollback_runs():
        if not run.state.is_final():
            from prefect.client.orchestration import get_client
            from prefect.states import Cancelled

            async with get_client() as client:
                await client.set_flow_run_state(run.id, Cancelled(), force=True)


SINCE = {}  # the test's start: earlier tests on the shared server ran the rollback deployment too


async def rollback_runs() -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(
            any_=["rollback"])))
    return [r for r in runs if r.created and r.created >= SINCE["at"]]


def unsigned_push(control: ControlProcess) -> int:
    request = urllib.request.Request(control.webhook_url, data=b"{}", method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "obs-1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_good_and_broken_deploys_in_prometheus_alerts_events_and_the_automation(
        clean_lab: Path, prefect_api: str, pushing, prometheus, control_with_automations: ControlProcess) -> None:
    control = control_with_automations
    assert unsigned_push(control) == 401
    with urllib.request.urlopen(control.metrics_url, timeout=5) as answer:
        assert "homelab_webhook_signature_failures_total 1.0" in answer.read().decode()
    assert value(prometheus, 'homelab_webhook_requests_total{job="homelab-control",outcome="rejected"}') == 1

    state, good = await deploy(clean_lab, ref="v2")
    assert good["result"] == "success"
    env = '{job="homelab",environment="production"}'
    assert value(prometheus, 'homelab_deploys_total{result="success"}') == 1
    assert value(prometheus, f"homelab_last_deploy_success{env}") == 1
    assert value(prometheus, f"homelab_deploy_in_progress{env}") == 0
    assert value(prometheus, 'sum(homelab_stack_changes_total{action="create",result="healthy"})') == 13
    assert value(prometheus, 'homelab_deploy_duration_seconds_count{host="rtx1080",phase="foundation"}') == 1
    assert value(prometheus, 'homelab_health_check_seconds_count{host="vps",stack="newsletter"}') == 1
    assert value(prometheus, 'homelab_lock_wait_seconds_count{host="thinkpad"}') == 1
    first_success = value(prometheus, "homelab_last_success_timestamp_seconds")

    state, broken = await deploy(clean_lab, ref="v3-broken")
    assert state.is_failed() and broken["result"] == "failed"
    # both results, counted across runs (the Pushgateway keeps only the last push)
    assert value(prometheus, 'homelab_deploys_total{result="success"}') == 1
    assert value(prometheus, 'homelab_deploys_total{result="failed"}') == 1
    assert value(prometheus, f"homelab_last_deploy_success{env}") == 0
    assert value(prometheus, 'homelab_health_check_failures_total{host="rtx1080",stack="media"}') == 1
    assert value(prometheus, 'homelab_rollbacks_total{reason="failed-stack"}') == 1
    assert value(prometheus, "homelab_last_success_timestamp_seconds") == first_success
    # the alert for the broken deploy
    deadline = time.monotonic() + 20
    while not any(a["labels"]["alertname"] == "HomelabDeployFailed" and a["state"] in ("pending", "firing")
                  for a in prometheus.alerts()):
        assert time.monotonic() < deadline, prometheus.alerts()
        await asyncio.sleep(0.5)

    run_id = str(state.state_details.flow_run_id)
    names = {"homelab.deploy.started", "homelab.deploy.phase.completed", "homelab.deploy.stack.failed",
             "homelab.deploy.rolled_back", "homelab.deploy.completed"}
    events = await read_events(run_id, names)
    assert names <= {e.event for e in events}
    failed = next(e for e in events if e.event == "homelab.deploy.stack.failed")
    assert failed.resource.id == "homelab.stack.rtx1080.media"
    assert failed.resource["homelab.host"] == "rtx1080" and failed.resource["homelab.stack"] == "media"
    before = next(s for s in good["stacks"] if s["stack"] == "media")["release"]
    assert failed.resource["homelab.restore-release"] == before == failed.payload["restore_release"]
    assert "health gate failed" in failed.payload["error"]
    assert failed.payload["commit"] == broken["commit"]
    assert any(r.id == f"prefect.flow-run.{run_id}" and r.role == "flow-run" for r in failed.related)
    completed = next(e for e in events if e.event == "homelab.deploy.completed")
    assert completed.payload["result"] == "failed" and completed.payload["duration_s"] > 0
    # v3-broken changes only apps (media fails there) and edge, which the failure blocks
    phases = {e.resource["homelab.phase"]: e.payload for e in events if e.event == "homelab.deploy.phase.completed"}
    assert set(phases) == {"apps"}, phases
    assert phases["apps"]["result"] == "failed"
    assert {(s["stack"], s["result"]) for s in phases["apps"]["stacks"]} >= {("media", "failed")}

    # the automation ran the rollback deployment for media, to the release before the failed one
    deadline = time.monotonic() + 120
    while not (runs := [r for r in await rollback_runs() if r.state and r.state.is_final()]):
        assert time.monotonic() < deadline, "the automation started no rollback run"
        await asyncio.sleep(1)
    assert runs[0].state.is_completed(), runs[0].state
    assert runs[0].parameters == {"hosts": ["rtx1080"], "stacks": ["media"], "to_release": before}


async def test_an_unreachable_pushgateway_neither_fails_nor_slows_a_deploy_and_the_run_anchors_its_audit(
        clean_lab: Path, prefect_api: str, tmp_path: Path, monkeypatch) -> None:
    from tasks.engine import audit
    from tests.conftest import _free_port

    monkeypatch.setenv("HOMELAB_PUSHGATEWAY_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOMELAB_AUDIT_ANCHOR", f"test-anchor-{uuid.uuid4().hex[:12]}")
    started = time.monotonic()
    _, report = await deploy(clean_lab, ref="v1", only=["redis"])
    assert report["result"] == "success"
    # refused connections cost nothing; a silent gateway costs at most metrics.timeout_s per push
    assert time.monotonic() - started < 30
    # the run's totals are still kept, for the next push that gets through
    assert (tmp_path / "home" / "metrics" / "production.json").exists()

    # every record of the run names its actor, and the run anchored the log's head at its end
    records = audit.tail()
    assert records and all(r["actor"].startswith("cli:") for r in records)
    anchored = await audit.check_anchor()
    assert not anchored.problems and any("matches" in n for n in anchored.notes), anchored
    from prefect.variables import Variable

    value = await Variable.aget(os.environ["HOMELAB_AUDIT_ANCHOR"])
    assert value["count"] == len(records) and value["hash"] == records[-1]["hash"]
