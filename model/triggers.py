"""How a run was started, as the approval policy sees it: from the run's tags (a deployment's
tags are its runs' tags; the webhook receiver tags the runs it creates)."""

from __future__ import annotations

from collections.abc import Iterable

NIGHTLY_TAG = "nightly"
WEBHOOK_TAG = "webhook"
AGENT_TAG = "agent"  # runs the DeploymentOrchestratorAgent creates


def trigger_from_tags(tags: Iterable[str]) -> str:
    """manual, webhook, nightly or agent."""
    found = set(tags)
    for tag in (NIGHTLY_TAG, WEBHOOK_TAG, AGENT_TAG):
        if tag in found:
            return tag
    return "manual"
