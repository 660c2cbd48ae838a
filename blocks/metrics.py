"""The Prefect Block for the Pushgateway that deploy runs push their metrics to."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.integrations.pushgateway import DEFAULT_JOB, DEFAULT_TIMEOUT_S, PUSHGATEWAY_BLOCK, PushTarget


class PushgatewayTarget(Block):
    """A Prometheus Pushgateway, with optional basic auth."""

    _block_type_name = PUSHGATEWAY_BLOCK
    _description = "Where homelab deploy runs push their metrics."

    url: str = Field(description='Base URL, "http://thinkpad:9091".')
    username: str | None = Field(default=None, description="Basic-auth user; empty: no auth.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password.")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, description="One push's time limit, in seconds.")

    def target(self, job: str = DEFAULT_JOB) -> PushTarget:
        return PushTarget(url=self.url.strip(), job=job, timeout_s=self.timeout_s, username=self.username or None,
                          password=self.password.get_secret_value() if self.password else None)
