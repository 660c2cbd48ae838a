"""Consulting the inventory's agents (``agents:``) and turning each call into one decision the
run acts on, whatever the agent did.

- ``plan_review`` -> approve | concerns | reject
- ``verify`` -> pass | fail
- ``notify`` -> rewrite | keep

A call that fails (timeout, crash, garbage, HTTP 500, down) is decided by the hook's mode:
``fail-open`` acts as approve / pass / keep, ``fail-closed`` as reject / fail. Either way the run
goes on, and the decision is logged, audited and counted (``homelab_agent_hook_calls_total``).
Agent text is masked and cut before it is kept anywhere.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace

from model.agents import AgentHook, HookName
from model.masking import MASKER
from tasks.engine import audit, metrics
from tasks.integrations.agent_client import AgentCallFailed, call_agent

log = logging.getLogger("homelab.agents")

TEXT_LIMIT = 2000
ANSWERS: dict[HookName, tuple[str, ...]] = {"plan_review": ("approve", "concerns", "reject"),
                                            "verify": ("pass", "fail"), "notify": ("rewrite", "keep")}
WHEN_FAILED = {"plan_review": {"fail-open": "approve", "fail-closed": "reject"},
               "verify": {"fail-open": "pass", "fail-closed": "fail"},
               "notify": {"fail-open": "keep", "fail-closed": "keep"}}


@dataclass(frozen=True)
class HookDecision:
    hook: HookName
    agent: str
    decision: str  # what the run acts on
    text: str = ""  # the agent's concerns, reason or rewritten notice (masked, cut)
    details: str | None = None  # notify: rewritten details, if the agent gave them
    failure: str | None = None  # why the call gave no usable answer
    outcome: str = "answered"  # answered | failed-open | failed-closed
    attempts: int = 1
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        who = f"{self.hook} ({self.agent})" if self.agent else self.hook
        if self.failure:
            return f"{who} failed ({self.failure}); {self.outcome}: {self.decision}"
        return f"{who}: {self.decision}" + (f": {self.text}" if self.text and self.hook != "notify" else "")


async def consult(name: HookName, hook: AgentHook, payload: dict, **audit_fields: object) -> HookDecision:
    """Call the agent and return what the run does; never raises for anything the agent does."""
    started = time.monotonic()
    try:
        token = await hook_token(hook)
        answer = await call_agent(hook, {"hook": name, **payload}, token=token)
        decision = read_answer(name, hook, answer.body, answer.attempts)
    except AgentCallFailed as exc:
        decision = failed(name, hook, exc.reason, exc.attempts)
    except TokenMissing as exc:
        decision = failed(name, hook, str(exc), 0)
    decision = _timed(decision, time.monotonic() - started)
    _record(decision, audit_fields)
    return decision


def read_answer(name: HookName, hook: AgentHook, body: dict, attempts: int = 1) -> HookDecision:
    """The agent's JSON answer as a decision; an answer outside the contract is a failed call."""
    if name == "notify":
        text, details = body.get("text"), body.get("details")
        if text is None and details is None:
            return HookDecision(name, hook.agent, "keep", attempts=attempts)
        if not isinstance(text, str | None) or not isinstance(details, str | None) or text == "":
            return failed(name, hook, "`text` and `details` must be non-empty strings", attempts)
        return HookDecision(name, hook.agent, "rewrite", _clean(text or ""),
                            details=_clean(details) if details is not None else None, attempts=attempts)
    decision = body.get("decision")
    if decision not in ANSWERS[name]:
        shown = decision if isinstance(decision, str) and len(decision) < 40 else type(decision).__name__
        return failed(name, hook, f"`decision` must be one of {', '.join(ANSWERS[name])}, not {shown!r}", attempts)
    text = body.get("text", body.get("reason", ""))
    return HookDecision(name, hook.agent, decision, _clean(text if isinstance(text, str) else str(text)),
                        attempts=attempts)


def failed(name: HookName, hook: AgentHook, reason: str, attempts: int) -> HookDecision:
    return HookDecision(name, hook.agent, WHEN_FAILED[name][hook.mode], failure=_clean(reason),
                        outcome="failed-closed" if hook.mode == "fail-closed" else "failed-open", attempts=attempts)


class TokenMissing(Exception):
    pass


async def hook_token(hook: AgentHook) -> str | None:
    """The bearer token from the environment or a Prefect Secret block; registered with the masker."""
    token: str | None = None
    if hook.token_env:
        token = os.environ.get(hook.token_env)
        if not token:
            raise TokenMissing(f"the token variable {hook.token_env} is not set")
    elif hook.token_block:
        from prefect.blocks.system import Secret

        try:
            block = await Secret.aload(hook.token_block)
        except Exception as exc:  # not found, or the API is down: the hook failed, the run goes on
            raise TokenMissing(f"no Secret block {hook.token_block!r} ({type(exc).__name__})") from None
        token = str(block.get())
    if token:
        MASKER.add(token)
    return token


def _clean(text: str) -> str:
    return MASKER.mask(text)[:TEXT_LIMIT]


def _timed(decision: HookDecision, seconds: float) -> HookDecision:
    return replace(decision, seconds=round(seconds, 3))


def _record(decision: HookDecision, audit_fields: dict) -> None:
    (log.warning if decision.failure else log.info)("agent hook %s", decision.describe())
    metrics.record_agent_hook(decision.hook, decision.decision, decision.outcome, decision.seconds)
    fields = {k: v for k, v in decision.to_json().items() if k not in ("text", "details")}
    audit.append("agent.decided", **audit_fields, **fields,
                 **({"text": decision.text[:500]} if decision.text and decision.hook != "notify" else {}))
