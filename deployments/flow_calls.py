"""Running a command's work in this process, as one ``Outcome``: the CLI does it itself, or the
control process does it for the CLI over its socket. Either way the CLI prints the same thing.

``deploy`` is a flow run (tracked by the Prefect server); ``plan`` and ``status`` call the
engine directly, as they always did.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from model.errors import DeployFailed, HomelabError


@dataclass(frozen=True)
class Outcome:
    """What a command produced: a result (report JSON) or an error, and its exit code."""

    exit_code: int
    result: dict | None = None
    error: str | None = None
    flow_run_id: str | None = None
    ui: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Outcome:
        return cls(**{k: data.get(k) for k in ("exit_code", "result", "error", "flow_run_id", "ui")})


def ui_link(api_url: str, flow_run_id: str | None) -> str | None:
    return api_url.removesuffix("/api") + f"/runs/flow-run/{flow_run_id}" if flow_run_id else None


def error_outcome(exc: BaseException, **where: str | None) -> Outcome:
    return Outcome(exit_code=getattr(exc, "exit_code", 1), error=str(exc) or type(exc).__name__, **where)


async def deploy(api_url: str, params: dict) -> Outcome:
    """Run deploy-homelab in this process's event loop; a report even when it failed."""
    from flows.deploy import deploy_homelab

    state = await deploy_homelab(**params, return_state=True)
    value = await state.aresult(raise_on_failure=False)
    run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    where = {"flow_run_id": run_id, "ui": ui_link(api_url, run_id)}
    if isinstance(value, DeployFailed):
        return Outcome(exit_code=1, result=value.report.to_json(), **where)
    if isinstance(value, dict):
        return Outcome(exit_code=RESULT_EXIT.get(value.get("result"), 1), result=value, **where)
    if isinstance(value, BaseException):
        return error_outcome(value, **where)
    return Outcome(exit_code=1, error=f"unexpected flow result: {value!r}", **where)


RESULT_EXIT = {"success": 0, "not-approved": 7}  # a rejected or timed-out approval: production untouched


async def plan(inventory: Path, ref: str | None, only: list[str] | None, refresh_images: bool) -> Outcome:
    from model.desired import load_desired_state
    from tasks.engine.preview import preview_plan

    try:
        planned = await preview_plan(load_desired_state(inventory, ref, only or None), full=not only,
                                     refresh_images=refresh_images)
    except HomelabError as exc:
        return error_outcome(exc)
    return Outcome(exit_code=0, result=planned.to_json())


async def status(inventory: Path) -> Outcome:
    from model.desired import load_desired_state
    from tasks.engine.status import collect_status

    try:
        result = await collect_status(load_desired_state(inventory))
    except HomelabError as exc:
        return error_outcome(exc)
    bad = any(not f["reachable"] or not all(s["healthy"] for s in f["stacks"].values())
              for f in result["hosts"].values())
    return Outcome(exit_code=1 if bad else 0, result=result)


def console_level(verbose: bool) -> None:
    """The remote command log goes to the Prefect UI always, to the terminal only with -v."""
    from prefect.logging.handlers import PrefectConsoleHandler

    level = logging.INFO if verbose else logging.WARNING
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "homelab"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(level)
