"""``homelab approve`` and ``homelab pending``: answer the approval gate of a paused deploy from
the command line, the same form the Prefect UI shows."""

from __future__ import annotations

import asyncio
import getpass
import socket
import uuid
from typing import Annotated

import typer

from deployments.cli.app import app
from deployments.cli.common import JsonOption, emit, fail, prefect_api, table
from model.errors import UsageError


@app.command()
def approve(run_id: Annotated[str, typer.Argument(help="the paused flow run's id (see `homelab pending`)")],
            reject: Annotated[bool, typer.Option("--reject", help="reject: production stays untouched")] = False,
            reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit log)")] = "",
            approver: Annotated[str | None, typer.Option("--approver", help="who answers (default user@host)")] = None,
            phase: Annotated[list[str] | None, typer.Option("--phase", help="allow only these production phases")]
            = None) -> None:
    """Answer a deploy that waits for approval (approve, or --reject)."""
    try:
        flow_run_id = uuid.UUID(run_id)
    except ValueError:
        raise fail(UsageError(f"{run_id!r} is not a flow run id")) from None
    prefect_api()
    who = approver or f"{getpass.getuser()}@{socket.gethostname()}"
    answer = {"approve": not reject, "reason": reason, "approver": who, "phases": phase or None}
    try:
        asyncio.run(_resume(flow_run_id, answer))
    except UsageError as exc:
        raise fail(exc) from None
    print(f"{'rejected' if reject else 'approved'}: flow run {flow_run_id}")


async def _resume(flow_run_id: uuid.UUID, answer: dict) -> None:
    from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
    from prefect.flow_runs import NotPausedError, aresume_flow_run

    try:
        await aresume_flow_run(flow_run_id, run_input=answer)
    except ObjectNotFound:
        raise UsageError(f"no flow run {flow_run_id}") from None
    except NotPausedError:
        raise UsageError(f"flow run {flow_run_id} is not waiting for approval") from None
    except FlowPauseTimeout:
        raise UsageError(f"flow run {flow_run_id} waited too long: it can no longer be approved") from None
    except RuntimeError as exc:  # the server refused the answer (e.g. it does not fit the form)
        raise UsageError(f"flow run {flow_run_id}: {exc}") from None


@app.command()
def pending(as_json: JsonOption = False) -> None:
    """The deploys waiting for approval, oldest first."""
    prefect_api()
    runs = asyncio.run(_pending())
    if as_json:
        emit({"runs": runs})
        return
    if not runs:
        print("no deploy waits for approval")
        return
    print(table([[r["flow_run_id"], r["created"], r["summary"]] for r in runs], ["FLOW RUN", "CREATED", "SUMMARY"]))


async def _pending() -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.approval import PAUSE_KEY, SUMMARY_KEY

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_ASC, limit=200)
        waiting = [r for r in runs if r.state and r.state.state_details.pause_key == PAUSE_KEY]
        summaries = await asyncio.gather(*(_summary(client, r.id, SUMMARY_KEY) for r in waiting))
    return [{"flow_run_id": str(r.id), "created": r.created.isoformat() if r.created else None, "summary": summary}
            for r, summary in zip(waiting, summaries, strict=True)]


async def _summary(client: object, flow_run_id: uuid.UUID, key: str) -> str:
    try:
        return str(await client.read_flow_run_input(flow_run_id, key))  # type: ignore[attr-defined]
    except Exception:  # an older run without one still shows up
        return "(no summary)"
