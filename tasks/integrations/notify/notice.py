"""What the flows tell people: a notice (pure data)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    STARTED = "started"
    APPROVAL_NEEDED = "approval-needed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    NOT_APPROVED = "not-approved"


@dataclass(frozen=True)
class Notice:
    """One event of a run, for every configured channel. All text is masked when it is formatted."""

    kind: Kind
    title: str  # "deploy-homelab production @ 3f2c1a9"
    summary: str = ""  # a line or two: what happened, what to do
    details: str = ""  # failing stack, probe output, log tail; trimmed to its end when too long
    link: str | None = None  # the flow run in the Prefect UI

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))  # "failed" is accepted as Kind.FAILED
