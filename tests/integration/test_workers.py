"""Hosts in ``dispatch: worker`` mode, in the lab: each host runs its own Prefect process worker
inside its network namespace (installed by ``homelab worker install`` over SSH, supervised
there), which reaches a Prefect server on the lab bridge with the API auth string. The deploy
runs through the CLI against that server, as an operator's would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import manager, topology
from tasks.host_commands.worker import stop_supervised
from tests.conftest import _free_port
from tests.integration.deploying import on_host

pytestmark = [pytest.mark.lab]

HOMELAB = [sys.executable, "-m", "deployments.cli"]


def homelab(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOMELAB, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def worker_env(lab_inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server on the lab bridge (auth on) and a worker on every lab host."""
    home = tmp_path_factory.mktemp("workers-home")
    port = _free_port()
    env = {**os.environ, "HOMELAB_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "HOMELAB_WORKER_KEYS": str(home / "keys"), "PREFECT_API_URL": f"http://{topology.GATEWAY}:{port}/api"}
    env.pop("PREFECT_API_AUTH_STRING", None)
    up = homelab({k: v for k, v in env.items() if k != "PREFECT_API_URL"}, "server", "up", "--host",
                 topology.GATEWAY, "--port", str(port), timeout=150)
    assert up.returncode == 0, up.stderr
    try:
        inventory = variant(lab_inventory, home / "install", {h: "worker" for h in topology.HOSTS})
        for host in topology.HOSTS:
            done = homelab(env, "worker", "install", "-i", str(inventory), "--host", host, "--python", sys.executable)
            assert done.returncode == 0, done.stderr[-3000:]
            assert f"{host}@" in done.stdout and "online" in done.stdout
        yield env
    finally:
        for host in topology.HOSTS:
            manager.exec_on(host, stop_supervised("/root"), timeout=30)
        homelab(env, "server", "down", timeout=60)


def variant(lab_inventory: Path, where: Path, dispatch: dict[str, str]) -> Path:
    """The lab repo at v1, each host in ``dispatch`` set to that mode."""
    if not where.exists():
        subprocess.run(["git", "clone", "-q", str(lab_inventory.parent), str(where)], check=True)
        subprocess.run(["git", "-C", str(where), "checkout", "-q", "-f", "v1"], check=True)
    inventory = where / "homelab.yaml"
    data = yaml.safe_load(inventory.read_text())
    for host, mode in dispatch.items():
        data["hosts"][host]["dispatch"] = mode
    data.setdefault("defaults", {})["worker_start_timeout_s"] = 20
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


def deploy_json(env: dict[str, str], inventory: Path) -> tuple[int, dict]:
    done = homelab(env, "deploy", "-i", str(inventory), "--yes", "--json")
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON report (exit {done.returncode}): {done.stderr[-3000:]}") from None


def deployed_releases() -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """(host, stack) -> (status, config hash, images) of each stack's current release record."""
    out = {}
    for host in topology.HOSTS:
        records = on_host(host, ["sh", "-c", 'for d in .homelab/releases/*/; do [ -f "$d/current" ] && '
                                             'echo "$d$(cat "$d/current")/release.json"; done; true']).split()
        for path in records:
            record = json.loads(on_host(host, ["cat", path]))
            out[(host, record["stack"])] = (record["status"], record["config_hash"], sorted(record["images"]))
    return out


_READ_RUNS = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from tasks.engine.worker_standby import open_standbys

def row(run):
    return {"id": str(run.id), "name": run.name, "tags": sorted(run.tags), "state": run.state.type.value,
            "message": run.state.message or "", "parent_run_id": run.parameters.get("parent_run_id", "")}

async def main(what, *args):
    async with get_client() as client:
        if what == "standbys":
            return [row(r) for r in await open_standbys(client, args[0])]
        return {i: row(await client.read_flow_run(i)) for i in args}

print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
"""


def read_runs(env: dict[str, str], *args: str):
    """Flow runs as the server has them: ``read_runs(env, "runs", id...)`` or ``(env, "standbys", host)``."""
    auth = (Path(env["HOMELAB_HOME"]) / "prefect-auth").read_text().strip()
    done = subprocess.run([sys.executable, "-c", _READ_RUNS, *args], env={**env, "PREFECT_API_AUTH_STRING": auth},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def wait_for_running_standby(env: dict[str, str], host: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [r for r in read_runs(env, "standbys", host) if r["state"] == "RUNNING"]
        if running:
            return running[0]
        time.sleep(0.5)
    raise AssertionError(f"no standby run of {host} came up in {timeout_s:g}s")


def results(report: dict) -> dict[tuple[str, str], str]:
    return {(s["host"], s["stack"]): s["result"] for s in report["stacks"]}


def test_worker_mode_gives_the_ssh_mode_releases_and_mixed_mode_reads_them(
        worker_env: dict[str, str], clean_lab: Path, tmp_path: Path) -> None:
    everyone = variant(clean_lab, tmp_path / "workers", {h: "worker" for h in topology.HOSTS})
    code, report = deploy_json(worker_env, everyone)
    assert code == 0, report
    assert set(results(report).values()) == {"healthy"} and len(report["stacks"]) == 13
    assert set(report["worker_runs"]) == set(topology.HOSTS)  # each host's steps ran in its own run
    # ...the host's standby, started ahead at install, claimed by this deploy (no start-up wait)
    served = read_runs(worker_env, "runs", *report["worker_runs"].values())
    for host, run_id in report["worker_runs"].items():
        run = served[run_id]
        assert "claimed" in run["tags"] and "standby" not in run["tags"], run
        assert run["name"].startswith(f"{host}-for-") and run["parent_run_id"], run
    by_worker = deployed_releases()
    assert len(by_worker) == 13 and {status for status, _, _ in by_worker.values()} == {"active"}

    # Mixed: vps through its worker, the others over SSH, on the state the workers left: a no-op.
    served_vps = report["worker_runs"]["vps"]
    wait_for_running_standby(worker_env, "vps")
    mixed = variant(clean_lab, tmp_path / "mixed", {"vps": "worker", "thinkpad": "ssh", "rtx1080": "ssh"})
    code, report = deploy_json(worker_env, mixed)
    assert code == 0, report
    assert set(results(report).values()) == {"unchanged"}
    assert set(report["worker_runs"]) == {"vps"}
    # the run that served the first deploy started the next standby, and this deploy claimed it
    successor = report["worker_runs"]["vps"]
    assert successor != served_vps and "claimed" in read_runs(worker_env, "runs", successor)[successor]["tags"]

    # The same commit over SSH alone, from scratch, records the same releases.
    manager.reset()
    ssh = variant(clean_lab, tmp_path / "ssh", {h: "ssh" for h in topology.HOSTS})
    code, report = deploy_json(worker_env, ssh)
    assert code == 0, report
    assert "worker_runs" not in report
    assert deployed_releases() == by_worker


def test_a_stopped_worker_fails_its_host_clearly_naming_the_pool_and_heartbeat(
        worker_env: dict[str, str], clean_lab: Path, tmp_path: Path) -> None:
    inventory = variant(clean_lab, tmp_path / "config", {"vps": "worker"})
    stale = wait_for_running_standby(worker_env, "vps")
    done = manager.exec_on("vps", stop_supervised("/root"), timeout=30)  # its runs go with it
    assert done.returncode == 0, done.stderr
    try:
        started = time.monotonic()
        done = homelab(worker_env, "deploy", "-i", str(inventory), "--yes")
        took = time.monotonic() - started
        assert done.returncode != 0
        assert "pool vps" in done.stderr and "last heartbeat" in done.stderr, done.stderr[-2000:]
        assert "nothing was changed" in done.stderr
        assert took < 20 + 40  # the start timeout, plus the CLI's own start: it did not hang
        assert on_host("vps", ["sh", "-c", "ls .homelab/releases 2>/dev/null || true"]).strip() == ""
        # the standby still read Running; the deploy's claim went unanswered, so it was given up
        gone = read_runs(worker_env, "runs", stale["id"])[stale["id"]]
        assert gone["state"] == "CRASHED" and "silent for 5s" in gone["message"], gone
    finally:
        again = homelab(worker_env, "worker", "upgrade", "-i", str(inventory), "--host", "vps",
                        "--python", sys.executable)
        assert again.returncode == 0, again.stderr[-2000:]


def test_workers_show_in_status_and_an_unauthenticated_worker_is_refused(
        worker_env: dict[str, str], lab_inventory: Path, tmp_path: Path) -> None:
    inventory = variant(lab_inventory, tmp_path / "config", {h: "worker" for h in topology.HOSTS})
    done = homelab(worker_env, "worker", "status", "-i", str(inventory), "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    live = {r["pool"]: r for r in rows if r["status"] == "online" and r["current"]}
    assert set(live) == {"vps", "thinkpad", "rtx1080-gpu"}
    assert all(r["last_heartbeat"] for r in live.values())

    # The same worker command, from the lab host, without the auth string: the server says no.
    api = worker_env["PREFECT_API_URL"]
    refused = manager.exec_on("vps", ["env", f"PREFECT_API_URL={api}", "PREFECT_HOME=/tmp/no-auth-prefect",
                                      sys.executable, "-m", "prefect", "worker", "start", "--pool", "vps",
                                      "--type", "process", "--name", "intruder", "--run-once"], timeout=90)
    assert refused.returncode != 0
    assert b"401" in refused.stdout + refused.stderr
    again = json.loads(homelab(worker_env, "worker", "status", "-i", str(inventory), "--json").stdout)
    assert not [r for r in again if r["worker"] == "intruder"]


def _pending_on_vps() -> bool:
    done = manager.exec_on("vps", ["sh", "-c", "ls .homelab/releases/*/pending 2>/dev/null"])
    return done.returncode == 0 and bool(done.stdout.strip())


def test_a_worker_killed_mid_step_ends_in_the_policy_outcome_and_the_next_run_recovers(
        worker_env: dict[str, str], clean_lab: Path, tmp_path: Path) -> None:
    inventory = variant(clean_lab, tmp_path / "config", {"vps": "worker"})
    deploy = subprocess.Popen([*HOMELAB, "deploy", "-i", str(inventory), "--yes", "--json"], env=worker_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _pending_on_vps():
            assert deploy.poll() is None and time.monotonic() < deadline, "vps never started a step"
            time.sleep(0.05)
        # the host's worker and the run serving this deploy die at once (OOM killer, power cut)
        killed = manager.exec_on("vps", ["sh", "-c", "pkill -9 -f '[s]upervise.sh'; "
                                                    "pkill -9 -f '[p]refect worker start'; "
                                                    "pkill -9 -f '[p]refect.engine'; true"])
        assert killed.returncode == 0
        killed_at = time.monotonic()
        out, _ = deploy.communicate(timeout=120)
    finally:
        deploy.kill()
    assert time.monotonic() - killed_at < 60  # no hang: the silent run is given up on
    assert deploy.returncode != 0
    report = json.loads(out)
    failed = {(s["host"], s["stack"]): s for s in report["stacks"] if s["result"] == "failed"}
    assert failed and {host for host, _ in failed} == {"vps"}, report["stacks"]
    assert all("went silent" in s["error"] for s in failed.values())
    later = [s for s in report["stacks"] if s["result"] == "not-run"]
    assert later or all(s["phase"] == "edge" for s in failed.values())  # halt: nothing after the failed phase
    assert _pending_on_vps()  # the marker of the step that was cut off stays for the next run

    again = homelab(worker_env, "worker", "upgrade", "-i", str(inventory), "--host", "vps", "--python", sys.executable)
    assert again.returncode == 0, again.stderr[-2000:]
    code, report = deploy_json(worker_env, inventory)
    assert code == 0, report
    assert {(i["host"], i["stack"]) for i in report["interrupted"]} >= set(failed)
    assert set(results(report).values()) <= {"healthy", "unchanged"}
    assert not _pending_on_vps()
