"""The release pipeline on the lab, against a real Prefect server: a change stages on thinkpad as
``<stack>-staging``, passes its smoke tests, waits at the approval gate (``pause_flow_run``) and
only then reaches production; a rejection, a timeout or a failed smoke test leave production
untouched. The lab config repo's ``pipeline`` branch holds the releases (lab/configrepo.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import configrepo
from tests.integration.deploying import (
    audit_events,
    current_release,
    deploy,
    on_host,
    project_container_ids,
    results,
    stack_health,
    trust_as_is,
)
from tests.integration.test_notify_smtp import Mailbox, smtp_server
from tests.telegram_fake import TelegramFake

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

HOMELAB = [sys.executable, "-m", "deployments.cli"]
TOKEN, CHAT = "987654321:AAH-fake-bot-token_for-tests-0123456789", "-1001234567890"


@pytest.fixture(autouse=True)
def quick_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMELAB_APPROVAL_POLL_S", "0.5")


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TelegramFake, Mailbox]]:
    """Telegram (a local fake of the Bot API) and a real SMTP server, both configured by env."""
    with TelegramFake(token=TOKEN, chat_id=CHAT) as telegram, smtp_server() as (mailbox, port):
        for key, value in {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT, "TELEGRAM_API_URL": telegram.url,
                           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none",
                           "SMTP_FROM": "homelab@example.test", "SMTP_TO": "ops@example.test"}.items():
            monkeypatch.setenv(key, value)
        yield telegram, mailbox


async def paused_run(timeout_s: float = 120) -> str:
    """The id of the deploy run that waits for approval (one at a time on the lab)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            if runs:
                return str(runs[0].id)
            await asyncio.sleep(0.3)
    raise AssertionError("no run paused for approval")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*HOMELAB, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert not check or done.returncode == 0, (done.stdout, done.stderr)
    return done


def staging_env(stack: str = "newsletter-staging") -> list[str]:
    ids = sorted(project_container_ids("thinkpad", stack))
    assert ids, f"no {stack} on thinkpad"
    return on_host("thinkpad", ["docker", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}",
                                ids[0]]).split()


async def test_a_good_change_stages_passes_its_tests_waits_and_reaches_production_once_approved(
        clean_lab: Path, channels: tuple[TelegramFake, Mailbox]) -> None:
    telegram, mailbox = channels
    running = asyncio.create_task(deploy(clean_lab, ref="v4-staged", only=["newsletter"]))
    run_id = await paused_run()
    # Staged and tested on thinkpad; production not touched while it waits.
    assert stack_health("thinkpad", "newsletter-staging") == {"web": "healthy"}
    assert "EDITION=4" in staging_env()
    assert current_release("vps", "newsletter") is None
    listed = json.loads(cli("pending", "--json").stdout)["runs"]
    assert [r["flow_run_id"] for r in listed] == [run_id]
    assert "newsletter on vps create" in listed[0]["summary"]

    # Approved from another process, through Prefect's API.
    subprocess.run([sys.executable, "-c", "import sys, uuid; from prefect.flow_runs import resume_flow_run; "
                    "resume_flow_run(uuid.UUID(sys.argv[1]), run_input={'approve': True, 'reason': 'looks good', "
                    "'approver': 'alice'})", run_id], check=True, timeout=60)
    state, report = await asyncio.wait_for(running, 120)
    assert state.is_completed(), report
    assert report["result"] == "success", report
    assert results(report) == {("vps", "newsletter"): "healthy"}
    assert stack_health("vps", "newsletter") == {"web": "healthy"}
    assert report["approval"]["approved"] is True and report["approval"]["approver"] == "alice"
    assert report["staging"]["result"] == "success"
    assert [(s["check"], s["ok"]) for s in report["smoke"]] == [("home page", True), ("knows its stack", True)]
    answered = audit_events("approval.answered")[-1]
    assert answered["approver"] == "alice" and answered["actor"] == "approver:alice"
    # the run's other records name who started it (here: this test, at a shell)
    assert audit_events("approval.requested")[-1]["actor"].startswith("cli:")

    kinds = [m["raw"].split("\n", 1)[0] for m in telegram.messages]
    assert any("Deploy started" in k for k in kinds) and any("Approval needed" in k for k in kinds), kinds
    assert any("Deploy succeeded" in k for k in kinds), kinds
    approval = next(m["raw"] for m in telegram.messages if "Approval needed" in m["raw"])
    assert f"homelab approve {run_id}" in approval and "knows its stack" in approval
    subjects = [m["message"]["subject"] for m in mailbox.mails]
    assert len(subjects) == 3 and any("Approval needed" in s for s in subjects), subjects


async def test_homelab_approve_and_reject_answer_the_gate(clean_lab: Path,
                                                          channels: tuple[TelegramFake, Mailbox]) -> None:
    telegram, mailbox = channels
    running = asyncio.create_task(deploy(clean_lab, ref="v4-staged", only=["newsletter"]))
    run_id = await paused_run()
    done = cli("approve", run_id, "--reject", "--reason", "not tonight", "--approver", "bob")
    assert f"rejected: flow run {run_id}" in done.stdout
    state, report = await asyncio.wait_for(running, 60)
    assert state.is_completed() and state.name == "NotApproved", state
    assert report["result"] == "not-approved" and report["reason"] == "not tonight", report
    assert report["approval"]["approver"] == "bob"
    assert current_release("vps", "newsletter") is None  # production untouched
    assert any("Not approved" in m["raw"] for m in telegram.messages)
    assert any("Not approved" in m["message"]["subject"] for m in mailbox.mails)
    again = cli("approve", run_id, check=False)
    assert again.returncode == 2 and "is not waiting for approval" in again.stderr

    # Approved for one phase only: redis (foundation) stays out of production.
    running = asyncio.create_task(deploy(clean_lab, ref="v4-staged", only=["newsletter", "redis"]))
    run_id = await paused_run()
    assert {"newsletter-staging", "redis-staging"} <= set(staging_env_ids().split())
    cli("approve", run_id, "--reason", "ok", "--phase", "edge")
    state, report = await asyncio.wait_for(running, 120)
    assert report["result"] == "success", report
    assert report["approval"]["phases"] == ["edge"]
    assert results(report) == {("vps", "newsletter"): "healthy"}
    assert stack_health("vps", "newsletter") == {"web": "healthy"}
    assert current_release("rtx1080", "redis") is None


def staging_env_ids() -> str:
    return on_host("thinkpad", ["docker", "ps", "--format", "{{.Label \"com.docker.compose.project\"}}"])


async def test_an_unanswered_gate_times_out_as_not_approved(clean_lab: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "config"
    subprocess.run(["git", "clone", "-q", "-b", configrepo.PIPELINE_BRANCH, str(clean_lab.parent), str(copy)],
                   check=True)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "v4-staged"], check=True)
    inventory = copy / "homelab.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["approval"] = {"timeout_s": 2}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    trust_as_is(inventory, monkeypatch)
    state, report = await deploy(inventory, only=["newsletter"])
    assert state.is_completed() and state.name == "NotApproved", state
    assert report["result"] == "not-approved" and report["approval"]["timed_out"] is True, report
    assert current_release("vps", "newsletter") is None


async def test_a_failed_smoke_test_stops_before_production_and_rolls_staging_back(clean_lab: Path) -> None:
    state, staged = await deploy(clean_lab, ref="v4-staged", only=["newsletter"], environment="staging")
    assert staged["result"] == "success", staged  # --environment staging stops after the tests
    assert current_release("vps", "newsletter") is None
    good = current_release("thinkpad", "newsletter-staging")

    state, report = await deploy(clean_lab, ref="v4-smoke-fails", only=["newsletter"])
    assert state.is_failed() and report["result"] == "failed", report
    assert report["production"] == "untouched"
    failed = [s for s in report["smoke"] if not s["ok"]]
    assert [s["check"] for s in failed] == ["home page"] and "edition 5" in failed[0]["detail"]
    row = report["stacks"][0]
    assert (row["host"], row["stack"], row["result"]) == ("thinkpad", "newsletter-staging", "failed")
    assert "restored release" in row["rollback"]
    assert current_release("thinkpad", "newsletter-staging") == good  # the staging copy went back
    assert "EDITION=4" in staging_env()
    assert current_release("vps", "newsletter") is None  # production untouched


async def test_healthy_in_staging_but_failing_in_production_follows_the_phase_policy(clean_lab: Path) -> None:
    _, report = await deploy(clean_lab, ref="v4-prod-broken", only=["newsletter"], yes=True)
    assert report["result"] == "failed", report
    assert report["staging"]["result"] == "success" and all(s["ok"] for s in report["smoke"])
    assert results(report) == {("vps", "newsletter"): "failed"}  # edge halts; the failed stack is undone
    assert current_release("vps", "newsletter") is None
    assert stack_health("thinkpad", "newsletter-staging") == {"web": "healthy"}
    assert audit_events("approval.skipped")[-1]["why"] == "--yes"


async def test_a_staging_copy_is_rolled_back_on_its_own(clean_lab: Path) -> None:
    from flows.rollback import rollback_homelab

    _, first = await deploy(clean_lab, ref="v4-staged", only=["newsletter"], environment="staging")
    good = current_release("thinkpad", "newsletter-staging")
    _, second = await deploy(clean_lab, ref="v4-prod-broken", only=["newsletter"], environment="staging")
    assert first["result"] == second["result"] == "success", second
    assert current_release("thinkpad", "newsletter-staging") != good
    state = await rollback_homelab(inventory=str(clean_lab), hosts=["thinkpad"], stacks=["newsletter-staging"],
                                   return_state=True)
    assert state.is_completed(), state
    assert current_release("thinkpad", "newsletter-staging") == good
    assert current_release("vps", "newsletter") is None


async def test_skip_staging_and_yes_are_audited_and_a_hanging_chat_does_not_hang_the_deploy(
        clean_lab: Path, channels: tuple[TelegramFake, Mailbox]) -> None:
    from tasks.engine.notify import NOTIFY_TIMEOUT_S

    telegram, mailbox = channels
    telegram.hang = True
    began = time.monotonic()
    _, report = await deploy(clean_lab, ref="v4-staged", only=["newsletter"], skip_staging=True, yes=True)
    took = time.monotonic() - began
    assert report["result"] == "success", report
    assert report["staging"] == {"result": "skipped"} and "smoke" not in report
    assert not project_container_ids("thinkpad", "newsletter-staging")
    assert audit_events("staging.skipped")[-1]["flow_run_id"] == report["flow_run_id"]
    assert audit_events("approval.skipped")[-1]["flow_run_id"] == report["flow_run_id"]
    assert took < 30 + NOTIFY_TIMEOUT_S, took  # a one-stack deploy; the hung chat costs at most its timeout
    assert len(mailbox.mails) == 2  # started, succeeded: mail went on while the chat hung
