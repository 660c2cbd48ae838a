"""``homelab history``: the recent deploy-homelab runs as the Prefect API knows them.

Two API calls, whatever the number of runs: the flow runs, newest first, then the run-summary
artifacts of all of them in one filtered read. When, by whom and how it ended come from the flow
run itself (tags, parameters, state, times); the commit and the stacks changed from the run's
summary artifact, which the pipeline publishes at the end of every run. A run without one (it
crashed, or it is still running) is listed with "-" for both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from prefect.client.schemas.objects import Artifact, FlowRun, State, StateType

from model.errors import ServerError
from model.triggers import trigger_from_tags

DEPLOY_FLOW = "deploy-homelab"  # both in-process CLI runs and deployment runs carry this flow name
RUN_SUMMARY_KEY = "run-summary"
MAX_LIMIT = 200  # the most one Prefect API read returns
NOT_APPROVED_STATE = "NotApproved"  # the pipeline's Completed state of a rejected or timed-out run


def run_result(state: State | None) -> str:
    """success | not-approved | failed | cancelled, else the state type lowercased (running, paused, ...)."""
    if state is None:
        return "unknown"
    if state.type == StateType.COMPLETED:
        return "not-approved" if state.name == NOT_APPROVED_STATE else "success"
    if state.type in (StateType.FAILED, StateType.CRASHED):
        return "failed"
    if state.type in (StateType.CANCELLED, StateType.CANCELLING):
        return "cancelled"
    return state.type.value.lower()


def run_duration_s(run: FlowRun) -> float | None:
    if run.start_time and run.end_time:
        return round((run.end_time - run.start_time).total_seconds(), 3)
    if run.total_run_time:
        return round(run.total_run_time.total_seconds(), 3)
    return None


def summary_row(artifact: Artifact) -> dict | None:
    """The one row of a run-summary table artifact; None if it is not one (garbled, empty)."""
    data = artifact.data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if isinstance(data, list) and data and isinstance(data[-1], dict):
        return data[-1]
    return data if isinstance(data, dict) else None


def latest_summaries(summaries: Sequence[Artifact]) -> dict[str, dict]:
    """flow run id -> its summary row; of several (a run published twice) the newest counts."""
    out: dict[str, dict] = {}
    ordered = sorted(summaries, key=lambda a: a.created.timestamp() if a.created else float("-inf"))
    for artifact in ordered:
        row = summary_row(artifact) if artifact.key == RUN_SUMMARY_KEY and artifact.flow_run_id else None
        if row is not None:
            out[str(artifact.flow_run_id)] = row
    return out


def changed_line(stack: dict) -> str:
    """``host/stack action->result``."""
    return f"{stack.get('host')}/{stack.get('stack')} {stack.get('action')}->{stack.get('result')}"


def history_rows(flow_runs: Sequence[FlowRun], summaries: Sequence[Artifact]) -> list[dict]:
    """One row per run, in the order given (the API's: newest first). Stable keys: flow_run_id,
    started, trigger, ref, commit, environment, result, duration_s, changed."""
    by_run = latest_summaries(summaries)
    rows = []
    for run in flow_runs:
        summary = by_run.get(str(run.id))
        params = run.parameters or {}
        started = run.start_time or run.expected_start_time or run.created
        changed = summary.get("changed") if summary else None
        rows.append({
            "flow_run_id": str(run.id),
            "started": started.isoformat() if started else None,
            "trigger": trigger_from_tags(run.tags or []),
            "ref": params.get("ref"),
            "commit": summary.get("commit") if summary else None,
            "environment": params.get("environment") or (summary or {}).get("environment"),
            "result": run_result(run.state),
            "duration_s": run_duration_s(run),
            "changed": [changed_line(s) for s in changed if isinstance(s, dict)] if isinstance(changed, list)
            else None,  # None: no summary (not "nothing changed")
        })
    return rows


async def read_history(limit: int = 20) -> list[dict]:
    """The last ``limit`` deploy-homelab runs (1..200), newest first: one read of the runs, one
    of their summaries."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

    try:
        async with get_client() as client:
            # a scheduled run (tonight's nightly) has not happened: the API would sort it first
            runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[DEPLOY_FLOW])),
                                               flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                                   type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))),
                                               sort=FlowRunSort.START_TIME_DESC,
                                               limit=max(1, min(limit, MAX_LIMIT)))
            summaries = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[RUN_SUMMARY_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs])),
                sort=ArtifactSort.CREATED_DESC, limit=MAX_LIMIT) if runs else []
    except httpx.HTTPError as exc:
        raise ServerError(f"could not read the run history from the Prefect API: {exc}; "
                          "check PREFECT_API_URL, or start the local server with `homelab server up`") from None
    return history_rows(runs, summaries)


async def read_run_summary(client: object, flow_run_id: str) -> dict | None:
    """The run-summary row of one flow run (``client``: a Prefect client), or None if it has none."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    found = await client.read_artifacts(artifact_filter=ArtifactFilter(  # type: ignore[attr-defined]
        key=ArtifactFilterKey(any_=[RUN_SUMMARY_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return latest_summaries(found).get(str(flow_run_id))
