"""Agent hooks against local hook servers (real HTTP servers) on 127.0.0.1: approving, raising concerns, rejecting,
slow beyond the timeout, returning garbage, returning a 500, and down, each in both modes; the
bearer token, the retry, entry points, and what lands in the audit log."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from model.agents import AgentHook, AgentsSection, NotifyHook, PlanReviewHook
from tasks.engine.agent_hooks import consult
from tests.agent_servers import answer, down_url, fails_once_then, garbage, serving, slow, status

TOKEN = "agent-token-0f3c9a7e5d1b"


@pytest.fixture(autouse=True)
def own_audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(log))
    monkeypatch.delenv("HOMELAB_AUDIT_KEY_FILE", raising=False)
    return log


def audited() -> list[dict]:
    path = Path(os.environ["HOMELAB_AUDIT_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def review(url: str, mode: str = "fail-open", **extra: object) -> PlanReviewHook:
    return PlanReviewHook(agent="project_manager", url=url, mode=mode, timeout_s=extra.pop("timeout_s", 1), **extra)


def verifier(url: str, mode: str = "fail-open", **extra: object) -> AgentHook:
    return AgentHook(agent="verifier", url=url, mode=mode, timeout_s=extra.pop("timeout_s", 1), **extra)


PLAN = {"plan_markdown": "## plan", "plan": {"changes": []}}

# behaviour -> (reply, plan_review decision in fail-open, in fail-closed, failed?)
CASES = {
    "approving": (answer({"decision": "approve"}), "approve", "approve", False),
    "concerns": (answer({"decision": "concerns", "text": "redis has no backup hook"}), "concerns", "concerns", False),
    "rejecting": (answer({"decision": "reject", "text": "not on a Friday"}), "reject", "reject", False),
    "slow": (slow(1.5, {"decision": "approve"}), "approve", "reject", True),
    "garbage": (garbage(), "approve", "reject", True),
    "500": (status(500), "approve", "reject", True),
}


@pytest.mark.parametrize("mode", ["fail-open", "fail-closed"])
@pytest.mark.parametrize("behaviour", [*CASES, "down"])
async def test_plan_review_in_both_modes(behaviour: str, mode: str) -> None:
    if behaviour == "down":
        reply, want_open, want_closed, fails = None, "approve", "reject", True
    else:
        reply, want_open, want_closed, fails = CASES[behaviour]
    started = time.monotonic()
    if reply is None:
        decision = await consult("plan_review", review(down_url(), mode), PLAN)
    else:
        with serving(reply) as server:
            decision = await consult("plan_review", review(server.url, mode), PLAN)
        assert server.requests and server.requests[0]["hook"] == "plan_review"
        assert server.requests[0]["plan_markdown"] == "## plan"
    took = time.monotonic() - started
    assert decision.decision == (want_open if mode == "fail-open" else want_closed), decision
    assert bool(decision.failure) is fails, decision
    assert decision.outcome == ("answered" if not fails else "failed-closed" if mode == "fail-closed"
                                else "failed-open")
    assert took < 1.7, f"a hook with a 1 s budget took {took:.1f} s"  # a hanging agent costs at most its timeout
    if behaviour == "concerns":
        assert decision.text == "redis has no backup hook"
    record = audited()[-1]
    assert record["event"] == "agent.decided" and record["hook"] == "plan_review"
    assert (record["decision"], record["outcome"]) == (decision.decision, decision.outcome)


@pytest.mark.parametrize("mode", ["fail-open", "fail-closed"])
@pytest.mark.parametrize("behaviour", ["passing", "failing", "slow", "garbage", "500", "down"])
async def test_verify_in_both_modes(behaviour: str, mode: str) -> None:
    replies = {"passing": answer({"decision": "pass"}), "failing": answer({"decision": "fail", "reason": "p99 up 4x"}),
               "slow": slow(1.5, {"decision": "pass"}), "garbage": garbage(), "500": status(500)}
    payload = {"phase": "apps", "results": [], "probes": [], "report": {"stacks": []}}
    if behaviour == "down":
        decision = await consult("verify", verifier(down_url(), mode), payload)
    else:
        with serving(replies[behaviour]) as server:
            decision = await consult("verify", verifier(server.url, mode), payload)
    if behaviour in ("passing", "failing"):
        assert decision.decision == ("pass" if behaviour == "passing" else "fail")
        assert decision.failure is None
        assert decision.text == ("p99 up 4x" if behaviour == "failing" else "")
    else:
        assert decision.decision == ("pass" if mode == "fail-open" else "fail"), decision
        assert decision.failure


async def test_the_bearer_token_is_sent_and_never_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_AGENT_TOKEN", TOKEN)
    with serving(answer({"decision": "concerns", "text": f"I was called with {TOKEN}"})) as server:
        decision = await consult("plan_review", review(server.url, token_env="PM_AGENT_TOKEN"), PLAN)
    assert server.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in json.dumps(decision.to_json())  # masked, even when the agent echoes it
    assert TOKEN not in Path(os.environ["HOMELAB_AUDIT_LOG"]).read_text()


async def test_a_missing_token_fails_the_call_without_sending_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PM_AGENT_TOKEN", raising=False)
    with serving(answer({"decision": "approve"})) as server:
        decision = await consult("plan_review", review(server.url, "fail-closed", token_env="PM_AGENT_TOKEN"), PLAN)
    assert server.requests == []
    assert decision.decision == "reject" and "PM_AGENT_TOKEN is not set" in (decision.failure or "")


async def test_one_retry_after_a_500_then_the_answer_counts() -> None:
    with serving(fails_once_then({"decision": "approve"})) as server:
        decision = await consult("plan_review", review(server.url, "fail-closed"), PLAN)
    assert len(server.requests) == 2 and decision.attempts == 2
    assert (decision.decision, decision.failure) == ("approve", None)


async def test_no_retry_when_retries_is_zero_and_none_after_a_401() -> None:
    with serving(status(500)) as server:
        await consult("plan_review", review(server.url, retries=0), PLAN)
    assert len(server.requests) == 1
    with serving(status(401)) as server:
        decision = await consult("plan_review", review(server.url), PLAN)
    assert len(server.requests) == 1 and "HTTP 401" in (decision.failure or "") and "token" in decision.failure


async def test_an_answer_outside_the_contract_is_a_failed_call() -> None:
    for body in ({"decision": "maybe"}, {"verdict": "approve"}, ["approve"], {"decision": 3}):
        with serving(answer(body)) as server:
            decision = await consult("plan_review", review(server.url, "fail-closed", retries=0), PLAN)
        assert decision.decision == "reject" and decision.failure, body


async def test_notify_rewrites_or_keeps_the_text() -> None:
    hook = NotifyHook(agent="communicator", url="http://127.0.0.1:1/x")
    with serving(answer({"text": "Deployed 3 stacks. All green."})) as server:
        decision = await consult("notify", hook.model_copy(update={"url": server.url}), {"summary": "3 healthy"})
    assert (decision.decision, decision.text) == ("rewrite", "Deployed 3 stacks. All green.")
    with serving(answer({})) as server:
        decision = await consult("notify", hook.model_copy(update={"url": server.url}), {"summary": "x"})
    assert decision.decision == "keep" and decision.failure is None
    decision = await consult("notify", hook.model_copy(update={"url": down_url()}), {"summary": "x"})
    assert decision.decision == "keep" and decision.failure and decision.outcome == "failed-open"


# entry points (module:function), called in the orchestrator's process

def approving_agent(payload: dict) -> dict:
    return {"decision": "concerns", "text": f"{len(payload['plan']['changes'])} changes"}


async def async_verifier(payload: dict) -> dict:
    return {"decision": "fail", "reason": f"phase {payload['phase']} looks wrong"}


def crashing_agent(payload: dict) -> dict:
    raise RuntimeError("the model is down")


def hanging_agent(payload: dict) -> dict:
    time.sleep(1.5)
    return {"decision": "approve"}


async def test_entry_points_sync_async_crashing_and_hanging() -> None:
    here = __name__
    decision = await consult("plan_review", PlanReviewHook(entry_point=f"{here}:approving_agent"), PLAN)
    assert (decision.decision, decision.text) == ("concerns", "0 changes")
    decision = await consult("verify", AgentHook(entry_point=f"{here}:async_verifier"), {"phase": "apps"})
    assert (decision.decision, decision.text) == ("fail", "phase apps looks wrong")
    decision = await consult("plan_review", PlanReviewHook(entry_point=f"{here}:crashing_agent", mode="fail-closed"),
                             PLAN)
    assert decision.decision == "reject" and "RuntimeError" in (decision.failure or "") and decision.attempts == 2
    started = time.monotonic()
    decision = await consult("plan_review", PlanReviewHook(entry_point=f"{here}:hanging_agent", timeout_s=0.5), PLAN)
    assert time.monotonic() - started < 1.5 and decision.decision == "approve" and "within 0.5 s" in decision.failure
    decision = await consult("plan_review", PlanReviewHook(entry_point="no_such_module_xyz:agent"), PLAN)
    assert "cannot import no_such_module_xyz" in (decision.failure or "") and decision.attempts == 1


def test_the_agents_section_refuses_what_it_cannot_use() -> None:
    bad = [
        ({"plan_review": {}}, "exactly one of `url` or `entry_point`"),
        ({"plan_review": {"url": "http://a:1/x", "entry_point": "m:f"}}, "exactly one of"),
        ({"verify": {"url": "ftp://agents/x"}}, "scheme http or https"),
        ({"verify": {"url": "http://u:secret@agents/x"}}, "must not carry credentials"),
        ({"verify": {"entry_point": "not a path"}}, "package.module:function"),
        ({"verify": {"entry_point": "m:f", "token_env": "T"}}, "a token is sent only to a `url`"),
        ({"verify": {"url": "http://a/x", "token_env": "T", "token_block": "b"}}, "not both"),
        ({"verify": {"url": "http://a/x", "retries": 2}}, "less than or equal to 1"),
        ({"notify": {"url": "http://a/x", "mode": "fail-closed"}}, "fail-open"),
        ({"plan_review": {"url": "http://a/x", "on_reject": "maybe"}}, "block"),
        ({"reviewer": {"url": "http://a/x"}}, "Extra inputs"),
    ]
    for section, message in bad:
        with pytest.raises(ValidationError) as caught:
            AgentsSection.model_validate(section)
        assert message in str(caught.value), (section, str(caught.value))
    ok = AgentsSection.model_validate({"plan_review": {"url": "https://pm.lan:8100/review", "token_env": "PM"},
                                       "verify": {"entry_point": "jjeco.hooks:verify", "mode": "fail-closed"}})
    assert set(ok.configured()) == {"plan_review", "verify"}
    assert ok.plan_review is not None and ok.plan_review.on_reject == "block"


def test_consult_is_bounded_even_when_the_server_never_answers() -> None:
    async def run() -> float:
        with serving(slow(10, {"decision": "approve"})) as server:
            started = time.monotonic()
            await consult("plan_review", review(server.url, timeout_s=1), PLAN)
            return time.monotonic() - started
    assert asyncio.run(run()) < 1.6
