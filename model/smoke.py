"""A smoke test: one check run against a deployed stack once it is healthy.

Two forms: ``http`` (a GET from the host itself, judged by status, body and latency) and
``exec`` (a shell command in one of the stack's services, judged by its exit status).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HTTP_ONLY = ("body_contains", "body_regex", "max_latency_ms", "expect_status")
EXEC_ONLY = ("service", "expect_exit")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def http_url(value: str, field: str = "http") -> str:
    """``value`` if it is a probe URL (scheme http, explicit host and port); ValueError otherwise."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or not port:
        raise ValueError(f"`{field}` must look like http://127.0.0.1:8080/health (scheme http, explicit host "
                         f"and port), not {value!r}")
    return value


def http_endpoint(url: str) -> tuple[str, int]:
    """(host, port) of a URL that passed ``http_url``."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class SmokeCheck(_Frozen):
    """One smoke test: exactly one of ``http`` or ``exec``."""

    name: str | None = Field(None, min_length=1, description="shown in the table; default derived from the check")
    http: str | None = Field(None, description="GET this URL from the host, e.g. http://127.0.0.1:8080/")
    expect_status: int = Field(200, ge=100, le=599)
    body_contains: str | None = Field(None, min_length=1, description="the body must contain this text")
    body_regex: str | None = Field(None, min_length=1, description="re.search on the body must match")
    max_latency_ms: float | None = Field(None, gt=0, description="connect to end of body, at most this long")
    exec: str | None = Field(None, min_length=1, description="a shell command (sh -c) run in `service`")
    service: str | None = Field(None, min_length=1, description="the service `exec` runs in")
    expect_exit: int = Field(0, ge=0, le=255)
    timeout_s: float = Field(30, gt=0)

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"`body_regex` {value!r} is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_form(self) -> SmokeCheck:
        if (self.http is None) == (self.exec is None):
            raise ValueError("a smoke test needs exactly one of `http` or `exec`")
        if self.exec is not None:
            if self.service is None:
                raise ValueError("an `exec` smoke test needs `service`: the service whose container runs it")
            wrong = [f for f in HTTP_ONLY if f in self.model_fields_set]
            form, other = "exec", "http"
        else:
            wrong = [f for f in EXEC_ONLY if f in self.model_fields_set]
            form, other = "http", "exec"
        if wrong:
            many = len(wrong) > 1
            raise ValueError(f"{', '.join(f'`{f}`' for f in wrong)} only appl{'y' if many else 'ies'} to `{other}` "
                             f"smoke tests, not to `{form}` ones; remove {'them' if many else 'it'}")
        return self

    def endpoint(self) -> tuple[str, int]:
        assert self.http is not None
        return http_endpoint(self.http)

    def describe(self) -> str:
        if self.name:
            return self.name
        return f"http {self.http}" if self.http is not None else f"exec {self.service}: {self.exec}"
