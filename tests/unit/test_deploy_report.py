"""The run report: its JSON shape and what counts as success."""

from __future__ import annotations

import pytest

from deployments.cli.common import table
from model.masking import MASKER
from tasks.engine.plan import Change
from tasks.engine.report import LOG_BYTES, DeployReport, StackResult, short_release, tail_text


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
                                "release": "R1", "images_from": [], "images_to": []}
    assert out["stacks"][1]["error"] == "not healthy"
    assert "logs" not in out["stacks"][1] and "probe_output" not in out["stacks"][1]
    assert out["stacks"][2] == {"phase": "edge", "host": "vps", "stack": "newsletter", "action": "create",
                                "result": "not-run", "duration_s": 0.0, "reason": "", "images_from": [],
                                "images_to": []}
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
    assert "| apps | rtx1080 | media | update | failed | - | - | 0.0 | exited \\| code 1 see logs |" in md
    assert "## media on rtx1080 failed" in md
    assert DeployReport(source="x", commit=None, stacks=[result("unchanged")]).summary() == "success: 1 unchanged"


def test_table():
    assert table([["vps", "ok"], ["thinkpad", "failed"]], ["host", "result"]).splitlines() == [
        "host      result", "--------  ------", "vps       ok    ", "thinkpad  failed"]


OLD, NEW = "20260301T110000Z-aaaaaa", "20260301T120001Z-bbbbbb"


@pytest.mark.parametrize(("fields", "release", "image"), [
    # an update: both changed, only the changed image shown
    (dict(from_release=OLD, release=NEW, images_from=("lab-web:1", "redis:7"), images_to=("lab-web:2", "redis:7")),
     "aaaaaa \u2192 bbbbbb", "lab-web:1 \u2192 lab-web:2"),
    # a config change with the same images: the one value
    (dict(from_release=OLD, release=NEW, images_from=("lab-web:1",), images_to=("lab-web:1",)),
     "aaaaaa \u2192 bbbbbb", "lab-web:1"),
    # created: nothing before
    (dict(release=NEW, images_to=("lab-web:1",)), "- \u2192 bbbbbb", "- \u2192 lab-web:1"),
    # unchanged: the one value
    (dict(from_release=OLD, release=OLD, images_from=("lab-web:1",), images_to=("lab-web:1",)), "aaaaaa",
     "lab-web:1"),
    # an internal error before any release: the old images, nothing known of new ones
    (dict(from_release=OLD, images_from=("lab-web:1",)), "aaaaaa \u2192 -", "lab-web:1"),
    (dict(), "-", "-"),
])
def test_release_and_image_columns(fields, release, image):
    stack = result("healthy", **fields)
    assert (stack.release_change(), stack.image_change()) == (release, image)
    md = DeployReport(source="s", commit="c", stacks=[stack]).markdown()
    assert "| phase | host | stack | action | result | release (old -> new) | image (old -> new) | s | detail |" in md
    assert f"| {release} | {image} |" in md


def test_short_release():
    assert [short_release(r) for r in (OLD, None, "", "manual-release-id-long")] == ["aaaaaa", "-", "-",
                                                                                     "manual-relea"]


def test_untouched_results_keep_the_plans_release_and_images():
    change = Change(phase="apps", host="rtx1080", stack="media", action="update", reason="config changed",
                    current_release=OLD, current_images=("lab-web:1",))
    out = StackResult.untouched(change, "not-run", reason="an earlier phase failed").to_json()
    assert out == {"phase": "apps", "host": "rtx1080", "stack": "media", "action": "update", "result": "not-run",
                   "duration_s": 0.0, "reason": "an earlier phase failed", "release": OLD, "from_release": OLD,
                   "images_from": ["lab-web:1"], "images_to": ["lab-web:1"]}
    assert StackResult.untouched(change, "unchanged").reason == "config changed"


def test_tail_text_keeps_the_last_lines_and_bytes():
    text = "\n".join(f"line {i}" for i in range(200)) + "\n"
    assert tail_text(text).splitlines() == [f"line {i}" for i in range(140, 200)]
    assert tail_text(None) == ""
    long = tail_text("x" * 20000 + "\nlast")
    assert long.startswith("\u2026") and long.endswith("\nlast") and len(long.encode()) <= LOG_BYTES + 3


def test_failure_markdown_is_masked_and_trimmed():
    secret = "failure-artifact-secret-value"
    MASKER.add(secret)
    logs = "\n".join([f"media-web-1 | old line {i}" for i in range(100)] +
                      [f"media-web-1 | DB_PASSWORD={secret}", "media-web-1 | refusing to become healthy"])
    report = DeployReport(source="homelab.yaml@v3-broken", commit="abc", stacks=[
        result("unchanged"),
        StackResult(phase="apps", host="rtx1080", stack="media", action="update", result="failed",
                    from_release=OLD, release=NEW, error=f"health gate failed: token {secret}",
                    probe_output=f"http://media:8080/health: got 503 {secret}", logs=logs)])
    md = report.failure_markdown()
    assert secret not in md and "***" in md
    assert md.startswith("# Deploy failed: 1 stack(s)\nsource `homelab.yaml@v3-broken` commit `abc`")
    assert "## media on rtx1080 failed\nphase `apps`, action `update`, release aaaaaa \u2192 bbbbbb" in md
    assert "health gate failed: token ***" in md
    assert "http://media:8080/health: got 503 ***" in md
    assert "refusing to become healthy" in md
    assert "old line 41" not in md and "old line 42" in md  # the last 60 lines of the logs
    assert "traefik" not in md  # only the failed stacks
    assert secret not in report.markdown()
