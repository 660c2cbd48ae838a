"""The core deploy against the real simulated lab: sshd in namespaces, podman behind
`docker compose`, a real Prefect server. One clean lab per test, so each tells its own story."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import manager, topology
from model.errors import HostKeyRejected, PreflightFailed
from tests.integration.deploying import (
    container_ids,
    current_release,
    deploy,
    on_host,
    project_container_ids,
    results,
    trust_as_is,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

LAB_STACKS = 13  # 12 stacks, jjeco-light on two hosts


async def test_full_deploy_then_noop_recreates_nothing(clean_lab: Path) -> None:
    state, report = await deploy(clean_lab, ref="v1")
    assert state.is_completed(), report
    assert report["result"] == "success"
    assert len(report["stacks"]) == LAB_STACKS
    assert {s["result"] for s in report["stacks"]} == {"healthy"}
    assert {s["action"] for s in report["stacks"]} == {"create"}
    assert [s["phase"] for s in report["stacks"]] == sorted(
        (s["phase"] for s in report["stacks"]), key=["foundation", "core", "apps", "ai", "edge"].index)
    before = container_ids()
    assert sum(len(ids) for ids in before.values()) == 16  # authentik runs two services, monitoring three

    state, again = await deploy(clean_lab, ref="v1")
    assert again["result"] == "success"
    assert {s["result"] for s in again["stacks"]} == {"unchanged"}
    assert container_ids() == before, "a no-op redeploy must not recreate any container"


async def test_release_record_names_the_commit_and_images(clean_lab: Path) -> None:
    _, report = await deploy(clean_lab, ref="v1", only=["postgres"])
    assert report["result"] == "success"
    release = current_release("rtx1080", "postgres")
    assert release == report["stacks"][0]["release"]
    record = json.loads(on_host("rtx1080", ["cat", f"/root/.homelab/releases/postgres/{release}/release.json"]))
    commit = subprocess.run(["git", "-C", str(clean_lab.parent), "rev-parse", "v1^{commit}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert record["commit"] == commit
    assert record["status"] == "active"
    assert record["flow_run_id"] == report["flow_run_id"]
    assert record["images"]["localhost/lab-web:1"].startswith("sha256:")
    assert record["images"]["localhost/lab-web:1"] == on_host(
        "rtx1080", ["docker", "image", "inspect", "--format", "{{.Id}}", "localhost/lab-web:1"]).strip()
    compose = on_host("rtx1080", ["cat", f"/root/.homelab/releases/postgres/{release}/files/compose.yaml"])
    assert "localhost/lab-web:1" in compose
    assert record["files"] == {"compose.yaml": "644:" + hashlib.sha256(compose.encode()).hexdigest()}
    assert on_host("rtx1080", ["cat", "/root/.homelab/stacks/postgres/compose.yaml"]) == compose  # installed


async def test_one_stack_change_touches_only_that_stack(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success"
    before = container_ids()
    newsletter_before = project_container_ids("vps", "newsletter")

    _, report = await deploy(clean_lab, ref="v1.1")
    assert report["result"] == "success"
    changed = {key: r for key, r in results(report).items() if r != "unchanged"}
    assert changed == {("vps", "newsletter"): "healthy"}
    after = container_ids()
    newsletter_after = project_container_ids("vps", "newsletter")
    assert newsletter_after and newsletter_after.isdisjoint(newsletter_before)
    for host in topology.HOSTS:
        untouched_before = before[host] - newsletter_before
        assert untouched_before <= after[host], f"{host}: a container of an unchanged stack was recreated"


async def test_broken_release_stops_at_the_health_gate_with_logs(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v2")
    assert first["result"] == "success"

    state, report = await deploy(clean_lab, ref="v3-broken")
    assert state.is_failed()
    assert report["result"] == "failed"
    by_key = results(report)
    assert by_key[("rtx1080", "media")] == "failed"
    failure = next(f for f in report["failures"] if f["stack"] == "media")
    assert "health gate failed" in failure["error"]
    assert "refusing to become healthy" in failure["logs"]  # the container's own output
    assert failure["probe_output"]
    # the run stopped after the failing phase: nothing of ai/edge was attempted
    later = [s for s in report["stacks"] if s["phase"] in ("ai", "edge")]
    assert later and all(s["result"] == "not-run" for s in later)
    # the failed attempt is recorded, but `current` still names the healthy release
    release = current_release("rtx1080", "media")
    record = on_host("rtx1080", ["cat", f"/root/.homelab/releases/media/{release}/release.json"])
    assert json.loads(record)["status"] == "active"


async def test_preflight_aborts_before_any_change_when_sshd_is_down(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success"
    before = container_ids()
    releases = {(h, s): current_release(h, s) for h, s in results(first)}
    manager.stop_sshd("vps")
    try:
        state, error = await deploy(clean_lab, ref="v2")
    finally:
        manager.start_sshd("vps")
    assert state.is_failed()
    assert isinstance(error, PreflightFailed)
    assert list(error.failures) == ["vps"]
    assert "vps" in str(error) and "nothing was changed" in str(error)
    assert container_ids() == before
    assert {(h, s): current_release(h, s) for h, s in releases} == releases


async def test_changed_host_key_is_refused(clean_lab: Path, tmp_path: Path, monkeypatch) -> None:
    # A copy of the lab inventory whose known_hosts pins a different key for thinkpad.
    inventory = tmp_path / "homelab.yaml"
    shutil.copytree(clean_lab.parent / "stacks", tmp_path / "stacks")
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    pinned = topology.known_hosts_path().read_text().splitlines()
    address = topology.HOSTS["thinkpad"]
    forged = [line for line in pinned if not line.startswith(address + " ")]
    forged.append(f"{address} {(tmp_path / 'other_key.pub').read_text().split()[0]} "
                  f"{(tmp_path / 'other_key.pub').read_text().split()[1]}")
    (tmp_path / "known_hosts").write_text("\n".join(forged) + "\n")
    inventory.write_text(clean_lab.read_text().replace(str(topology.known_hosts_path()),
                                                       str(tmp_path / "known_hosts")))
    trust_as_is(inventory, monkeypatch)  # the lab's trust file would refuse the new known_hosts first

    state, error = await deploy(inventory)
    assert state.is_failed()
    assert isinstance(error, PreflightFailed)
    assert list(error.failures) == ["thinkpad"]
    assert "unknown or changed" in error.failures["thinkpad"][0]
    assert container_ids() == {h: set() for h in topology.HOSTS}


async def test_host_key_rejection_is_not_retried(lab_inventory: Path, tmp_path: Path) -> None:
    from tasks.engine.transport import SshTarget, SshTransport

    (tmp_path / "known_hosts").write_text("")
    target = SshTarget(name="vps", address=topology.HOSTS["vps"], port=22, user="root",
                       known_hosts=tmp_path / "known_hosts", identity=topology.client_key_path(), connect_timeout_s=5)
    with pytest.raises(HostKeyRejected, match="unknown or changed"):
        await SshTransport(target).run(["true"])
