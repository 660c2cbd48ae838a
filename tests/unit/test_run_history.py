"""``homelab history``'s rows from constructed Prefect objects, and the run summary they read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.schemas.objects import Artifact, FlowRun, State, StateType

from deployments.cli.history import _text
from flows.reporting import run_summary
from tasks.engine.run_history import RUN_SUMMARY_KEY, history_rows, run_result

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def flow_run(state: State | None = None, *, tags: tuple[str, ...] = (), parameters: dict | None = None,
             start: datetime | None = T0, end: datetime | None = T0 + timedelta(seconds=42.5),
             **extra: object) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter", tags=list(tags),
                   parameters={"ref": "v2", "environment": "production"} if parameters is None else parameters,
                   state=state or State(type=StateType.COMPLETED, name="Completed"),
                   start_time=start, end_time=end, **extra)


def summary(run: FlowRun, row: dict | str, created: datetime | None = None) -> Artifact:
    return Artifact(key=RUN_SUMMARY_KEY, type="table", flow_run_id=run.id, created=created,
                    data=row if isinstance(row, str) else json.dumps([row]))


CHANGED = [{"host": "rtx1080", "stack": "media", "action": "update", "result": "failed",
            "from_release": "20260301T110000Z-aaaaaa", "to_release": "20260301T120001Z-bbbbbb"}]


@pytest.mark.parametrize(("state_type", "name", "expected"), [
    (StateType.COMPLETED, "Completed", "success"),
    (StateType.COMPLETED, "NotApproved", "not-approved"),
    (StateType.FAILED, "Failed", "failed"),
    (StateType.CRASHED, "Crashed", "failed"),
    (StateType.CANCELLED, "Cancelled", "cancelled"),
    (StateType.CANCELLING, "Cancelling", "cancelled"),
    (StateType.RUNNING, "Running", "running"),
    (StateType.PAUSED, "Paused", "paused"),
    (StateType.PAUSED, "Suspended", "paused"),
    (StateType.SCHEDULED, "Scheduled", "scheduled"),
    (StateType.PENDING, "Pending", "pending"),
])
def test_result_from_the_state(state_type, name, expected):
    assert run_result(State(type=state_type, name=name)) == expected
    run = flow_run(State(type=state_type, name=name))
    assert history_rows([run], [])[0]["result"] == expected


def test_result_of_a_run_without_state():
    assert run_result(None) == "unknown"


def test_a_row_joins_the_run_and_its_summary():
    run = flow_run(State(type=StateType.FAILED, name="Failed"), tags=("webhook", "homelab"),
                   parameters={"ref": "v3-broken", "environment": "production", "inventory": "x.yaml"})
    rows = history_rows([run], [summary(run, {"commit": "c0ffee" * 6, "source": "homelab.yaml@v3-broken",
                                              "environment": "production", "trigger": "webhook",
                                              "result": "failed", "duration_s": 41.0, "changed": CHANGED})])
    assert rows == [{"flow_run_id": str(run.id), "started": "2026-03-01T12:00:00+00:00", "trigger": "webhook",
                     "ref": "v3-broken", "commit": "c0ffee" * 6, "environment": "production", "result": "failed",
                     "duration_s": 42.5, "changed": ["rtx1080/media update->failed"]}]
    assert _text(rows[0]) == [str(run.id)[:8], "2026-03-01 12:00:00", "webhook", "v3-broken", "c0ffeec0ffee",
                              "production", "failed", "42.5s", "rtx1080/media update->failed"]


@pytest.mark.parametrize(("tags", "trigger"), [((), "manual"), (("webhook",), "webhook"),
                                               (("nightly", "webhook"), "nightly")])
def test_trigger_from_the_tags(tags, trigger):
    assert history_rows([flow_run(tags=tags)], [])[0]["trigger"] == trigger


@pytest.mark.parametrize("data", [None, "", "not json", "[]", json.dumps(["a", "b"]), json.dumps(42)])
def test_a_run_without_a_usable_summary_still_lists(data):
    run = flow_run()
    artifacts = [] if data is None else [summary(run, data)]
    row = history_rows([run], artifacts)[0]
    assert (row["commit"], row["changed"], row["result"], row["ref"]) == (None, None, "success", "v2")
    assert _text(row)[4] == "-" and _text(row)[-1] == "-"


def test_summaries_go_to_their_own_runs_and_the_newest_counts():
    first, second = flow_run(), flow_run(start=T0 + timedelta(hours=1), end=None)
    artifacts = [summary(first, {"commit": "new", "changed": []}, created=T0 + timedelta(minutes=5)),
                 summary(first, {"commit": "old", "changed": []}, created=T0 + timedelta(minutes=1)),
                 summary(second, {"commit": "other", "changed": CHANGED}),
                 Artifact(key="deploy-report", type="markdown", flow_run_id=second.id, data="# Deploy")]
    rows = history_rows([second, first], artifacts)
    assert [r["flow_run_id"] for r in rows] == [str(second.id), str(first.id)]  # the order given
    assert [r["commit"] for r in rows] == ["other", "new"]
    assert rows[1]["changed"] == [] and _text(rows[1])[-1] == "(none)"


def test_duration_and_start_fallbacks():
    running = flow_run(State(type=StateType.RUNNING, name="Running"), end=None)
    timed = flow_run(start=None, end=None, total_run_time=timedelta(seconds=7),
                     expected_start_time=T0 - timedelta(days=1))
    never = flow_run(State(type=StateType.SCHEDULED, name="Scheduled"), start=None, end=None)
    rows = history_rows([running, timed, never], [])
    assert [r["duration_s"] for r in rows] == [None, 7.0, None]
    assert rows[1]["started"] == "2026-02-28T12:00:00+00:00"
    assert rows[2]["started"] is None and _text(rows[2])[1] == "-" and _text(rows[2])[7] == "-"


def test_environment_falls_back_to_the_summary_and_ref_none_is_the_working_tree():
    run = flow_run(parameters={})
    row = history_rows([run], [summary(run, {"environment": "staging", "changed": []})])[0]
    assert (row["environment"], row["ref"]) == ("staging", None)
    assert _text(row)[3] == "(working tree)"


def test_run_summary_lists_only_the_stacks_it_touched():
    report = {"result": "failed", "flow_run_id": "r", "source": "homelab.yaml@v3-broken", "commit": "abc",
              "stacks": [
                  {"phase": "core", "host": "thinkpad", "stack": "traefik", "action": "unchanged",
                   "result": "unchanged", "release": "R0", "from_release": "R0"},
                  {"phase": "apps", "host": "rtx1080", "stack": "media", "action": "update", "result": "failed",
                   "release": "R2", "from_release": "R1"},
                  {"phase": "apps", "host": "vps", "stack": "newsletter", "action": "create", "result": "healthy",
                   "release": "R3"},
                  {"phase": "edge", "host": "vps", "stack": "caddy", "action": "update", "result": "not-run",
                   "release": "R4", "from_release": "R4"}]}
    out = run_summary(report, environment="production", trigger="manual", duration_s=12.34567)
    assert out == {"commit": "abc", "source": "homelab.yaml@v3-broken", "environment": "production",
                   "trigger": "manual", "result": "failed", "duration_s": 12.346, "changed": [
                       {"host": "rtx1080", "stack": "media", "action": "update", "result": "failed",
                        "from_release": "R1", "to_release": "R2"},
                       {"host": "vps", "stack": "newsletter", "action": "create", "result": "healthy",
                        "from_release": None, "to_release": "R3"}],
                   "hosts": {"thinkpad": {"traefik": "unchanged"}, "rtx1080": {"media": "failed"},
                             "vps": {"newsletter": "healthy", "caddy": "not-run"}}}


def test_run_summary_of_a_result_without_stacks():
    not_approved = {"result": "not-approved", "flow_run_id": "r", "source": "s", "commit": "c", "stacks": []}
    assert run_summary(not_approved, environment="production", trigger="nightly", duration_s=1)["changed"] == []
    assert run_summary({}, environment="staging", trigger="manual", duration_s=0) == {
        "commit": None, "source": None, "environment": "staging", "trigger": "manual", "result": "failed",
        "duration_s": 0, "changed": [], "hosts": {}}
