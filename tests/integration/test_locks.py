"""Deploy locks, concurrent deploys, manual rollback and crash recovery, on the lab."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab import manager
from tasks.engine import audit
from tasks.engine.locks import LockHeld
from tasks.host_commands.lock import LockOwner
from tests.integration.deploying import (
    audit_events,
    current_release,
    deploy,
    lock_owner,
    on_host,
    place_lock,
    results,
    stack_health,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]
ROOT = Path(__file__).resolve().parents[2]


async def flow_run_in(state_name: str = "Running") -> str:
    """A flow run Prefect knows, in the given state (Running: a live owner elsewhere)."""
    from prefect import flow, get_client, states

    @flow(name="someone-elses-deploy")
    def someone_elses_deploy() -> None: ...

    async with get_client() as client:
        run = await client.create_flow_run(someone_elses_deploy, name="holder",
                                           state=getattr(states, state_name)())
    return str(run.id)


async def running_flow_run() -> str:
    return await flow_run_in("Running")


async def test_a_held_lock_makes_the_deploy_wait_then_fail_naming_the_owner(clean_lab: Path) -> None:
    holder = await running_flow_run()
    place_lock("thinkpad", {"flow_run_id": holder, "user": "alice", "host": "other-orchestrator", "pid": 4242,
                            "started_at": "2026-11-26T23:00:00+00:00", "commit": "abc"})
    started = time.monotonic()
    state, error = await deploy(clean_lab, ref="v1", lock_wait_s=3)
    assert state.is_failed()
    assert isinstance(error, LockHeld)
    assert time.monotonic() - started >= 3
    assert f"flow run {holder}" in str(error) and "alice" in str(error)
    assert "homelab unlock --host thinkpad" in str(error)
    # nothing was deployed anywhere, and only the foreign lock is left
    assert all(current_release(h, "jjeco-light") is None for h in ("vps", "thinkpad"))
    assert lock_owner("thinkpad")["flow_run_id"] == holder
    assert lock_owner("vps") is None and lock_owner("rtx1080") is None


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        pid += 1


@pytest.mark.parametrize(("case", "why"), [
    ("this machine, process gone", "is gone"),
    ("another machine, run finished", "is completed"),
])
async def test_a_stale_lock_is_broken_with_an_audit_record(clean_lab: Path, case: str, why: str) -> None:
    if case.startswith("this machine"):
        # as this orchestrator writes it: machine id, boot and pid namespace are ours, the pid is not
        owner = _our_owner(str(uuid.uuid4())) | {"pid": _dead_pid()}
    else:
        owner = {"flow_run_id": await flow_run_in("Completed"), "host": "elsewhere", "pid": 1}
    place_lock("vps", owner | {"user": "bob", "started_at": "2026-11-26T22:00:00+00:00", "commit": None})
    state, report = await deploy(clean_lab, ref="v1", lock_wait_s=5)
    assert state.is_completed(), report
    broken = [r for r in audit_events("lock.broken") if r["owner"]["flow_run_id"] == owner["flow_run_id"]]
    assert broken and why in broken[0]["reason"]
    assert lock_owner("vps") is None  # released at the end
    assert audit.verify() == []


def _our_owner(flow_run_id: str) -> dict:
    """An owner file exactly as a deploy from this test process writes it (live pid, our machine)."""
    return json.loads(LockOwner.for_run(flow_run_id, None).to_json())


@pytest.mark.parametrize("case", ["a live pid of ours", "a clone: our hostname, another machine id"])
async def test_a_lock_with_our_hostname_and_a_live_owner_is_not_broken(clean_lab: Path, case: str) -> None:
    """Same hostname is not same machine (cloned VMs, host-network containers): a pid is judged
    only with the machine id, boot id and start time. The flow run is unknown to Prefect, which
    proves nothing either."""
    owner = _our_owner(str(uuid.uuid4()))
    if case.startswith("a clone"):
        owner |= {"machine_id": "f" * 32, "pid": _dead_pid()}  # its pid is alive over there
    assert owner["host"] == socket.gethostname()
    place_lock("thinkpad", owner)
    state, error = await deploy(clean_lab, ref="v1", lock_wait_s=3)
    assert state.is_failed()
    assert isinstance(error, LockHeld) and owner["flow_run_id"] in str(error)
    assert lock_owner("thinkpad") == owner  # untouched
    assert not [r for r in audit_events("lock.broken") if r["owner"]["flow_run_id"] == owner["flow_run_id"]]


def test_unlock_shows_the_owner_and_removes_that_lock(clean_lab: Path) -> None:
    owner = _our_owner(str(uuid.uuid4()))
    place_lock("vps", owner)
    done = _cli("unlock", "-i", str(clean_lab), "--host", "vps", stdin=subprocess.DEVNULL)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err[-3000:]
    assert f"vps: deploy lock held by flow run {owner['flow_run_id']}" in out
    assert "vps: lock removed" in out
    assert lock_owner("vps") is None
    forced = [r for r in audit_events("lock.forced") if (r["owner"] or {}).get("flow_run_id") == owner["flow_run_id"]]
    assert len(forced) == 1 and len(forced[0]["owner_sha256"]) == 64
    assert audit.verify() == []


async def test_an_unknown_run_on_another_machine_is_not_taken_for_stale(clean_lab: Path) -> None:
    """It may report to another Prefect server: the lock is respected, never broken."""
    stranger = str(uuid.uuid4())
    place_lock("rtx1080", {"flow_run_id": stranger, "user": "carol", "host": "laptop", "pid": 1,
                           "started_at": "2026-11-26T22:00:00+00:00", "commit": None})
    state, error = await deploy(clean_lab, ref="v1", lock_wait_s=2)
    assert state.is_failed()
    assert isinstance(error, LockHeld) and stranger in str(error)
    assert lock_owner("rtx1080")["flow_run_id"] == stranger


async def test_two_concurrent_deploys_never_overlap_on_a_host(clean_lab: Path) -> None:
    (_, first), (_, second) = await asyncio.gather(deploy(clean_lab, ref="v1", lock_wait_s=120),
                                                   deploy(clean_lab, ref="v1.1", lock_wait_s=120))
    assert first["result"] == second["result"] == "success"
    windows = {}
    for run_id in (first["flow_run_id"], second["flow_run_id"]):
        locked = [r for r in audit_events("deploy.locked") if r["flow_run_id"] == run_id]
        unlocking = [r for r in audit_events("deploy.unlocking") if r["flow_run_id"] == run_id]
        assert len(locked) == len(unlocking) == 1
        windows[run_id] = (locked[0]["time"], unlocking[0]["time"])
    (_, a_end), (b_start, _) = sorted(windows.values())
    assert a_end <= b_start, f"the two runs held the hosts at the same time: {windows}"
    # whichever ran last decided the final state, and every stack is healthy on it
    assert stack_health("vps", "newsletter") == {"web": "healthy"}


async def test_manual_rollback_returns_to_the_previous_release_exactly(clean_lab: Path) -> None:
    from flows.rollback import rollback_homelab

    _, v1 = await deploy(clean_lab, ref="v1")
    assert v1["result"] == "success"
    v1_release = current_release("vps", "newsletter")
    _, v11 = await deploy(clean_lab, ref="v1.1")
    assert results(v11)[("vps", "newsletter")] == "healthy"
    assert current_release("vps", "newsletter") != v1_release

    state = await rollback_homelab(inventory=str(clean_lab), stacks=["newsletter"], return_state=True)
    report = await state.aresult(raise_on_failure=False)
    assert report["result"] == "success", report
    assert report["stacks"] == [{"host": "vps", "stack": "newsletter", "from": report["stacks"][0]["from"],
                                 "to": v1_release, "result": "restored",
                                 "detail": f"restored release {v1_release} (healthy)"}]
    assert current_release("vps", "newsletter") == v1_release
    image = on_host("vps", ["sh", "-c", "docker inspect --format '{{.Config.Image}}' "
                                        "$(docker ps -q --filter label=com.docker.compose.project=newsletter)"])
    assert image.strip() == "localhost/lab-web:1"
    assert stack_health("vps", "newsletter") == {"web": "healthy"}


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deployments.cli", *args], cwd=ROOT, env=os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_mid_deploy_is_recovered_by_the_next_run(clean_lab: Path, seed: int) -> None:
    inv = str(clean_lab)
    first = _cli("deploy", "-i", inv, "--ref", "v1", "--json")
    time.sleep(random.Random(seed).uniform(3.0, 9.0))  # somewhere inside the five phases
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = _cli("deploy", "-i", inv, "--ref", "v1", "--json", "--lock-wait", "90")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["result"] == "success"
    for item in report["interrupted"]:  # each half-done stack was found and redeployed
        assert (item["host"], item["stack"]) in results(report)
        assert results(report)[(item["host"], item["stack"])] == "healthy"
    for host, stack in results(report):
        assert stack_health(host, stack), f"{stack} on {host} has no containers"
        assert set(stack_health(host, stack).values()) <= {"healthy", "none"}
        assert current_release(host, stack) is not None
    assert all(lock_owner(h) is None for h in ("vps", "thinkpad", "rtx1080"))
    assert not [1 for h in ("vps", "thinkpad", "rtx1080")
                if manager.exec_on(h, ["sh", "-c", "ls /root/.homelab/releases/*/pending"]).returncode == 0]
