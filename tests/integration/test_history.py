"""What runs leave in the Prefect API, and ``homelab history`` reading it back: a healthy v2 deploy
then the broken v3 (media on rtx1080 fails its health gate), against the real lab and server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flows.reporting import FAILURE_KEY, publish_run_summary, run_summary
from tasks.engine.report import short_release
from tasks.engine.run_history import RUN_SUMMARY_KEY
from tests.integration.deploying import deploy, results

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

REPO = Path(__file__).resolve().parents[2]


async def artifacts_of(flow_run_id: str) -> dict[str, list]:
    """key -> the run's artifacts with that key (oldest first)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))
    out: dict[str, list] = {}
    for artifact in sorted(found, key=lambda a: a.created):
        out.setdefault(artifact.key, []).append(artifact)
    return out


async def ensure_summary(flow_run_id: str, report: dict) -> None:
    """The run's summary: the pipeline publishes it at the end of every run. Where this tree's
    pipeline does not yet, publish_run_summary writes it in a flow run of its own, and the test
    attaches that exact artifact's data to the deploy run (publish_run_summary only writes to
    the current run)."""
    if (await artifacts_of(flow_run_id)).get(RUN_SUMMARY_KEY):
        return
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    @flow(name="history-test-summary")
    async def publish(summary: dict) -> str:
        from prefect.runtime import flow_run

        await publish_run_summary(summary)
        return str(flow_run.get_id())

    summary = run_summary(report, environment="production", trigger="manual", duration_s=report["wall_s"])
    written = (await artifacts_of(await publish(summary)))[RUN_SUMMARY_KEY][-1]
    assert written.type == "table" and json.loads(written.data) == [summary]
    async with get_client() as client:
        await client.create_artifact(ArtifactCreate(key=RUN_SUMMARY_KEY, type=written.type, data=written.data,
                                                    description=written.description,
                                                    flow_run_id=uuid.UUID(flow_run_id)))


def homelab_history(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "deployments.cli", "history", *args], cwd=REPO,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


async def test_history_lists_the_runs_with_their_artifacts(clean_lab: Path) -> None:
    good_state, good = await deploy(clean_lab, ref="v2")
    assert good["result"] == "success", good
    good_id = str(good_state.state_details.flow_run_id)
    await ensure_summary(good_id, good)

    bad_state, bad = await deploy(clean_lab, ref="v3-broken")
    assert bad_state.is_failed() and results(bad)[("rtx1080", "media")] == "failed"
    bad_id = str(bad_state.state_details.flow_run_id)
    await ensure_summary(bad_id, bad)

    # the failed run's own failure artifact: where, the error, the probe output, the container's log line
    failure_json = next(f for f in bad["failures"] if f["stack"] == "media")
    artifacts = await artifacts_of(bad_id)
    failure = artifacts[FAILURE_KEY][-1].data
    assert "## media on rtx1080 failed" in failure
    assert "health gate failed" in failure
    assert failure_json["probe_output"] and failure_json["probe_output"].splitlines()[0] in failure
    assert "refusing to become healthy" in failure
    assert FAILURE_KEY not in await artifacts_of(good_id)

    # the report shows media's old -> new release, and the image that changed
    media_before = next(s for s in good["stacks"] if s["stack"] == "media")
    media = next(s for s in bad["stacks"] if s["stack"] == "media")
    assert media["from_release"] == media_before["release"] != media["release"]
    assert media["images_from"] == ["localhost/lab-web:1"] and media["images_to"] == ["localhost/lab-web:broken"]
    report_md = artifacts["deploy-report"][-1].data
    media_row = next(line for line in report_md.splitlines() if "| rtx1080 | media |" in line)
    assert f"| {short_release(media_before['release'])} \u2192 {short_release(media['release'])} |" in media_row
    assert "| localhost/lab-web:1 \u2192 localhost/lab-web:broken |" in media_row

    # a run scheduled for tonight has not happened: it is not history (the API sorts it first)
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.deploy import deploy_homelab

    async with get_client() as client:
        tonight = await client.create_flow_run(deploy_homelab, parameters={"ref": "v2"}, state=Scheduled(
            scheduled_time=datetime.now(UTC) + timedelta(hours=6)))
    try:
        rows = json.loads(homelab_history("--json", "--limit", "5").stdout)
    finally:
        async with get_client() as client:
            await client.delete_flow_run(tonight.id)
    assert [r["flow_run_id"] for r in rows[:2]] == [bad_id, good_id]  # newest first
    newest, older = rows[0], rows[1]
    assert set(newest) == {"flow_run_id", "started", "trigger", "ref", "commit", "environment", "result",
                           "duration_s", "changed"}
    assert (newest["result"], newest["ref"], newest["trigger"], newest["environment"]) == (
        "failed", "v3-broken", "manual", "production")
    assert (older["result"], older["ref"]) == ("success", "v2")
    assert newest["commit"] == bad["commit"] and older["commit"] == good["commit"]
    assert "rtx1080/media update->failed" in newest["changed"]
    assert older["changed"] and all(c.endswith("->healthy") for c in older["changed"])
    assert newest["duration_s"] > 0 and older["started"] < newest["started"]

    text = homelab_history("--limit", "2").stdout.splitlines()
    assert text[0].split()[:3] == ["RUN", "STARTED", "TRIGGER"] and len(text) == 4
    assert text[2].startswith(bad_id[:8]) and " failed " in text[2] and "v3-broken" in text[2]
    assert text[3].startswith(good_id[:8]) and " success " in text[3]
