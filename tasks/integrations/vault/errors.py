"""The one error type of the Vault integration."""

from __future__ import annotations

from model.errors import HomelabError


class SecretsError(HomelabError):
    """Reading, writing or rendering a secret failed. The message names the Vault address, the KV
    path and the key where they are known, and what to do next. It never names a value, a token
    or a secret_id."""

    exit_code = 6

    def __init__(self, message: str, *, addr: str | None = None, path: str | None = None,
                 key: str | None = None, http_status: int | None = None, cause: str = ""):
        self.addr = addr
        self.path = path
        self.key = key
        self.http_status = http_status
        self.cause = cause
        super().__init__(message)
