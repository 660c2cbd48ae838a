"""Proxmox snapshots around a `snapshot: true` phase, in a real deploy of the lab, against fakepve."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.integrations.proxmox.client import ProxmoxSnapshots
from tasks.integrations.proxmox.names import is_ours
from tasks.integrations.proxmox.settings import settings_from_env
from tasks.integrations.proxmox.vm import VmRef
from tests.integration.deploying import current_release, deploy, project_container_ids, results

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

TOKEN_ID = "deploy@pve!homelab"
SECRET = "b3f1c2d4-0e5a-4c6b-9d7e-proxmox-secret"


@pytest.fixture
def pve(fakepve, fakepve_url, fakepve_cafile, monkeypatch):
    fakepve.apitokens[TOKEN_ID] = SECRET
    fakepve.add_vm(100, "rtx1080", status="running", config={"scsi0": "local-lvm:vm-100-disk-0,size=64G"})
    monkeypatch.setenv("PROXMOX_URL", fakepve_url)
    monkeypatch.setenv("PROXMOX_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("PROXMOX_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("PROXMOX_CA_FILE", fakepve_cafile)
    return fakepve


@pytest.fixture
def repo(clean_lab: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "config"
    subprocess.run(["git", "clone", "-q", str(clean_lab.parent), str(copy)], check=True)
    return copy


def checkout(repo: Path, tag: str) -> Path:
    """The lab release ``tag``, with rtx1080 mapped to Proxmox VM 100 and phase apps snapshotted."""
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-f", tag], check=True)
    inventory = repo / "homelab.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["proxmox"] = {"keep_snapshots": 2}
    data["hosts"]["rtx1080"]["proxmox"] = {"node": "pve1", "vmid": 100}
    data["phases"]["apps"]["snapshot"] = True
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


def requests(pve, method: str, contains: str) -> list:
    return [r for r in pve.requests if r[0] == method and contains in r[1]]


async def test_rollback_phase_reverts_the_vm_snapshot_taken_before_the_phase(pve, repo: Path) -> None:
    _, first = await deploy(checkout(repo, "v1"))
    assert first["result"] == "success"
    assert [s["result"] for s in first["snapshots"]] == ["taken"]  # media (rtx1080) was created in apps

    _, report = await deploy(checkout(repo, "v3-broken"), on_failure="rollback-phase")
    assert report["result"] == "failed"
    snaps = report["snapshots"]
    assert [s["result"] for s in snaps] == ["taken", "reverted"]
    name = snaps[0]["name"]
    assert name.startswith("homelab-") and "apps" in name
    assert requests(pve, "POST", f"/qemu/100/snapshot/{name}/rollback")
    remaining = ProxmoxSnapshots(settings_from_env()).list(VmRef("pve1", 100))
    assert name in [s["name"] for s in remaining]
    assert len([s for s in remaining if is_ours(s["name"])]) <= 2  # keep_snapshots


async def test_default_policy_keeps_the_snapshot_and_does_not_revert(pve, repo: Path) -> None:
    await deploy(checkout(repo, "v1"))
    _, report = await deploy(checkout(repo, "v3-broken"))
    assert [s["result"] for s in report["snapshots"]] == ["taken"]
    assert not requests(pve, "POST", "/rollback")


async def test_a_failed_snapshot_keeps_the_phase_from_starting(pve, repo: Path) -> None:
    _, first = await deploy(checkout(repo, "v1"))
    assert first["result"] == "success"
    media_before = project_container_ids("rtx1080", "media")
    release_before = current_release("rtx1080", "media")
    pve.fail("POST", "/qemu/100/snapshot", 500, "storage 'local-lvm' is offline", times=5)

    _, report = await deploy(checkout(repo, "v3-broken"))
    assert report["result"] == "failed"
    media = results(report)[("rtx1080", "media")]
    assert media == "failed"
    error = next(s for s in report["stacks"] if s["stack"] == "media")["error"]
    assert "snapshot of rtx1080 failed" in error
    assert SECRET not in str(report)
    assert project_container_ids("rtx1080", "media") == media_before  # nothing in the phase ran
    assert current_release("rtx1080", "media") == release_before
    assert all(s["result"] == "not-run" for s in report["stacks"] if s["phase"] in ("ai", "edge"))
