"""Issue 11's acceptance on the lab: a signed push to the ``pipeline`` branch stages the change
on thinkpad, passes its smoke tests, waits, is approved in the Prefect UI (a real browser) and
reaches production. A rejected push changes nothing in production. The chat (a local fake of
the Telegram Bot API) and the mailbox (aiosmtpd) get what they should."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lab import configrepo
from tests.fixtures import ControlProcess
from tests.integration.deploying import deploy, deployed_commits, on_host, project_container_ids
from tests.integration.test_notify_smtp import Mailbox, smtp_server
from tests.integration.test_pipeline import CHAT, TOKEN, paused_run
from tests.integration.test_serve import commits_at, signed_push, wait_final
from tests.telegram_fake import TelegramFake

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture(scope="module")
def channels() -> Iterator[tuple[TelegramFake, Mailbox, dict[str, str]]]:
    with TelegramFake(token=TOKEN, chat_id=CHAT) as telegram, smtp_server() as (mailbox, port):
        env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT, "TELEGRAM_API_URL": telegram.url,
               "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none",
               "SMTP_FROM": "homelab@example.test", "SMTP_TO": "ops@example.test", "HOMELAB_APPROVAL_POLL_S": "0.5"}
        yield telegram, mailbox, env


@pytest.fixture(scope="module")
def pipeline_control(lab_inventory: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory,
                     channels: tuple[TelegramFake, Mailbox, dict[str, str]]) -> Iterator[ControlProcess]:
    """``homelab serve --branch pipeline``: pushes to the pipeline branch deploy."""
    control = ControlProcess(lab_inventory, tmp_path_factory.mktemp("serve-pipeline"),
                             args=("--branch", configrepo.PIPELINE_BRANCH), extra_env=channels[2])
    control.start()
    yield control
    control.stop()


def push(control: ControlProcess, before: str, after: str) -> str:
    body = json.dumps({"ref": f"refs/heads/{configrepo.PIPELINE_BRANCH}", "before": before, "after": after,
                       "deleted": False, "repository": {"full_name": "lab/config"}}).encode()
    answer = httpx.post(control.webhook_url, content=body, headers=signed_push(body, str(uuid.uuid4())), timeout=30)
    assert answer.status_code == 202, answer.text
    return answer.json()["flow_run_id"]


def newsletter_edition(host: str = "vps", stack: str = "newsletter") -> str | None:
    ids = sorted(project_container_ids(host, stack))
    env = on_host(host, ["docker", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", ids[0]])
    return next((line.split("=", 1)[1] for line in env.split() if line.startswith("EDITION=")), None)


async def states_of(run_id: str) -> list:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run_states(uuid.UUID(run_id))


def telegram_kinds(telegram: TelegramFake) -> list[str]:
    return [m["raw"].split("\n", 1)[0] for m in telegram.messages]


def test_a_pushed_change_is_staged_tested_approved_in_the_ui_and_reaches_production(
        pipeline_control: ControlProcess, clean_lab: Path,
        channels: tuple[TelegramFake, Mailbox, dict[str, str]]) -> None:
    from tests.integration.prefect_ui import approve_in_ui

    telegram, mailbox, _ = channels
    v2, staged, broken = (commits_at(clean_lab, tag) for tag in ("v2", "v4-staged", "v4-prod-broken"))
    _, first = asyncio.run(deploy(clean_lab, ref="v2"))  # production as it is today
    assert first["result"] == "success", first
    before = deployed_commits()
    telegram.messages.clear()
    mailbox.mails.clear()

    # An approved push: staged and smoke-tested on thinkpad, waiting, approved in the browser.
    run_id = push(pipeline_control, v2, staged)
    assert asyncio.run(paused_run()) == run_id
    assert newsletter_edition("thinkpad", "newsletter-staging") == "4"
    assert newsletter_edition() is None  # production still runs v2's newsletter
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    shown = approve_in_ui(ui, run_id, approve=True, approver="alice", reason="staging looks right")
    assert "newsletter" in shown and "knows its stack" in shown  # the plan and the smoke-test table
    run, _ = asyncio.run(wait_final(uuid.UUID(run_id)))
    assert run.state.is_completed() and run.state.name == "Completed", run.state
    assert newsletter_edition() == "4"
    after = deployed_commits()
    assert after[("vps", "newsletter")] == staged
    assert {k: v for k, v in after.items() if k[1] != "newsletter" and not k[1].endswith("-staging")} == \
        {k: v for k, v in before.items() if k[1] != "newsletter"}  # nothing else changed, no staging copy pruned
    assert ("thinkpad", "newsletter-staging") in after

    # A rejected push: staged, then rejected; production keeps the approved release.
    run_id = push(pipeline_control, staged, broken)
    assert asyncio.run(paused_run()) == run_id
    approve_in_ui(ui, run_id, approve=False, approver="bob", reason="not during dinner")
    run, _ = asyncio.run(wait_final(uuid.UUID(run_id)))
    assert run.state.is_completed() and run.state.name == "NotApproved", run.state
    assert deployed_commits()[("vps", "newsletter")] == staged and newsletter_edition() == "4"

    kinds = telegram_kinds(telegram)
    expected = ["Deploy started", "Approval needed", "Deploy succeeded",
                "Deploy started", "Approval needed", "Not approved"]
    assert [next(e for e in expected if e in k) for k in kinds] == expected, kinds
    subjects = [m["message"]["subject"] for m in mailbox.mails]
    assert [next(e for e in expected if e in s) for s in subjects] == expected, subjects
    assert any("not during dinner" in m["raw"] for m in telegram.messages)


def test_a_push_whose_smoke_test_fails_never_reaches_production(pipeline_control: ControlProcess,
                                                                clean_lab: Path) -> None:
    run_id = push(pipeline_control, commits_at(clean_lab, "v2"), commits_at(clean_lab, "v4-smoke-fails"))
    run, _ = asyncio.run(wait_final(uuid.UUID(run_id)))
    assert run.state.is_failed(), run.state
    assert "staging failed, production untouched" in (run.state.message or "")
    assert not project_container_ids("thinkpad", "newsletter-staging")  # its first staging release: removed
    assert not any(stack == "newsletter" for _, stack in deployed_commits())  # a clean lab: nothing in production


def test_a_newer_push_supersedes_one_that_waits_for_approval(pipeline_control: ControlProcess,
                                                             clean_lab: Path) -> None:
    """Approving the older push later would deploy an older commit: it is cancelled instead."""
    v2, staged, broken = (commits_at(clean_lab, tag) for tag in ("v2", "v4-staged", "v4-prod-broken"))
    older = push(pipeline_control, v2, staged)
    assert asyncio.run(paused_run()) == older
    newer = push(pipeline_control, staged, broken)
    run, _ = asyncio.run(wait_final(uuid.UUID(older), timeout_s=120))
    assert run.state.is_cancelled(), run.state  # its runner ended the waiting process
    assert any("superseded by push" in (state.message or "") for state in asyncio.run(states_of(older)))
    assert asyncio.run(paused_run()) == newer
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(uuid.UUID(newer), run_input={"approve": False, "reason": "test over", "approver": "carol"})
    run, _ = asyncio.run(wait_final(uuid.UUID(newer), timeout_s=120))
    assert run.state.name == "NotApproved", run.state
    assert not any(stack == "newsletter" for _, stack in deployed_commits())  # production never changed
