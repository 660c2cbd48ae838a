"""The inventory's ``agents:`` section: J-Jeco agents the run consults at three points.

- ``plan_review`` (project_manager) reads the plan before the approval gate and answers
  ``approve``, ``concerns`` or ``reject``;
- ``verify`` (verifier) reads each production phase's results and answers ``pass`` or ``fail``;
- ``notify`` (communicator) may rewrite each notice before it is sent.

Each is an HTTP endpoint (JSON in, JSON out) or a Python entry point (``module:function``).
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HookName = Literal["plan_review", "verify", "notify"]
FailMode = Literal["fail-open", "fail-closed"]
ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AgentHook(BaseModel):
    """Where the agent answers, how long it may take, and what a failed call means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = Field("", description="the J-Jeco agent's name, for the report (project_manager, verifier, ...)")
    url: str | None = Field(None, description="an HTTP(S) endpoint: the run POSTs JSON and reads JSON back")
    entry_point: str | None = Field(None, description="module:function, called with the same JSON (a dict)")
    token_env: str | None = Field(None, description="environment variable holding the endpoint's bearer token")
    token_block: str | None = Field(None, description="name of a Prefect Secret block holding the bearer token")
    timeout_s: float = Field(10, gt=0, le=600, description="one call's time limit")
    retries: int = Field(1, ge=0, le=1, description="at most one retry after a failed call")
    mode: FailMode = Field("fail-open", description="fail-open: a failed call is logged and counted, the run goes "
                                                     "on; fail-closed: it counts as reject (or fail)")

    @model_validator(mode="after")
    def _one_target(self) -> AgentHook:
        if (self.url is None) == (self.entry_point is None):
            raise ValueError("an agent hook needs exactly one of `url` or `entry_point`")
        if self.token_env and self.token_block:
            raise ValueError("give the bearer token as `token_env` or `token_block`, not both")
        if self.entry_point and (self.token_env or self.token_block):
            raise ValueError("a token is sent only to a `url`; an entry point runs in the orchestrator's process")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("`url` must look like https://agents.lan:8100/plan-review (scheme http or https)")
            if parts.username or parts.password:
                raise ValueError("`url` must not carry credentials; use `token_env` or `token_block`")
        return value

    @field_validator("entry_point")
    @classmethod
    def _entry_point(cls, value: str | None) -> str | None:
        if value is not None and not ENTRY_POINT.match(value):
            raise ValueError("`entry_point` must look like package.module:function")
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError(f"`token_env` {value!r} is not an environment variable name")
        return value

    def target(self) -> str:
        """Where the hook goes, for logs and reports (a URL here never carries a secret)."""
        return self.url or f"python:{self.entry_point}"


class PlanReviewHook(AgentHook):
    on_reject: Literal["block", "annotate"] = Field(
        "block", description="block: a reject stops production (the run ends not-approved); annotate: it is shown "
                             "in the approval form and the report, and the gate decides")


class NotifyHook(AgentHook):
    """A notice is never withheld: a failed rewrite sends the orchestrator's own text, so only
    fail-open makes sense here."""

    mode: Literal["fail-open"] = Field("fail-open", description="a failed rewrite sends the original text")


class AgentsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plan_review: PlanReviewHook | None = None
    verify: AgentHook | None = None
    notify: NotifyHook | None = None

    def configured(self) -> dict[str, AgentHook]:
        return {name: hook for name in ("plan_review", "verify", "notify") if (hook := getattr(self, name))}
