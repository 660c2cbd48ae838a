"""The run report: its JSON shape and what counts as success."""

from __future__ import annotations

import pytest

from deployments.cli.common import table
from tasks.engine.report import DeployReport, StackResult


def result(outcome: str, **extra) -> StackResult:
    return StackResult(phase="core", host="thinkpad", stack="traefik", action="update", result=outcome, **extra)


@pytest.mark.parametrize(("outcome", "ok"), [
    ("healthy", True),
    ("unchanged", True),
    ("removed", True),
    ("kept", True),
    ("failed", False),
    ("not-run", False),
    ("something-new", False),
])
def test_stack_result_ok(outcome, ok):
    assert result(outcome).ok is ok


@pytest.mark.parametrize(("outcomes", "ok"), [
    ([], True),
    (["unchanged", "unchanged"], True),
    (["healthy", "unchanged", "removed"], True),
    (["healthy", "not-run"], False),
    (["healthy", "failed", "not-run"], False),
])
def test_report_ok(outcomes, ok):
    report = DeployReport(source="homelab.yaml", commit=None, flow_run_id=None, stacks=[result(o) for o in outcomes])
    assert report.ok is ok
    assert report.to_json()["result"] == ("success" if ok else "failed")


def test_report_json_fields():
    report = DeployReport(
        source="homelab.yaml@v2", commit="abc123", flow_run_id="0f9e8d7c-run",
        stacks=[
            result("healthy", duration_s=12.34567, release="R1", reason="config changed"),
            StackResult(phase="apps", host="rtx1080", stack="media", action="update", result="failed",
                        duration_s=30.0001, error="not healthy", logs="media-web-1 | boom",
                        probe_output="http ...: got 503"),
            StackResult(phase="edge", host="vps", stack="newsletter", action="create", result="not-run"),
        ],
        remote_seconds={"deploy": {"thinkpad": 1.5}}, wall_s=42.123456)
    out = report.to_json()
    assert out["result"] == "failed"
    assert out["flow_run_id"] == "0f9e8d7c-run"
    assert (out["source"], out["commit"], out["wall_s"]) == ("homelab.yaml@v2", "abc123", 42.123)
    assert out["stacks"][0] == {"phase": "core", "host": "thinkpad", "stack": "traefik", "action": "update",
                                "result": "healthy", "duration_s": 12.346, "reason": "config changed",
                                "release": "R1"}
    assert out["stacks"][1]["error"] == "not healthy"
    assert "logs" not in out["stacks"][1] and "probe_output" not in out["stacks"][1]
    assert out["stacks"][2] == {"phase": "edge", "host": "vps", "stack": "newsletter", "action": "create",
                                "result": "not-run", "duration_s": 0.0, "reason": ""}
    assert out["failures"] == [{"phase": "apps", "host": "rtx1080", "stack": "media", "error": "not healthy",
                                "probe_output": "http ...: got 503", "logs": "media-web-1 | boom"}]
    assert out["remote_seconds"] == {"deploy": {"thinkpad": 1.5}}
    for stack in out["stacks"]:
        assert {"phase", "host", "stack", "action", "result", "duration_s"} <= set(stack)


def test_summary_and_markdown():
    report = DeployReport(source="homelab.yaml", commit="abc", flow_run_id=None, stacks=[
        result("unchanged"), result("unchanged"),
        StackResult(phase="apps", host="rtx1080", stack="media", action="update", result="failed",
                    error="exited | code 1\nsee logs")])
    assert report.summary() == "FAILED: 1 failed, 2 unchanged"
    md = report.markdown()
    assert md.startswith("# Deploy FAILED: 1 failed, 2 unchanged\n")
    assert "| apps | rtx1080 | media | update | failed | 0.0 | exited \\| code 1 see logs |" in md
    assert "## media on rtx1080 failed" in md
    assert DeployReport(source="x", commit=None, stacks=[result("unchanged")]).summary() == "success: 1 unchanged"


def test_table():
    assert table([["vps", "ok"], ["thinkpad", "failed"]], ["host", "result"]).splitlines() == [
        "host      result", "--------  ------", "vps       ok    ", "thinkpad  failed"]
