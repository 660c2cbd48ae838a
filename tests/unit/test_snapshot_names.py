"""Snapshot names, ownership, settings from the environment and hints: pure, no Proxmox."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks.integrations.proxmox.errors import SnapshotError
from tasks.integrations.proxmox.hints import hint_for
from tasks.integrations.proxmox.names import MAX_NAME, PREFIX, is_ours, snapshot_name
from tasks.integrations.proxmox.settings import ProxmoxSettings, settings_from_env
from tasks.integrations.proxmox.vm import VmRef

RUN = "1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d"
WHEN = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)
PVE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def test_snapshot_name_example():
    assert snapshot_name(RUN, "core", WHEN) == "homelab-20261127T0102-core-1a2b3c4d"


@pytest.mark.parametrize(("phase", "expected"), [
    ("core", "core"),
    ("Media Stack", "media-sta"),  # lower-cased, spaces become '-', cut to fit 40
    ("db_2", "db-2"),
    ("--edge--", "edge"),
    ("a" * 50, "a" * 9),
    ("x/../y", "x-y"),
    ("", "phase"),
    ("ümlaut!", "mlaut"),
    ("🙂", "phase"),
])
def test_snapshot_name_phase_is_sanitised(phase, expected):
    assert snapshot_name(RUN, phase, WHEN) == f"homelab-20261127T0102-{expected}-1a2b3c4d"


@pytest.mark.parametrize("run", [RUN, "manual", "x" * 200, "1A2B3C4D-5E6F-4A0B-8C9D-0E1F2A3B4C5D"])
@pytest.mark.parametrize("phase", ["core", "a-very-long-phase-name-indeed", "UPPER case", ""])
def test_snapshot_name_is_valid_for_proxmox_and_ours(run, phase):
    name = snapshot_name(run, phase, WHEN)
    assert len(name) <= MAX_NAME
    assert PVE_NAME.fullmatch(name)
    assert name.startswith(PREFIX)
    assert is_ours(name)


def test_snapshot_name_run_tag():
    assert snapshot_name(RUN.upper(), "core", WHEN).endswith("-1a2b3c4d")
    other = snapshot_name("manual", "core", WHEN)  # not a UUID: a stable hash
    assert other == snapshot_name("manual", "core", WHEN)
    assert re.fullmatch(r".*-[0-9a-f]{8}", other)
    with pytest.raises(ValueError):
        snapshot_name("", "core", WHEN)


def test_snapshot_name_uses_utc():
    cet = timezone(timedelta(hours=1))
    assert snapshot_name(RUN, "core", datetime(2026, 11, 27, 2, 2, tzinfo=cet)) == snapshot_name(RUN, "core", WHEN)
    assert snapshot_name(RUN, "core", datetime(2026, 11, 27, 1, 2)) == snapshot_name(RUN, "core", WHEN)  # naive
    assert re.fullmatch(r"homelab-\d{8}T\d{4}-core-1a2b3c4d", snapshot_name(RUN, "core"))


def test_snapshot_names_sort_by_time():
    times = [WHEN + timedelta(minutes=m) for m in (0, 1, 59, 60, 24 * 60, 400 * 24 * 60)]
    runs = ["ffffffff-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000"]
    names = [snapshot_name(runs[i % 2], "zz" if i % 2 else "aa", t) for i, t in enumerate(times)]
    assert sorted(names) == names
    assert sorted(reversed(names)) == names


@pytest.mark.parametrize(("name", "ours"), [
    ("homelab-20261127T0102-core-1a2b3c4d", True),
    ("homelab-20261127T0102-media-sta-1a2b3c4d", True),
    ("homelab-before-upgrade", False),  # hand-made, even with our prefix
    ("homelab-", False),
    ("before-upgrade", False),
    ("current", False),
    ("Homelab-20261127T0102-core-1a2b3c4d", False),
    ("homelab-20261127T0102-core-1A2B3C4D", False),
    ("homelab-20261127T0102-core-1a2b3c4", False),
    ("homelab-20261127-core-1a2b3c4d", False),
    ("homelab-20261127T0102--1a2b3c4d", False),
    ("homelab-20261127T0102-core-1a2b3c4d-x", False),
    ("homelab-20261127T0102-abcdefghijk-1a2b3c4d", False),  # 41 characters
    ("xhomelab-20261127T0102-core-1a2b3c4d", False),
    ("", False),
])
def test_is_ours(name, ours):
    assert is_ours(name) is ours


def test_settings_from_env():
    assert settings_from_env({}) is None
    assert settings_from_env({"PROXMOX_URL": "", "PROXMOX_TOKEN_ID": "a@pam!t"}) is None
    env = {"PROXMOX_URL": "https://pve.example:8006", "PROXMOX_TOKEN_ID": "deploy@pve!homelab",
           "PROXMOX_TOKEN_SECRET": "0f1e2d3c-secret", "PROXMOX_CA_FILE": "/etc/homelab/pve-ca.pem"}
    assert settings_from_env(env) == ProxmoxSettings("https://pve.example:8006", "deploy@pve!homelab",
                                                     "0f1e2d3c-secret", "/etc/homelab/pve-ca.pem")
    assert settings_from_env({**env, "PROXMOX_CA_FILE": ""}).ca_file is None
    assert settings_from_env({k: v for k, v in env.items() if k != "PROXMOX_CA_FILE"}).ca_file is None


def test_settings_from_env_needs_a_token():
    with pytest.raises(SnapshotError) as caught:
        settings_from_env({"PROXMOX_URL": "https://pve.example:8006", "PROXMOX_TOKEN_SECRET": "0f1e2d3c-secret"})
    assert "PROXMOX_TOKEN_ID" in str(caught.value)
    assert "0f1e2d3c-secret" not in str(caught.value)


def test_settings_repr_hides_the_secret():
    settings = ProxmoxSettings("https://pve.example:8006", "deploy@pve!homelab", "0f1e2d3c-secret", None)
    assert "0f1e2d3c-secret" not in repr(settings)
    assert "0f1e2d3c-secret" not in str(settings)
    assert "deploy@pve!homelab" in repr(settings)


def test_vmref_checks_kind():
    assert str(VmRef("pve1", 100)) == "pve1/qemu/100"
    assert VmRef("pve1", 200, "lxc").tool == "pct"
    with pytest.raises(ValueError):
        VmRef("pve1", 100, "docker")


@pytest.mark.parametrize(("cause", "status", "expected"), [
    ("VM is locked (snapshot)", None, "qm unlock 100"),
    ("can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", 500, "retry when"),
    ("snapshot name 'x' already used", None, "exists already"),
    ("authentication failure", 401, "PROXMOX_TOKEN_SECRET"),
    ("Permission check failed (/vms/100, VM.Snapshot)", 403, "VM.Snapshot"),
    ("cluster not ready - no quorum?", 500, "quorum"),
    ("No route to host", 595, "offline"),
    ("boom", 500, "journal"),
    ("WARNINGS: 2", None, "warnings"),
])
def test_hints(cause, status, expected):
    assert expected in hint_for(cause, VmRef("pve1", 100), http_status=status, token_id="deploy@pve!homelab")
