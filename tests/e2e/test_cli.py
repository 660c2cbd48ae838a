"""User journeys through the `homelab` command, as a user would type them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.inventory_loader import load_inventory
from model.trust import dump, pin

ROOT = Path(__file__).resolve().parents[2]
HOMELAB = [sys.executable, "-m", "deployments.cli"]


def homelab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOMELAB, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_bad_inventory_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "stacks/web").mkdir(parents=True)
    (tmp_path / "stacks/web/compose.yaml").write_text("services: {web: {image: busybox}}\n")
    bad = tmp_path / "homelab.yaml"
    bad.write_text("hosts:\n  a: {address: 10.203.0.11}\nphases:\n  one:\n    stacks:\n      web: {hosts: [b]}\n")
    done = homelab("deploy", "-i", str(bad), env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert done.returncode == 2, done.stderr
    assert f"{bad}:6: phases.one.stacks.web.hosts[0]: unknown host 'b'" in done.stderr
    assert "Traceback" not in done.stderr


def test_real_inventory_is_refused_outside_the_allowed_networks(tmp_path: Path) -> None:
    # an operator's trust file for the real homelab, so that the network check is what refuses
    trust = tmp_path / "trust.yaml"
    trust.write_text(dump(pin(load_inventory(ROOT / "deployments/homelab.yaml"))))
    done = homelab("status", "-i", "deployments/homelab.yaml", "--json", env={"HOMELAB_TRUST_FILE": str(trust)})
    assert done.returncode == 1
    hosts = json.loads(done.stdout)["hosts"]
    real = load_inventory(ROOT / "deployments/homelab.yaml").hosts
    for host, address in ((name, spec.address) for name, spec in real.items()):
        assert hosts[host]["reachable"] is False
        assert f"address {address} is outside HOMELAB_ALLOWED_NETWORKS" in hosts[host]["error"]


@pytest.mark.lab
@pytest.mark.usefixtures("prefect_api")
def test_plan_deploy_status_json_interfaces(clean_lab: Path) -> None:
    inv = str(clean_lab)
    planned = homelab("plan", "-i", inv, "--ref", "v1", "--json")
    assert planned.returncode == 0, planned.stderr
    changes = json.loads(planned.stdout)["changes"]
    assert len(changes) == 13
    assert set(changes[0]) == {"phase", "host", "stack", "action", "reason"}
    assert {c["action"] for c in changes} == {"create"}

    deployed = homelab("deploy", "-i", inv, "--ref", "v1", "--json")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    report = json.loads(deployed.stdout)
    assert report["result"] == "success"
    assert report["flow_run_id"]
    assert {"phase", "host", "stack", "action", "result", "duration_s"} <= set(report["stacks"][0])

    status = homelab("status", "-i", inv, "--json")
    assert status.returncode == 0, status.stderr
    hosts = json.loads(status.stdout)["hosts"]
    assert set(hosts) == {"vps", "thinkpad", "rtx1080"}
    postgres = hosts["rtx1080"]["stacks"]["postgres"]
    assert hosts["rtx1080"]["reachable"] is True
    assert postgres["healthy"] is True
    assert postgres["release"] == next(s["release"] for s in report["stacks"] if s["stack"] == "postgres")
    assert {"id", "name", "image", "health"} <= set(postgres["containers"][0])

    replanned = homelab("plan", "-i", inv, "--ref", "v2", "--json")
    actions = {(c["host"], c["stack"]): c["action"] for c in json.loads(replanned.stdout)["changes"]}
    assert {k for k, a in actions.items() if a == "update"} == {
        ("vps", "newsletter"), ("rtx1080", "redis"), ("thinkpad", "homeassistant")}


@pytest.mark.lab
@pytest.mark.usefixtures("prefect_api")
def test_broken_release_exits_nonzero_with_logs_in_the_table(clean_lab: Path) -> None:
    inv = str(clean_lab)
    assert homelab("deploy", "-i", inv, "--ref", "v2").returncode == 0
    done = homelab("deploy", "-i", inv, "--ref", "v3-broken")
    assert done.returncode == 1
    assert "media on rtx1080 failed" in done.stdout
    assert "refusing to become healthy" in done.stdout
    assert "Prefect UI: http://127.0.0.1:" in done.stdout


def test_the_lab_commands_come_from_the_lab_plugin(lab_inventory: Path) -> None:
    listed = homelab("--help")
    assert listed.returncode == 0 and "lab" in listed.stdout  # mounted from the homelab.cli entry point
    done = homelab("lab", "status", "--json")
    assert done.returncode == 0, done.stderr
    hosts = json.loads(done.stdout)
    assert set(hosts) == {"vps", "thinkpad", "rtx1080"}
    assert all(h["up"] and h["sshd"] and h["engine"] for h in hosts.values())


@pytest.mark.lab
@pytest.mark.usefixtures("prefect_api")
def test_a_deploy_waiting_at_the_gate_says_how_to_answer_and_exits_7_when_rejected(clean_lab: Path) -> None:
    import re
    import time

    deploying = subprocess.Popen([*HOMELAB, "deploy", "-i", str(clean_lab), "--ref", "v4-staged", "--only",
                                  "newsletter", "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "HOMELAB_APPROVAL_POLL_S": "0.5"})
    assert deploying.stderr is not None
    said, deadline = "", time.monotonic() + 180
    while "homelab approve" not in said and time.monotonic() < deadline:
        said += deploying.stderr.readline()
    found = re.search(r"homelab approve ([0-9a-f-]{36})", said)
    assert found, said
    assert re.search(r"Prefect UI: http://127\.0\.0\.1:\d+/runs/flow-run/" + found.group(1), said), said
    pending = json.loads(homelab("pending", "--json").stdout)["runs"]
    assert [r["flow_run_id"] for r in pending] == [found.group(1)]
    rejected = homelab("approve", found.group(1), "--reject", "--reason", "wrong night")
    assert rejected.returncode == 0, rejected.stderr
    out, _ = deploying.communicate(timeout=120)
    assert deploying.returncode == 7, out
    report = json.loads(out)
    assert report["result"] == "not-approved" and report["reason"] == "wrong night"
    assert homelab("pending", "--json").stdout.count("flow_run_id") == 0
