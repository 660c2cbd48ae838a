"""Smoke tests against a real deployed stack: HTTP from the host through the SSH connection,
and commands in the running service, each judged into one result (never an exception)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.configrepo import PORTS
from model.desired import load_desired_state
from model.releases import ReleaseRecord
from model.smoke import SmokeCheck
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.smoke import run_smoke_tests, smoke_summary, smoke_table_text
from tasks.host_commands.compose import release_project
from tests.integration.deploying import current_release, deploy, on_host

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

HOST, STACK = "vps", "newsletter"
BASE = f"http://127.0.0.1:{PORTS[STACK]}"

CHECKS = {  # name -> (check, passes, what the detail says)
    "home page": (SmokeCheck(http=f"{BASE}/", body_contains=STACK, body_regex=rf"^lab-web \S+ {STACK}$",
                             max_latency_ms=5000), True, "200 in "),
    "health": (SmokeCheck(http=f"{BASE}/health", body_regex=r"^ok \S+$"), True, "200 in "),
    "wrong text": (SmokeCheck(http=f"{BASE}/", body_contains="lab-web nope"), False,
                   f"body does not contain 'lab-web nope'; body: 'lab-web 1 {STACK}'"),
    "missing page": (SmokeCheck(http=f"{BASE}/nope"), False, "got 404, expected 200"),
    "too slow": (SmokeCheck(http=f"{BASE}/health", max_latency_ms=0.001), False, " ms > 0.001 ms"),
    "closed port": (SmokeCheck(http="http://127.0.0.1:1/", timeout_s=5), False, "cannot connect to 127.0.0.1:1"),
    "knows its stack": (SmokeCheck(exec='test -n "$STACK"', service="web"), True, "exit 0"),
    "exit 3": (SmokeCheck(exec="echo failing on purpose; exit 3", service="web"), False,
               "exit 3, expected 0: failing on purpose"),
    "hangs": (SmokeCheck(exec="sleep 5", service="web", timeout_s=1), False, "timed out after 1 s"),
}


async def test_smoke_tests_judge_a_deployed_stack(clean_lab: Path) -> None:
    _, report = await deploy(clean_lab, ref="v1", only=[STACK])
    assert report["result"] == "success", report
    desired = load_desired_state(clean_lab, ref="v1", only=[STACK])
    release = current_release(HOST, STACK)
    raw = on_host(HOST, ["cat", f"/root/.homelab/releases/{STACK}/{release}/release.json"])
    project = release_project(desired.inventory.state_dir(HOST), ReleaseRecord.from_json(raw))
    checks = [check.model_copy(update={"name": name}) for name, (check, _, _) in CHECKS.items()]

    async with HostPool(ssh_targets(desired)) as pool:
        results = await run_smoke_tests(pool, HOST, project, STACK, checks)

    table = smoke_table_text(results)
    assert [r.check for r in results] == list(CHECKS), table
    for result in results:
        _, passes, says = CHECKS[result.check]
        assert (result.stack, result.host) == (STACK, HOST)
        assert result.ok is passes, table
        assert says in result.detail, table
        assert len(result.detail) <= 300
        assert (result.latency_ms is None) is (result.check == "closed port"), table  # no answer: no time
    assert next(r for r in results if r.check == "too slow").detail.startswith("took ")
    assert next(r for r in results if r.check == "hangs").latency_ms < 20_000
    assert smoke_summary(results).startswith("3 of 9 smoke tests passed; failed: newsletter: wrong text: ")
