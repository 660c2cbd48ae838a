"""Snapshots against fakepve: a real HTTPS server (127.0.0.1 only) with PVE's API, tasks and faults.

Each test gets a fresh fake (the plugin's function-scoped ``fakepve`` fixture, time_scale 0: a task
has finished by the time its request returns) with an API token and two guests. Faults are
injected with ``pve.fail`` (HTTP errors, or a catalogue error that ends the task with TASK
ERROR), ``pve.snapshot_lock`` (a stale lock) and Ceph slowness with a non-zero time scale (a
task that keeps running).
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from tasks.integrations.proxmox import client as snapshots
from tasks.integrations.proxmox.client import ProxmoxSnapshots
from tasks.integrations.proxmox.errors import SnapshotError
from tasks.integrations.proxmox.names import is_ours, snapshot_name
from tasks.integrations.proxmox.settings import ProxmoxSettings
from tasks.integrations.proxmox.vm import VmRef

TOKEN_ID = "deploy@pve!homelab"
SECRET = "4c1d9e0a-7b2f-4e55-9a31-secret-4f0c"
RUN = "1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d"
WHEN = datetime(2026, 11, 27, 1, 2, tzinfo=UTC)
VM = VmRef("pve1", 100)
CT = VmRef("pve1", 200, "lxc")
SNAP = snapshot_name(RUN, "core", WHEN)
SNAP_PATH = "/nodes/pve1/qemu/100/snapshot"


@pytest.fixture
def pve(fakepve):
    """The fake with our API token, a running VM on LVM-thin and a running container."""
    fakepve.apitokens[TOKEN_ID] = SECRET
    fakepve.add_vm(100, "core", status="running", config={"scsi0": "local-lvm:vm-100-disk-0,size=8G"})
    fakepve.add_ct(200, "dns", status="running", config={"rootfs": "local-lvm:subvol-200-disk-0,size=4G"})
    return fakepve


@pytest.fixture
def settings(pve, fakepve_url, fakepve_cafile) -> ProxmoxSettings:
    return ProxmoxSettings(fakepve_url, TOKEN_ID, SECRET, fakepve_cafile, timeout_s=5, task_timeout_s=5,
                           poll_interval_s=0.01)


@pytest.fixture
def client(settings) -> ProxmoxSnapshots:
    return ProxmoxSnapshots(settings)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(snapshots, "RETRY_DELAY_S", 0.0)


def _requests(pve, method: str, contains: str = "") -> list[tuple[str, str, bytes]]:
    return [r for r in pve.requests if r[0] == method and contains in r[1]]


def _assert_clean(exc: BaseException) -> None:
    """The error names where it happened, says what to do next, and never shows the secret."""
    text = str(exc)
    assert SECRET not in text and SECRET not in repr(exc)
    assert "next:" in text
    assert isinstance(exc, SnapshotError)


# ------------------------------------------------------------------------------ happy paths


def test_create_list_rollback_delete(pve, client, caplog):
    caplog.set_level(logging.DEBUG)
    client.create(VM, SNAP, vmstate=True, description="before deploy of core")

    listed = client.list(VM)
    assert [s["name"] for s in listed] == [SNAP]  # no "current"
    assert listed[0]["vmstate"] == 1
    assert listed[0]["description"] == "before deploy of core"
    assert _requests(pve, "POST", SNAP_PATH)[0][2] == (
        f"snapname={SNAP}&vmstate=1&description=before+deploy+of+core".encode())

    pve.vm(100).config["memory"] = "4096"  # a change the rollback must undo
    client.rollback(VM, SNAP)
    assert "memory" not in pve.vm(100).config
    assert pve.vm(100).config["parent"] == SNAP

    client.delete(VM, SNAP)
    assert client.list(VM) == []

    tasks = {t["type"]: t for t in pve.tasklog}
    assert set(tasks) == {"qmsnapshot", "qmrollback", "qmdelsnapshot"}
    for task in tasks.values():
        assert task["exitstatus"] == "OK"
        assert _requests(pve, "GET", f"/tasks/{task['upid']}/status"), "every task is polled"
    assert SECRET not in caplog.text


def test_vmstate_is_off_by_default_and_rollback_can_start(pve, client):
    client.create(VM, SNAP)
    assert client.list(VM)[0]["vmstate"] == 0
    assert _requests(pve, "POST", SNAP_PATH)[0][2] == f"snapname={SNAP}".encode()
    client.rollback(VM, SNAP)
    assert pve.vm(100).status == "stopped"  # Proxmox stops the VM; without RAM state it stays stopped
    client.rollback(VM, SNAP, start=True)
    assert pve.vm(100).status == "running"
    assert _requests(pve, "POST", "/rollback")[-1][2] == b"start=1"


def test_container_snapshots(pve, client):
    client.create(CT, SNAP)
    assert [s["name"] for s in client.list(CT)] == [SNAP]
    assert _requests(pve, "POST", "/nodes/pve1/lxc/200/snapshot")
    client.delete(CT, SNAP)
    assert client.list(CT) == []
    with pytest.raises(SnapshotError, match="vmstate is only for qemu"):
        client.create(CT, SNAP, vmstate=True)


def test_waits_for_a_running_task(pve, client):
    """A task still running when the request returns is polled until it stops."""
    _slow_vm(pve, secs=0.3)
    client.create(VmRef("pve1", 101), SNAP)
    task = pve.tasklog[-1]
    assert task["exitstatus"] == "OK"
    assert len(_requests(pve, "GET", f"/tasks/{task['upid']}/status")) > 1


def test_prune_keeps_the_newest_of_ours_and_nothing_else(pve, client):
    foreign = ["before-upgrade", "homelab-manual"]  # the second has our prefix but not our layout
    for name in foreign:
        client.create(VM, name)
    ours = [snapshot_name(RUN, "core", WHEN + timedelta(minutes=m)) for m in (0, 5, 60, 24 * 60)]
    for name in (ours[2], ours[0], ours[3], ours[1]):  # creation order must not matter (same snaptime)
        client.create(VM, name)

    assert client.prune(VM, keep=2) == ours[:2]
    assert {s["name"] for s in client.list(VM)} == {*foreign, *ours[2:]}
    assert client.prune(VM, keep=2) == []
    assert client.prune(VM, keep=0) == ours[2:]
    assert {s["name"] for s in client.list(VM)} == set(foreign)
    assert not any(is_ours(name) for name in foreign)
    deletes = [r[1].rsplit("/", 1)[1] for r in _requests(pve, "DELETE")]
    assert deletes == ours  # nothing else was ever asked to be deleted


def test_delete_refuses_a_snapshot_that_is_not_ours(pve, client):
    client.create(VM, "before-upgrade")
    with pytest.raises(SnapshotError) as caught:
        client.delete(VM, "before-upgrade")
    _assert_clean(caught.value)
    assert "not made by the orchestrator" in str(caught.value)
    assert not _requests(pve, "DELETE")
    assert [s["name"] for s in client.list(VM)] == ["before-upgrade"]


def test_invalid_name_is_refused_before_any_request(pve, client):
    with pytest.raises(SnapshotError, match="not a valid Proxmox snapshot name"):
        client.create(VM, "1-starts-with-a-digit")
    assert not _requests(pve, "POST")


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(("fault", "expected"), [
    # A catalogue error raised inside the PVE worker: HTTP 200 with a UPID, then TASK ERROR.
    (dict(error="snapshot_feature_not_available"), ["exitstatus 'snapshot feature is not available'", "LVM-thin"]),
    (dict(error="snapshot_name_already_used"), ["exitstatus \"snapshot name", "already used", "exists already"]),
])
def test_task_with_a_failed_exitstatus(pve, client, fault, expected):
    pve.fail("POST", SNAP_PATH, **fault)
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    exc = caught.value
    _assert_clean(exc)
    for text in expected:
        assert text in str(exc)
    assert exc.upid and exc.upid.startswith("UPID:pve1:")
    assert exc.exitstatus != "OK"
    assert (exc.node, exc.vmid, exc.snapshot) == ("pve1", 100, SNAP)
    assert "pve1/qemu/100" in str(exc) and SNAP in str(exc)
    assert _requests(pve, "GET", f"/tasks/{exc.upid}/log"), "the task log is read for the message"


def test_task_that_outlives_task_timeout(pve, settings):
    vm = _slow_vm(pve, secs=0.5)
    client = ProxmoxSnapshots(ProxmoxSettings(settings.url, TOKEN_ID, SECRET, settings.ca_file,
                                              task_timeout_s=0.1, poll_interval_s=0.02))
    started = time.monotonic()
    with pytest.raises(SnapshotError) as caught:
        client.create(VmRef("pve1", 101), SNAP)
    assert time.monotonic() - started < 0.45
    _assert_clean(caught.value)
    assert "still running after 0.1s" in str(caught.value)
    assert caught.value.upid
    _settle(pve, vm)


def test_http_500_on_a_write_is_not_retried(pve, client):
    pve.fail("POST", SNAP_PATH, 500, "storage 'local-lvm' is not online")
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert "HTTP 500: storage 'local-lvm' is not online" in str(caught.value)
    assert caught.value.http_status == 500
    assert len(_requests(pve, "POST", SNAP_PATH)) == 1


def test_http_500_on_a_read_is_retried(pve, client):
    client.create(VM, SNAP)
    pve.fail("GET", SNAP_PATH, 500, "temporary failure", times=1)
    assert [s["name"] for s in client.list(VM)] == [SNAP]
    pve.fail("GET", SNAP_PATH, 500, "pvedaemon is down")
    with pytest.raises(SnapshotError) as caught:
        client.list(VM)
    _assert_clean(caught.value)
    assert "HTTP 500: pvedaemon is down (after 3 tries)" in str(caught.value)


def test_locked_vm(pve, client):
    pve.snapshot_lock(100)  # an interrupted snapshot left the lock behind
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert "VM is locked (snapshot)" in str(caught.value)
    assert "qm unlock 100" in str(caught.value)


def test_config_lock_timeout_over_http(pve, client):
    pve.fail("DELETE", f"{SNAP_PATH}/{SNAP}", error="config_lock_timeout")
    with pytest.raises(SnapshotError) as caught:
        client.delete(VM, SNAP)
    _assert_clean(caught.value)
    assert "can't lock file" in str(caught.value) and "retry when" in str(caught.value)


def test_bad_token(pve, settings):
    wrong = "00000000-wrong-secret-0000"
    client = ProxmoxSnapshots(ProxmoxSettings(settings.url, TOKEN_ID, wrong, settings.ca_file))
    with pytest.raises(SnapshotError) as caught:
        client.list(VM)
    _assert_clean(caught.value)
    assert wrong not in str(caught.value)
    assert caught.value.http_status == 401
    assert "HTTP 401: authentication failure" in str(caught.value)
    assert TOKEN_ID in str(caught.value) and "PROXMOX_TOKEN_SECRET" in str(caught.value)


def test_missing_privilege(pve, client):
    pve.grant("deploy@pve", "/vms/100", "VM.Audit")  # may list, may not snapshot
    assert client.list(VM) == []
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert caught.value.http_status == 403
    assert "VM.Snapshot" in str(caught.value) and "ACL" in str(caught.value)


@pytest.mark.parametrize("ca", ["other", "system"])
def test_tls_with_the_wrong_ca(pve, settings, tmp_path, ca):
    from fakepve.certs import make_cert

    ca_file = make_cert(str(tmp_path), name="other-ca", hosts=("127.0.0.1",))[0] if ca == "other" else None
    client = ProxmoxSnapshots(ProxmoxSettings(settings.url, TOKEN_ID, SECRET, ca_file))
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "never turn verification off" in str(caught.value)
    assert not pve.requests  # nothing reached the server


def test_connection_refused(pve, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ProxmoxSnapshots(ProxmoxSettings(f"https://127.0.0.1:{port}", TOKEN_ID, SECRET, settings.ca_file,
                                              timeout_s=2))
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert "cannot reach" in str(caught.value) and "nothing was changed" in str(caught.value)


def test_dropped_connections(pve, client):
    pve.flaky_network(drop_rate=1.0)  # every request: connection reset before an answer
    with pytest.raises(SnapshotError) as caught:
        client.list(VM)
    _assert_clean(caught.value)
    assert "(after 3 tries)" in str(caught.value)
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    _assert_clean(caught.value)
    assert "may or may not have reached Proxmox" in str(caught.value)


def test_failed_task_shows_the_end_of_its_log(pve, client):
    pve.fail("POST", SNAP_PATH, error="snapshot_feature_not_available")
    with pytest.raises(SnapshotError) as caught:
        client.create(VM, SNAP)
    upid = caught.value.upid
    # fakepve's failed tasks log only their error; give this one a real-looking log and wait again.
    pve.tasks[upid]["log"][:0] = [f"snapshotting 'drive-scsi{n}' (local:100/vm-100-disk-{n}.raw)" for n in range(9)]
    with pytest.raises(SnapshotError) as caught:
        client._wait(snapshots._Op(client, "create", VM, SNAP), upid)
    text = str(caught.value)
    assert "task log:" in text
    assert "drive-scsi8" in text and "drive-scsi3" in text and "drive-scsi2" not in text  # the last 6 lines


@pytest.mark.parametrize(("change", "expected"), [
    (dict(url="http://127.0.0.1:8006"), "not https://"),
    (dict(token_id="deploy@pve"), "user@realm!tokenname"),
    (dict(ca_file="/nonexistent/ca.pem"), "does not exist"),
])
def test_bad_settings(settings, change, expected):
    fields = dict(url=settings.url, token_id=TOKEN_ID, token_secret=SECRET, ca_file=settings.ca_file) | change
    with pytest.raises(SnapshotError, match=expected) as caught:
        ProxmoxSnapshots(ProxmoxSettings(**fields))
    assert SECRET not in str(caught.value)


def test_secret_is_in_no_repr(settings, client):
    assert SECRET not in repr(settings)
    assert SECRET not in repr(client)


def test_block_gives_settings():
    from blocks.proxmox import ProxmoxAccess

    block = ProxmoxAccess(url="https://pve.example:8006", token_id=TOKEN_ID, token_secret=SECRET)
    assert ProxmoxAccess.get_block_type_name() == "Homelab Proxmox Access"
    assert SECRET not in repr(block)
    assert block.settings() == ProxmoxSettings("https://pve.example:8006", TOKEN_ID, SECRET, None)


# ------------------------------------------------------------------------------ helpers


def _slow_vm(pve, secs: float):
    """VM 101 on Ceph with slow OSDs: its snapshot task runs about ``secs`` real seconds."""
    pve.add_ceph_storage()
    pve.ceph_slow(secs)
    pve.time_scale = 1.0
    return pve.add_vm(101, "slow", status="running", config={"scsi0": "ceph-pool:vm-101-disk-0,size=8G"})


def _settle(pve, vm, limit: float = 5.0) -> None:
    """Wait for the fake's background task to end, so the fixture stops a quiet server."""
    deadline = time.monotonic() + limit
    while any(t["status"] != "stopped" for t in pve.tasklog) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(t["status"] == "stopped" for t in pve.tasklog), vm
