"""The one error type of the notification channels."""

from __future__ import annotations

from model.errors import HomelabError


class NotifyError(HomelabError):
    """Sending a notification failed, or a channel is half configured. The message names the
    channel, the server and what to do next; never a bot token or a password (it is masked)."""

    def __init__(self, message: str, *, channel: str, http_status: int | None = None, cause: str = "",
                 retry_after: float | None = None):
        self.channel = channel
        self.http_status = http_status
        self.cause = cause
        self.retry_after = retry_after
        super().__init__(message)
