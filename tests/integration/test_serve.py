"""``homelab serve`` on the lab: its deployments, UI-style runs, the nightly, dry runs, the warm
CLI path, a signed webhook push, and a restart in the middle of a deploy."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.fixtures import WEBHOOK_SECRET, ControlProcess
from tests.integration.deploying import deployed_commits

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

HOMELAB = [sys.executable, "-m", "deployments.cli"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


async def start_run(deployment: str, **parameters: object) -> uuid.UUID:
    """What the UI's Run button does: create a flow run of the deployment."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(found.id, parameters=parameters)
    return run.id


async def wait_final(run_id: uuid.UUID, timeout_s: float = 240) -> tuple[object, float | None]:
    """The run's final state, and how long after the call it was first seen running."""
    from prefect.client.orchestration import get_client

    began, running_after = time.monotonic(), None
    async with get_client() as client:
        while time.monotonic() - began < timeout_s:
            run = await client.read_flow_run(run_id)
            if running_after is None and run.state.is_running():
                running_after = time.monotonic() - began
            if run.state.is_final():
                return run, running_after
            await asyncio.sleep(0.25)
    raise AssertionError(f"flow run {run_id} not final after {timeout_s}s: {run.state}")


def commits_at(inventory: Path, ref: str) -> str:
    return git(inventory.parent, "rev-parse", f"{ref}^{{commit}}")


async def test_the_four_deployments_with_their_form_schedule_and_limits(control_process: ControlProcess) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        found = {name: await client.read_deployment_by_name(name) for name in (
            "deploy-homelab/deploy", "deploy-homelab/nightly", "rollback-homelab/rollback",
            "secrets-sync/secrets-sync")}
    nightly = found["deploy-homelab/nightly"]
    assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("30 3 * * *", "Europe/Berlin")]
    assert nightly.parameters == {"refresh_images": True}
    assert all(d.global_concurrency_limit and d.global_concurrency_limit.limit == 1 for d in found.values())
    form = found["deploy-homelab/deploy"].parameter_openapi_schema["properties"]
    assert "inventory" not in form  # the control process pins it
    assert {name: field["title"] for name, field in form.items() if name != "refresh_images"} == {
        "ref": "Git ref", "only": "Only these stacks", "on_failure": "Failure policy", "dry_run": "Dry run",
        "environment": "Environment", "skip_staging": "Skip staging", "auto_approve": "Approve without waiting"}
    assert form["environment"]["default"] == "production"  # the UI's Run starts the release pipeline
    assert all(field.get("description") for field in form.values())
    assert form["dry_run"]["default"] is False and form["ref"]["default"] is None


async def test_a_run_created_like_the_ui_does_deploys_its_ref(control_process: ControlProcess, clean_lab: Path) -> None:
    run, running_after = await wait_final(await start_run("deploy-homelab/deploy", ref="v1"))
    assert run.state.is_completed(), run.state
    assert running_after is not None and running_after < 15  # the bench measures the real figure (README)
    v1 = commits_at(clean_lab, "v1")
    assert set(deployed_commits().values()) == {v1}
    assert len(deployed_commits()) == 13


async def test_a_parameter_cannot_aim_a_run_at_another_inventory(control_process: ControlProcess,
                                                                 tmp_path: Path) -> None:
    """The served flow has no inventory parameter (the form never offers one): a run created
    with one through the API fails Prefect's parameter check before anything is read."""
    before = deployed_commits()
    run, _ = await wait_final(await start_run("deploy-homelab/deploy", inventory=str(tmp_path / "other.yaml")))
    assert run.state.is_failed() or run.state.is_crashed(), run.state  # Prefect's check: the process exits 1
    assert deployed_commits() == before


async def test_dry_run_publishes_the_plan_and_changes_nothing(control_process: ControlProcess,
                                                              lab_inventory: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    before = deployed_commits()
    run, _ = await wait_final(await start_run("deploy-homelab/deploy", ref="v2", dry_run=True))
    assert run.state.is_completed(), run.state
    assert deployed_commits() == before
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    plan = next(a for a in artifacts if a.key == "deploy-plan")
    assert "| update |" in plan.data and "newsletter" in plan.data


async def test_the_nightly_converges_to_the_default_branch(control_process: ControlProcess, clean_lab: Path) -> None:
    run, _ = await wait_final(await start_run("deploy-homelab/nightly"))
    assert run.state.is_completed(), run.state
    main = commits_at(clean_lab, "main")
    assert set(deployed_commits().values()) == {main}


def test_the_cli_hands_its_deploy_to_the_control_process(control_process: ControlProcess) -> None:
    """Warm path: no Prefect and no asyncssh in the CLI, the same JSON and exit code, and a
    normal flow run in the UI."""
    done = subprocess.run([sys.executable, "-X", "importtime", *HOMELAB[1:], "deploy", "-i",
                           str(control_process.inventory), "--ref", "main", "--json"],
                          capture_output=True, text=True, env=control_process.env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("prefect", "asyncssh")}
    report = json.loads(done.stdout)
    assert report["result"] == "success" and report["flow_run_id"]
    assert {"phase", "host", "stack", "action", "result", "duration_s"} <= set(report["stacks"][0])
    status = subprocess.run([*HOMELAB, "status", "-i", str(control_process.inventory), "--json"],
                            capture_output=True, text=True, env=control_process.env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["hosts"]["rtx1080"]["stacks"]["postgres"]["healthy"] is True


def signed_push(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json"}


async def test_a_signed_push_deploys_the_new_commit_everywhere(control_process: ControlProcess,
                                                                clean_lab: Path) -> None:
    repo = clean_lab.parent
    before = git(repo, "rev-parse", "HEAD")
    for stack in ("newsletter", "traefik", "redis"):  # one stack per host
        (repo / "stacks" / stack / "NOTES.txt").write_text("pushed by the webhook test\n")
    git(repo, "add", "stacks")
    git(repo, "commit", "-q", "-m", "webhook test")
    after = git(repo, "rev-parse", "HEAD")
    try:
        body = json.dumps({"ref": "refs/heads/main", "before": before, "after": after, "deleted": False,
                           "repository": {"full_name": "lab/config"}}).encode()
        async with httpx.AsyncClient(timeout=10) as http:
            unsigned = await http.post(control_process.webhook_url, content=body,
                                       headers={**signed_push(body, "u-1"), "X-Hub-Signature-256": "sha256=00"})
            assert unsigned.status_code == 401
            answer = await http.post(control_process.webhook_url, content=body,
                                     headers=signed_push(body, str(uuid.uuid4())))
        assert answer.status_code == 202, answer.text
        run, _ = await wait_final(uuid.UUID(answer.json()["flow_run_id"]))
        assert run.state.is_completed(), run.state
        assert run.parameters["ref"] == after
        commits = deployed_commits()
        assert {commits[("vps", "newsletter")], commits[("thinkpad", "traefik")], commits[("rtx1080", "redis")]} \
            == {after}
    finally:
        git(repo, "reset", "-q", "--hard", before)


async def test_a_restart_mid_deploy_runs_nothing_twice(control_process: ControlProcess, clean_lab: Path) -> None:
    from prefect.client.orchestration import get_client

    run_id = await start_run("deploy-homelab/deploy", ref="v1")
    async with get_client() as client:
        deadline = time.monotonic() + 120
        while not (await client.read_flow_run(run_id)).state.is_running():
            assert time.monotonic() < deadline, "the run never started"
            await asyncio.sleep(0.2)
        await asyncio.sleep(4)  # into the phases
        control_process.stop()
        control_process.start()
        interrupted, _ = await wait_final(run_id, timeout_s=120)
        await asyncio.sleep(3)  # a restarted runner that wrongly picked it up again would have by now
        again = await client.read_flow_run(run_id)
        history = await client.read_flow_run_states(run_id)
    assert not interrupted.state.is_completed(), interrupted.state
    assert again.state.type == interrupted.state.type and again.run_count <= 1
    assert sum(s.type.value == "RUNNING" for s in history) == 1, [s.name for s in history]

    run, _ = await wait_final(await start_run("deploy-homelab/deploy", ref="v1"))
    assert run.state.is_completed(), run.state
    assert set(deployed_commits().values()) == {commits_at(clean_lab, "v1")}


ARTIFACTS = Path(os.environ.get("HOMELAB_TEST_ARTIFACTS", "/tmp/homelab-test-artifacts"))


def test_a_run_started_in_the_prefect_ui_deploys_the_typed_ref(control_process: ControlProcess,
                                                               clean_lab: Path) -> None:
    """In a real browser: open the deploy deployment, type a ref into the run form, submit,
    watch the run page reach Completed; the hosts then run that commit."""
    from tests.integration.prefect_ui import open_browser, screenshot, start_run_from_form, wait_for_state

    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    with open_browser() as page:
        run_id = start_run_from_form(page, ui, "deploy-homelab", "deploy", {"ref": "v1.1"})
        wait_for_state(page, ui, run_id, "Completed", timeout_s=240)
        shot = screenshot(page, ARTIFACTS / "prefect-ui-deploy-completed.png")
    assert shot.stat().st_size > 10_000
    v1_1 = commits_at(clean_lab, "v1.1")
    assert set(deployed_commits().values()) == {v1_1}


def on_a_terminal(argv: list[str], env: dict) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (where the live view goes); (exit, stdout, tty)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen.append(data)
    stdout = process.stdout.read().decode()
    os.close(master)
    return process.wait(timeout=300), stdout, b"".join(seen).decode(errors="replace")


@pytest.mark.parametrize("verbose", [False, True])
def test_a_terminal_gets_the_live_view_and_with_v_the_remote_log(control_process: ControlProcess,
                                                                 verbose: bool) -> None:
    inventory = str(control_process.inventory)
    first = subprocess.run([*HOMELAB, "deploy", "-i", inventory, "--ref", "v1", "--json"], capture_output=True,
                           text=True, env=control_process.env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    argv = [*HOMELAB, "deploy", "-i", inventory, "--ref", "v1.1", *(["-v"] if verbose else [])]
    code, stdout, terminal = on_a_terminal(argv, control_process.env)
    assert code == 0, stdout + terminal
    assert "edge\r\n  vps/newsletter" in terminal and "queued" in terminal and "healthy" in terminal
    assert "\x1b[2K" in terminal  # redrawn in place, erased before the table
    assert "SUCCESS" in stdout and "Prefect UI:" in stdout
    assert ("vps$ " in terminal) is verbose  # the remote command log ("host$ command") only with -v


async def test_a_prefect_server_restart_loses_no_scheduled_run(control_process: ControlProcess) -> None:
    """The server goes away and comes back: the control process reconnects by itself and the
    run scheduled meanwhile executes."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from tests.fixtures import start_prefect_server, stop_prefect_server

    async with get_client() as client:
        found = await client.read_deployment_by_name("deploy-homelab/deploy")
        due = await client.create_flow_run_from_deployment(
            found.id, parameters={"ref": "v1", "dry_run": True},
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=20)))
    stop_prefect_server()
    await asyncio.sleep(8)  # long enough for the runner to give up polling
    start_prefect_server(os.environ["PREFECT_API_URL"])
    run, _ = await wait_final(due.id, timeout_s=180)
    assert run.state.is_completed(), run.state
    assert control_process.process.poll() is None
