"""Pushing a registry to a Prometheus Pushgateway: where to (URL, job, basic auth, time limit)
and the push itself. No Prefect here: the block lives in ``blocks/metrics.py``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from model.errors import HomelabError
from tasks.integrations.netpolicy import check_url_allowed
from tasks.integrations.request_errors import network_cause, reason_text

PUSHGATEWAY_BLOCK = "Homelab Pushgateway"
PUSHGATEWAY_URL_ENV = "HOMELAB_PUSHGATEWAY_URL"
DEFAULT_JOB = "homelab"
DEFAULT_TIMEOUT_S = 2.0


class PushFailed(HomelabError):
    """A push did not reach the Pushgateway; the run goes on without it."""


@dataclass(frozen=True)
class PushTarget:
    url: str
    job: str = DEFAULT_JOB
    timeout_s: float = DEFAULT_TIMEOUT_S
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def target_from_env(env: Mapping[str, str] = os.environ, *, job: str = DEFAULT_JOB,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> PushTarget | None:
    url = env.get(PUSHGATEWAY_URL_ENV, "").strip()
    return PushTarget(url=url, job=job, timeout_s=timeout_s) if url else None


def push(target: PushTarget, registry: CollectorRegistry, grouping_key: Mapping[str, str]) -> None:
    """Replace the group's metrics with ``registry`` (HTTP PUT). Raises PushFailed."""
    try:
        check_url_allowed("pushgateway", target.url)
        push_to_gateway(target.url, job=target.job, registry=registry, grouping_key=dict(grouping_key),
                        timeout=target.timeout_s, handler=_handler(target))
    except HomelabError as exc:
        raise PushFailed(str(exc)) from None
    except Exception as exc:  # urllib's errors, a timeout, a bad URL: one line, no request data
        text = reason_text(exc)
        cause = network_cause(text) or text or type(exc).__name__
        raise PushFailed(f"pushgateway {target.url}: {cause}") from None


def _handler(target: PushTarget):
    if not target.username:
        return default_handler

    def handler(url: str, method: str, timeout: float | None, headers: list, data: bytes):
        return basic_auth_handler(url, method, timeout, headers, data, target.username, target.password)

    return handler
