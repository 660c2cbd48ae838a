"""The J-Jeco agents in real lab deploys: a rejecting project_manager stops production, its
concerns appear in the approval form, a failing verifier rolls its phase back, a communicator
rewrites the notices, a hanging agent costs only its timeout; and the DeploymentOrchestratorAgent
drives the served ``deploy`` deployment end to end, waiting or not."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.agent_servers import answer, serving, slow
from tests.fixtures import ControlProcess
from tests.integration.deploying import (
    audit_events,
    current_release,
    deploy,
    lab_checkout,
    project_container_ids,
    results,
    trust_as_is,
)
from tests.integration.test_pipeline import paused_run
from tests.telegram_fake import TelegramFake

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

ROOT = Path(__file__).resolve().parents[2]
TOKEN, CHAT = "987654321:AAH-fake-bot-token_for-tests-0123456789", "-1001234567890"


def with_agents(clean_lab: Path, tmp_path: Path, tag: str, agents: dict, monkeypatch: pytest.MonkeyPatch,
                approval: dict | None = None) -> Path:
    """The lab repo at ``tag`` (a working tree) with an ``agents:`` section, trusted as it is."""
    inventory = lab_checkout(clean_lab, tmp_path, tag)
    data = yaml.safe_load(inventory.read_text())
    data["agents"] = agents
    if approval is not None:
        data["approval"] = approval
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    trust_as_is(inventory, monkeypatch)
    return inventory


@pytest.fixture(autouse=True)
def quick_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMELAB_APPROVAL_POLL_S", "0.5")


@pytest.mark.parametrize("on_reject", ["block", "annotate"])
async def test_a_rejecting_plan_review_stops_production_when_the_policy_says_so(
        clean_lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_reject: str) -> None:
    with serving(answer({"decision": "reject", "text": "not on a Friday"})) as pm:
        inventory = with_agents(clean_lab, tmp_path, "v1", {"plan_review": {
            "agent": "project_manager", "url": pm.url, "on_reject": on_reject, "timeout_s": 5}}, monkeypatch)
        state, report = await deploy(inventory, only=["newsletter"])
    assert pm.requests[0]["environment"] == "production"
    assert [c["stack"] for c in pm.requests[0]["plan"]["changes"]] == ["newsletter"]
    assert "newsletter" in pm.requests[0]["plan_markdown"]
    if on_reject == "block":
        assert state.is_completed() and state.name == "NotApproved", state
        assert report["result"] == "not-approved" and "not on a Friday" in report["reason"], report
        assert project_container_ids("vps", "newsletter") == set()  # production untouched
    else:
        assert report["result"] == "success", report
        assert results(report) == {("vps", "newsletter"): "healthy"}
        assert report["agents"][0]["decision"] == "reject" and report["agents"][0]["text"] == "not on a Friday"
    decided = audit_events("agent.decided")[-1]
    assert (decided["hook"], decided["decision"], decided["agent"]) == ("plan_review", "reject", "project_manager")


async def test_concerns_appear_in_the_approval_form(clean_lab: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    with serving(answer({"decision": "concerns", "text": "newsletter has no smoke test"})) as pm:
        inventory = with_agents(clean_lab, tmp_path, "v1", {"plan_review": {"url": pm.url}}, monkeypatch,
                                approval={"timeout_s": 60})
        running = asyncio.create_task(deploy(inventory, only=["newsletter"]))
        run_id = await paused_run()
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            key = run.state.state_details.run_input_keyset["description"]
            form = await client.read_flow_run_input(run_id, key)
        subprocess.run([sys.executable, "-c", "import sys, uuid; from prefect.flow_runs import resume_flow_run; "
                        "resume_flow_run(uuid.UUID(sys.argv[1]), run_input={'approve': False, 'reason': 'agreed', "
                        "'approver': 'alice'})", run_id], check=True, timeout=60)
        _state, report = await asyncio.wait_for(running, 60)
    assert "### Agent review" in form and "newsletter has no smoke test" in form and "`concerns`" in form
    assert report["result"] == "not-approved" and report["agents"][0]["decision"] == "concerns"


async def test_a_failing_verifier_rolls_its_phase_back(clean_lab: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, report = await deploy(clean_lab, ref="v1")
    assert report["result"] == "success", report
    before = {s["stack"]: s["release"] for s in report["stacks"] if s["stack"] in ("redis", "homeassistant")}

    def verdict(request: dict, attempt: int) -> tuple[int, bytes]:
        failing = request["phase"] == "apps"
        body = {"decision": "fail", "reason": "homeassistant answers 200 with an error page"} if failing \
            else {"decision": "pass"}
        return 200, json.dumps(body).encode()

    with serving(verdict) as verifier:
        inventory = with_agents(clean_lab, tmp_path, "v2", {"verify": {"agent": "verifier", "url": verifier.url,
                                                                       "mode": "fail-closed"}}, monkeypatch)
        _state, report = await deploy(inventory)
    assert report["result"] == "failed", report
    got = results(report)
    assert got[("rtx1080", "redis")] == "healthy"  # foundation passed the verifier and stays
    assert current_release("rtx1080", "redis") != before["redis"]
    host = next(s["host"] for s in report["stacks"] if s["stack"] == "homeassistant")
    assert got[(host, "homeassistant")] == "failed"
    failure = next(s for s in report["stacks"] if s["stack"] == "homeassistant")
    assert "verifier" in failure["error"] and "error page" in failure["error"] and failure["rollback"]
    assert current_release(host, "homeassistant") == before["homeassistant"]  # back on the v1 release
    assert {s["result"] for s in report["stacks"] if s["phase"] in ("ai", "edge")} <= {"not-run", "unchanged"}
    phases = [d["phase"] for d in report["agents"] if d["hook"] == "verify"]
    assert phases[-1] == "apps" and "foundation" in phases
    assert [r["phase"] for r in verifier.requests][-1] == "apps"
    assert verifier.requests[-1]["probes"] and verifier.requests[-1]["report"]["stacks"]


async def test_a_hanging_verifier_costs_its_timeout_and_a_communicator_rewrites_the_notices(
        clean_lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TelegramFake(token=TOKEN, chat_id=CHAT) as telegram, \
            serving(slow(30, {"decision": "fail"})) as verifier, \
            serving(answer({"text": "Newsletter is live. Nothing to do."})) as communicator:
        for key, value in {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT,
                           "TELEGRAM_API_URL": telegram.url}.items():
            monkeypatch.setenv(key, value)
        inventory = with_agents(clean_lab, tmp_path, "v1", {
            "verify": {"url": verifier.url, "timeout_s": 2, "mode": "fail-open"},
            "notify": {"agent": "communicator", "url": communicator.url}}, monkeypatch)
        started = time.monotonic()
        _state, report = await deploy(inventory, only=["newsletter"])
        took = time.monotonic() - started
    assert report["result"] == "success", report
    verify = next(d for d in report["agents"] if d["hook"] == "verify")
    assert verify["outcome"] == "failed-open" and "within 2 s" in verify["failure"]
    assert took < 25, took  # the 30 s agent cost at most its 2 s budget
    assert any("Newsletter is live" in m["raw"] for m in telegram.messages), telegram.messages
    assert {r["kind"] for r in communicator.requests} >= {"started", "succeeded"}
    assert any(d["hook"] == "notify" and d["decision"] == "rewrite" for d in report["agents"])


@pytest.fixture(scope="module")
def served(lab_inventory: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    control = ControlProcess(lab_inventory, tmp_path_factory.mktemp("agent-serve-home"))
    control.start()
    yield control
    control.stop()


async def test_the_orchestrator_agent_deploys_waiting_and_not_waiting(served: ControlProcess, clean_lab: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.agent import DeploymentOrchestratorAgent, follow_deploy_events

    agent = DeploymentOrchestratorAgent(inventory=str(clean_lab), poll_s=0.5)
    assert (agent.model, agent.role) == ("none", "deployment_orchestrator")
    sha = subprocess.run(["git", "-C", str(clean_lab.parent), "rev-parse", "v1^{commit}"], capture_output=True,
                         text=True, check=True).stdout.strip()
    done = await asyncio.to_thread(agent.orchestrate_deployment, sha, "production")  # the seed's blocking call
    assert done["status"] == "success", done
    assert done["ui_url"].endswith(f"/runs/flow-run/{done['flow_run_id']}")
    assert done["commit"] == sha and done["hosts"]["vps"]["newsletter"] == "healthy"
    assert set(done["hosts"]) == {"vps", "thinkpad", "rtx1080"}

    seen: list[dict] = []  # an agent that subscribes instead of being called
    following = asyncio.create_task(follow_deploy_events(seen.append))
    await asyncio.sleep(1)  # subscribed
    started = await agent.aorchestrate_deployment("v1.1", "production", wait=False)
    assert started["status"] == "scheduled" and started["hosts"] == {}
    finished = await agent.aresult(started["flow_run_id"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            e["event"] == "homelab.deploy.completed" and e["flow_run_id"] == started["flow_run_id"] for e in seen):
        await asyncio.sleep(0.3)
    following.cancel()
    names = [e["event"] for e in seen if e["flow_run_id"] == started["flow_run_id"]]
    assert {"homelab.deploy.started", "homelab.deploy.phase.completed", "homelab.deploy.completed"} <= set(names)
    assert finished["status"] == "success", finished
    assert finished["hosts"]["vps"]["newsletter"] == "healthy" and finished["hosts"]["rtx1080"]["redis"] == "unchanged"
    # the same flow run as any other, audited by the control process as the agent's
    served_audit = [json.loads(line) for line in (served.home / "audit.jsonl").read_text().splitlines()]
    finished_records = [r for r in served_audit if r["event"] == "deploy.finished"
                        and r.get("flow_run_id") == started["flow_run_id"]]
    assert [r["actor"] for r in finished_records] == ["agent:deploy"], finished_records
    with pytest.raises(RuntimeError, match="await the a-prefixed method"):
        agent.status()  # the blocking form inside a running loop says what to do instead

    status = await agent.astatus()
    assert status["status"] == "success" and set(status["hosts"]) == {"vps", "thinkpad", "rtx1080"}
    plan = await agent.aplan("v1")
    assert {c["action"] for c in plan["plan"]["changes"]} >= {"update"}  # newsletter back to v1

    # the local control process serves the lab's inventory: another one is refused, not deployed
    monkeypatch.setenv("HOMELAB_HOME", str(served.home))
    other = DeploymentOrchestratorAgent(inventory=str(ROOT / "deployments" / "homelab.yaml"))
    with pytest.raises(Exception, match="serves"):
        await other.aorchestrate_deployment("v1")
    with pytest.raises(Exception, match="commit_hash must be"):
        await agent.aorchestrate_deployment("--upload-pack=evil")
