"""deploy-homelab: the release pipeline (staging, smoke tests, approval) around the phased,
health-gated deploy (``flows/pipeline.py``, ``flows/locked_deploy.py``)."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows.pipeline import release
from model.approval import Environment
from model.desired import load_desired_state
from model.policies import FailurePolicy


@flow(name="deploy-homelab", persist_result=False, validate_parameters=True)
async def deploy_homelab(inventory: str = "deployments/homelab.yaml", ref: str | None = None,
                         only: list[str] | None = None, prune: bool = False,
                         on_failure: FailurePolicy | None = None, refresh_images: bool = False,
                         lock_wait_s: float = 90, environment: Environment = "production",
                         skip_staging: bool = False, yes: bool = False) -> dict | State:
    """Deploy the inventory (at git ``ref`` if given); only the stacks in ``only`` if given.
    ``refresh_images`` pulls every stack's images first and updates those whose tags moved.
    ``environment=staging`` stops after the staging copies' smoke tests; ``yes`` answers the
    approval gate of a manual run (audited); ``skip_staging`` goes straight to the gate (audited)."""
    desired = load_desired_state(inventory, ref, only)
    return await release(desired, environment=environment, skip_staging=skip_staging, yes=yes, full=not only,
                         prune=prune, on_failure=on_failure, refresh_images=refresh_images, lock_wait_s=lock_wait_s)
