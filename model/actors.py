"""Who did it: the actor string every audit record carries.

"cli:<user>" (someone at a shell), "webhook:<delivery id>" (a GitHub push), "schedule:<deployment>"
(the nightly run), "ui:<deployment>" (a run started from the Prefect UI or API), "agent:<deployment>"
(a run the DeploymentOrchestratorAgent started), "approver:<name>"
(an answer to an approval gate).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable

from model.triggers import AGENT_TAG, NIGHTLY_TAG, WEBHOOK_TAG

ACTOR_ENV = "HOMELAB_ACTOR"
DELIVERY_TAG_PREFIX = "github-delivery:"  # the webhook receiver's tag carrying X-GitHub-Delivery


def cli(user: str) -> str:
    return f"cli:{user}"


def webhook(delivery: str) -> str:
    return f"webhook:{delivery}"


def schedule(deployment: str) -> str:
    return f"schedule:{deployment}"


def ui(deployment: str) -> str:
    return f"ui:{deployment}"


def agent(deployment: str) -> str:
    return f"agent:{deployment}"


def approver(name: str) -> str:
    return f"approver:{name}"


def current_user() -> str:
    """The login name; the uid where there is none (a container without a passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid{os.getuid()}"


def default_actor() -> str:
    """HOMELAB_ACTOR if set (a service names itself), else the person at this shell."""
    return os.environ.get(ACTOR_ENV) or cli(current_user())


def actor_for_run(tags: Iterable[str], deployment_name: str | None, user: str) -> str:
    """The actor of a flow run, from its tags (see model/triggers.py): the nightly schedule, a
    webhook delivery, a deployment run started by hand (UI or API), else the CLI user."""
    found = list(tags)
    if NIGHTLY_TAG in found:
        return schedule(deployment_name or NIGHTLY_TAG)
    if WEBHOOK_TAG in found:
        delivery = next((t.removeprefix(DELIVERY_TAG_PREFIX) for t in found if t.startswith(DELIVERY_TAG_PREFIX)),
                        "")
        return webhook(delivery or "unknown")
    if AGENT_TAG in found:
        return agent(deployment_name or "unknown")
    if deployment_name:
        return ui(deployment_name)
    return cli(user)
