"""The orchestrator as a J-Jeco agent: ``DeploymentOrchestratorAgent``.

It keeps the seed's interface, ``orchestrate_deployment(commit_hash, environment) -> dict``, and
runs every deploy as a run of the ``deploy`` deployment that ``homelab serve`` registers, so an
agent's deploy is the same flow run as a UI, webhook, CLI or nightly one: staging, smoke tests,
the approval gate, health-gated phases, rollback, audit, metrics, notices and events.

It subclasses J-Jeco's ``BaseAgent`` when that can be imported (``HOMELAB_JJECO_BASE``, default
``agents.base_agent:BaseAgent``), and otherwise a small stand-in with the same constructor and
attributes (``model``, ``temperature``, ``role``), so that it also runs without J-Jeco.

Runs it creates carry the tag ``agent``: the approval policy sees them as the ``agent`` trigger
(``approval.not_needed.triggers`` may exempt it), and ``auto_approve`` passes the gate the way
``homelab deploy --yes`` does, audited.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model.errors import UsageError
from model.triggers import AGENT_TAG

BASE_ENV = "HOMELAB_JJECO_BASE"
DEFAULT_BASE = "agents.base_agent:BaseAgent"
DEPLOY_DEPLOYMENT = "deploy-homelab/deploy"
ROLLBACK_DEPLOYMENT = "rollback-homelab/rollback"
ENVIRONMENTS = ("production", "staging")
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")  # a commit, tag or branch; never an option
STATUS = {"success": "success", "failed": "failed", "rolled-back": "rolled_back", "aborted": "aborted",
          "not-approved": "not_approved"}


class StandaloneAgent:
    """The stand-in for J-Jeco's BaseAgent: the same constructor and attributes."""

    def __init__(self, model: str = "none", temperature: float = 0.0, role: str = "", **kwargs: Any) -> None:
        self.model = model
        self.temperature = temperature
        self.role = role
        self.config = kwargs


def jjeco_base() -> type:
    """J-Jeco's BaseAgent if it can be imported, else the stand-in."""
    module_name, _, name = os.environ.get(BASE_ENV, DEFAULT_BASE).partition(":")
    try:
        base = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return StandaloneAgent
    return base if isinstance(base, type) else StandaloneAgent


def _agent_class() -> type:
    base = jjeco_base()

    class DeploymentOrchestratorAgent(base):  # type: ignore[misc, valid-type]
        """Deploys the homelab's config repo at a commit, through the ``deploy`` deployment."""

        def __init__(self, inventory: str | Path = "deployments/homelab.yaml", *, model: str = "none",
                     temperature: float = 0.0, role: str = "deployment_orchestrator", poll_s: float = 2.0,
                     wait_timeout_s: float | None = None, **kwargs: Any) -> None:
            super().__init__(model=model, temperature=temperature, role=role, **kwargs)
            self.model, self.temperature, self.role = model, temperature, role
            self.inventory = Path(inventory)
            self.poll_s = poll_s
            self.wait_timeout_s = wait_timeout_s

        # -- the seed's interface (blocking), each with an async twin ---------------------------

        def orchestrate_deployment(self, commit_hash: str, environment: str = "production", *, wait: bool = True,
                                   auto_approve: bool = False) -> dict:
            return _blocking(self.aorchestrate_deployment(commit_hash, environment, wait=wait,
                                                          auto_approve=auto_approve))

        def result(self, flow_run_id: str, *, wait: bool = True) -> dict:
            return _blocking(self.aresult(flow_run_id, wait=wait))

        def plan(self, commit_hash: str | None = None) -> dict:
            return _blocking(self.aplan(commit_hash))

        def status(self) -> dict:
            return _blocking(self.astatus())

        def rollback(self, hosts: list[str] | None = None, stacks: list[str] | None = None,
                     to_release: str | None = None, *, wait: bool = True) -> dict:
            return _blocking(self.arollback(hosts, stacks, to_release, wait=wait))

        async def aorchestrate_deployment(self, commit_hash: str, environment: str = "production", *,
                                          wait: bool = True, auto_approve: bool = False) -> dict:
            """A run of ``deploy`` at ``commit_hash``; with ``wait`` its outcome, else ``scheduled``."""
            ref = check_ref(commit_hash)
            if environment not in ENVIRONMENTS:
                raise UsageError(f"environment must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")
            self._check_served()
            run_id = await create_run(DEPLOY_DEPLOYMENT, {"ref": ref, "environment": environment,
                                                          "auto_approve": auto_approve})
            if not wait:
                return scheduled(run_id)
            return await self.aresult(run_id)

        async def aresult(self, flow_run_id: str, *, wait: bool = True) -> dict:
            """The outcome of a run this agent (or anyone) started, once it ended (with ``wait``)."""
            return await run_outcome(flow_run_id, wait=wait, poll_s=self.poll_s, timeout_s=self.wait_timeout_s)

        async def aplan(self, commit_hash: str | None = None) -> dict:
            from deployments import flow_calls

            outcome = await flow_calls.plan(self.inventory, check_ref(commit_hash) if commit_hash else None, None,
                                            False)
            return {"status": "success" if outcome.exit_code == 0 else "failed", "reason": outcome.error,
                    "plan": outcome.result}

        async def astatus(self) -> dict:
            from deployments import flow_calls

            outcome = await flow_calls.status(self.inventory)
            return {"status": "success" if outcome.exit_code == 0 else "failed", "reason": outcome.error,
                    "hosts": (outcome.result or {}).get("hosts", {})}

        async def arollback(self, hosts: list[str] | None = None, stacks: list[str] | None = None,
                            to_release: str | None = None, *, wait: bool = True) -> dict:
            self._check_served()
            run_id = await create_run(ROLLBACK_DEPLOYMENT, {"hosts": hosts, "stacks": stacks,
                                                            "to_release": to_release})
            if not wait:
                return scheduled(run_id)
            return await run_outcome(run_id, wait=True, poll_s=self.poll_s, timeout_s=self.wait_timeout_s)

        def _check_served(self) -> None:
            """The deployment deploys the inventory its control process pins: refuse a mismatch
            with the local one rather than deploy another file than the caller named."""
            from deployments.control_socket import served_inventory

            if not self.inventory.exists():
                raise UsageError(f"inventory {self.inventory} does not exist")
            served = served_inventory()
            if served is not None and served != self.inventory.resolve():
                raise UsageError(f"the local control process serves {served}, not {self.inventory.resolve()}: "
                                 f"start `homelab serve -i {self.inventory}` or give the agent that inventory")

    return DeploymentOrchestratorAgent


def check_ref(ref: str | None) -> str:
    if not isinstance(ref, str) or not REF.match(ref) or ".." in ref:
        raise UsageError(f"commit_hash must be a commit, tag or branch name, not {ref!r}")
    return ref


def scheduled(run_id: str) -> dict:
    return {"status": "scheduled", "reason": "the run was created; call result(flow_run_id) for its outcome",
            "flow_run_id": run_id, "ui_url": ui_url(run_id), "hosts": {}}


def ui_url(run_id: str) -> str | None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from deployments.flow_calls import ui_link

    ui = PREFECT_UI_URL.value()
    if ui:
        return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
    api = PREFECT_API_URL.value()
    return ui_link(api, run_id) if api else None


async def create_run(deployment: str, parameters: dict) -> str:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            found = await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise UsageError(f"no deployment {deployment} on the Prefect server: start `homelab serve`") from None
        run = await client.create_flow_run_from_deployment(found.id, parameters=parameters, tags=[AGENT_TAG])
    return str(run.id)


async def run_outcome(run_id: str, *, wait: bool, poll_s: float, timeout_s: float | None) -> dict:
    """The run's outcome in the agent's shape, from its state and its run-summary artifact."""
    from prefect.client.orchestration import get_client

    from tasks.engine.run_history import read_run_summary, run_result

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                break
            if not wait or (deadline is not None and time.monotonic() > deadline):
                state = run.state.name if run.state else "unknown"
                return {"status": "timed_out" if wait else "running",
                        "reason": f"the run is {state}", "flow_run_id": run_id, "ui_url": ui_url(run_id),
                        "hosts": {}}
            await asyncio.sleep(poll_s)
        summary = await read_run_summary(client, run_id) or {}
    result = summary.get("result") or run_result(run.state)
    status = STATUS.get(result, "aborted")  # cancelled or crashed before it reported: nothing was decided
    reason = summary.get("reason") or (run.state.message if run.state else None)
    return {"status": status, "reason": reason or None, "flow_run_id": run_id, "ui_url": ui_url(run_id),
            "hosts": summary.get("hosts", {}), "commit": summary.get("commit"),
            "state": run.state.name if run.state else None}


async def follow_deploy_events(handle: Callable[[dict], Any], *, prefix: str = "homelab.") -> None:
    """The event-driven way in: every ``homelab.*`` Prefect event as it happens (the events
    websocket of the Prefect API), handed to ``handle`` as a plain dict; ``handle`` may be async.
    Runs until cancelled. The README's "Agents that subscribe" has a worked example."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    async with get_events_subscriber(filter=EventFilter(event=EventNameFilter(prefix=[prefix]))) as events:
        async for event in events:
            flow_run = next((r.id.removeprefix("prefect.flow-run.") for r in event.related
                             if r.id.startswith("prefect.flow-run.")), None)
            handled = handle({"event": event.event, "occurred": event.occurred.isoformat(),
                              "resource": dict(event.resource), "payload": event.payload, "flow_run_id": flow_run})
            if inspect.isawaitable(handled):
                await handled


def _blocking(coroutine: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise RuntimeError("called from a running event loop: await the a-prefixed method instead "
                       "(aorchestrate_deployment, aresult, aplan, astatus, arollback)")


DeploymentOrchestratorAgent = _agent_class()
