"""How a run was started, as the approval policy sees it: from the run's tags (a deployment's
tags are its runs' tags; the webhook receiver tags the runs it creates)."""

from __future__ import annotations

from collections.abc import Iterable

NIGHTLY_TAG = "nightly"
WEBHOOK_TAG = "webhook"


def trigger_from_tags(tags: Iterable[str]) -> str:
    """manual, webhook or nightly."""
    found = set(tags)
    return "nightly" if NIGHTLY_TAG in found else "webhook" if WEBHOOK_TAG in found else "manual"
