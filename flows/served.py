"""The flows that ``homelab serve`` registers as deployments: ``deploy``, ``nightly``,
``rollback`` and ``secrets-sync``.

They take no inventory parameter: the control process pins one inventory for all of its runs
(``HOMELAB_SERVED_INVENTORY``, which its flow-run processes inherit), so nothing typed into the
UI or sent by a webhook can aim a deploy at another file. Their parameters carry titles and
descriptions, which the Prefect UI renders as the run form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from flows.deploy import deploy_homelab
from flows.reporting import publish_plan
from flows.rollback import rollback_homelab
from flows.secrets import sync_secrets
from model.approval import Environment
from model.desired import load_desired_state
from model.policies import FailurePolicy
from model.source import default_branch
from tasks.engine.preview import preview_plan

PINNED_INVENTORY_ENV = "HOMELAB_SERVED_INVENTORY"



def param(default: object, title: str, description: str) -> Any:
    """A parameter as the UI's run form shows it. Prefect takes the description from a Field
    default and names the field after the parameter, so the title goes in json_schema_extra."""
    return Field(default, description=description, json_schema_extra={"title": title})


REF = param(None, "Git ref", "Commit, tag or branch of the config repo. Empty: the config repo's default branch.")
ONLY = param(None, "Only these stacks", "Limit the run to these stacks (never removes others). Empty: every stack.")
ON_FAILURE = param(None, "Failure policy", "Override every phase's policy for this run: halt, rollback-phase, "
                                           "rollback-all or continue. Empty: each phase's own (halt by default).")
DRY_RUN = param(False, "Dry run", "Only plan: contact the hosts, change nothing, publish the plan as an artifact.")
ENVIRONMENT = param("production", "Environment", "production: stage the changed stacks, run their smoke tests, ask "
                                                 "for approval, then deploy production. staging: stop after the tests.")
SKIP_STAGING = param(False, "Skip staging", "Go straight to the approval gate, without staging or smoke tests "
                                            "(audited).")
AUTO_APPROVE = param(False, "Approve without waiting", "Pass the approval gate, as `homelab deploy --yes` does "
                                                       "(audited). Only manual and agent runs may; the nightly "
                                                       "and webhook runs never skip the gate this way.")
REFRESH_IMAGES = param(False, "Refresh images", "Pull every stack's images first; stacks whose tags moved are "
                                                "updated.")


def pinned_inventory() -> str:
    """The inventory this control process serves; a run cannot choose another."""
    return os.environ.get(PINNED_INVENTORY_ENV) or os.environ.get("HOMELAB_INVENTORY") or "deployments/homelab.yaml"


def resolve_ref(inventory: str, ref: str | None) -> str | None:
    """An empty ref means the default branch (the nightly's target), not whatever is checked out."""
    return ref or default_branch(Path(inventory))


@flow(name="deploy-homelab", persist_result=False, validate_parameters=True)
async def deploy(ref: str | None = REF, only: list[str] | None = ONLY, on_failure: FailurePolicy | None = ON_FAILURE,
                 dry_run: bool = DRY_RUN, refresh_images: bool = REFRESH_IMAGES,
                 environment: Environment = ENVIRONMENT, skip_staging: bool = SKIP_STAGING,
                 auto_approve: bool = AUTO_APPROVE) -> dict | State:
    """Deploy the served inventory at ``ref``: staging and its smoke tests, approval, then the
    production phases in order, health-gated."""
    inventory = pinned_inventory()
    ref = resolve_ref(inventory, ref)
    if dry_run:
        return await plan_only(inventory, ref, only, refresh_images)
    return await deploy_homelab.fn(inventory=inventory, ref=ref, only=only or None, on_failure=on_failure,
                                   refresh_images=refresh_images, environment=environment, skip_staging=skip_staging,
                                   yes=auto_approve)


async def plan_only(inventory: str, ref: str | None, only: list[str] | None, refresh_images: bool) -> dict:
    """The dry run: the plan as an artifact and as the result; no lock taken, nothing changed."""
    desired = load_desired_state(inventory, ref, only or None)
    plan = await preview_plan(desired, full=not only, refresh_images=refresh_images)
    await publish_plan(plan)
    return {"result": "planned", "flow_run_id": str(flow_run.get_id()), "commit": desired.commit,
            "stacks": [c.to_dict() for c in plan.changes]}


@flow(name="rollback-homelab", persist_result=False, validate_parameters=True)
async def rollback(hosts: list[str] | None = param(None, "Hosts", "Roll back on these hosts. Empty: every host."),
                   stacks: list[str] | None = param(None, "Stacks", "Roll back these stacks. Empty: every stack."),
                   to_release: str | None = param(None, "Release id", "Return to this recorded release. "
                                                                      "Empty: the previous healthy one.")) -> dict:
    """Return stacks of the served inventory to a recorded release, exactly, health-gated."""
    return await rollback_homelab.fn(inventory=pinned_inventory(), hosts=hosts, stacks=stacks, to_release=to_release)


@flow(name="secrets-sync", persist_result=False)
async def secrets_sync() -> dict:
    """Rewrite every host's env files of the served inventory that drifted from Vault."""
    return await sync_secrets.fn(inventory=pinned_inventory())
