"""``homelab serve --detach`` and ``--stop`` as a newcomer types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOMELAB = [sys.executable, "-m", "deployments.cli"]

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]


def homelab(*args: str, env: dict) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOMELAB, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_detach_status_through_it_then_stop(lab_inventory: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HOMELAB_HOME": str(tmp_path)}
    env.pop("HOMELAB_WEBHOOK_SECRET", None)
    inv = str(lab_inventory)
    started = homelab("serve", "--detach", "-i", inv, env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert "running in the background" in started.stdout
        assert f"Prefect UI: {os.environ['PREFECT_API_URL'].removesuffix('/api')}/deployments" in started.stdout
        pid = int((tmp_path / "serve/serve.pid").read_text())
        assert "webhook: off" in (tmp_path / "serve/serve.log").read_text()  # no secret: no receiver

        again = homelab("serve", "--detach", "-i", inv, env=env)
        assert again.returncode == 2 and f"already runs (pid {pid})" in again.stderr

        status = homelab("status", "-i", inv, "--json", env=env)
        assert status.returncode in (0, 1), status.stderr
        assert set(json.loads(status.stdout)["hosts"]) == {"vps", "thinkpad", "rtx1080"}
        assert "control socket: status asked by the CLI" in (tmp_path / "serve/serve.log").read_text()
    finally:
        stopped = homelab("serve", "--stop", env=env)
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not (tmp_path / "serve/control.sock").exists()
    assert homelab("serve", "--stop", env=env).stdout.strip() == "homelab serve: not running"
