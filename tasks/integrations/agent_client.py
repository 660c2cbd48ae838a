"""Calling one agent hook: an HTTP endpoint (POST JSON, read JSON back) or a Python entry point.

The hook's ``timeout_s`` is the budget of the whole call, its retry included: a hanging agent
costs at most that, and a retry happens only after a quick failure (a refused connection, a
5xx, garbage) while time is left. Every failure becomes ``AgentCallFailed`` with a short reason
that never holds the token nor the agent's raw answer: the caller decides what it means
(fail-open or fail-closed).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from model.agents import AgentHook
from model.errors import AddressNotAllowed
from tasks.integrations.netpolicy import check_url_allowed
from tasks.integrations.request_errors import network_cause

RETRY_PAUSE_S = 0.2


class AgentCallFailed(Exception):
    """The agent gave no usable answer: ``reason`` says why (timeout, HTTP 500, not JSON, down)."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class AgentAnswer:
    body: dict
    attempts: int


async def call_agent(hook: AgentHook, payload: dict, *, token: str | None = None,
                     transport: httpx.AsyncBaseTransport | None = None) -> AgentAnswer:
    """The agent's JSON object answer; raises AgentCallFailed once the budget or the retry is spent."""
    deadline = time.monotonic() + hook.timeout_s
    attempt, reason = 0, "no attempt made"
    while attempt <= hook.retries:
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            async with asyncio.timeout(left):
                body = _json_object(await (_post(hook, payload, token, left, transport) if hook.url
                                           else _call_entry_point(hook, payload)))
            return AgentAnswer(body, attempt)
        except TimeoutError:
            reason = f"no answer within {hook.timeout_s:g} s"
            break  # the budget is spent: no retry
        except _Permanent as exc:
            raise AgentCallFailed(str(exc), attempt) from None
        except _Retryable as exc:
            reason = str(exc)
        if attempt <= hook.retries:
            await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
    raise AgentCallFailed(reason, attempt)


class _Retryable(Exception):
    pass


class _Permanent(Exception):
    """Retrying cannot help: a bad entry point, an address the policy forbids, a 4xx."""


async def _post(hook: AgentHook, payload: dict, token: str | None, timeout_s: float,
                transport: httpx.AsyncBaseTransport | None) -> Any:
    assert hook.url is not None
    try:
        await asyncio.to_thread(check_url_allowed, "agent", hook.url)
    except AddressNotAllowed as exc:
        raise _Permanent(str(exc)) from None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport, trust_env=False) as client:
            response = await client.post(hook.url, json=payload, headers=headers)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:  # its text may hold the URL only; the cause in a few words is enough
        raise _Retryable(f"unreachable: {network_cause(str(exc)) or type(exc).__name__}") from None
    if response.status_code >= 500:
        raise _Retryable(f"HTTP {response.status_code} from the agent")
    if response.status_code >= 400:
        hint = " (check its token)" if response.status_code in (401, 403) else ""
        raise _Permanent(f"HTTP {response.status_code} from the agent{hint}")
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Retryable(f"the answer is not JSON ({len(response.content)} bytes)") from None


async def _call_entry_point(hook: AgentHook, payload: dict) -> Any:
    """A coroutine function is awaited; a plain one runs in a thread (a hung one is abandoned,
    not waited for, once the budget is spent)."""
    function = _load(hook.entry_point or "")
    try:
        if inspect.iscoroutinefunction(function):
            return await function(payload)
        return await asyncio.to_thread(function, payload)
    except Exception as exc:
        raise _Retryable(f"the agent raised {type(exc).__name__}") from None


def _load(entry_point: str) -> Callable[[dict], Any]:
    module_name, _, name = entry_point.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except ImportError as exc:
        raise _Permanent(f"cannot import {module_name}: {exc}") from None
    except AttributeError:
        raise _Permanent(f"{module_name} has no {name}") from None
    if not callable(function):
        raise _Permanent(f"{entry_point} is not callable")
    return function


def _json_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _Retryable(f"the answer is a {type(body).__name__}, not a JSON object")
    return body
