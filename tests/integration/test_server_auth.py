"""A Prefect server that listens beyond loopback (here on the lab bridge) refuses unauthenticated
API calls: whoever can create a run can start a deploy."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from lab import topology
from tests.conftest import _free_port

HOMELAB = [sys.executable, "-m", "deployments.cli"]


def post(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_server_beyond_loopback_requires_the_auth_string(lab_inventory: Path, tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "HOMELAB_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    up = subprocess.run([*HOMELAB, "server", "up", "--host", topology.GATEWAY, "--port", str(port)], env=env,
                        capture_output=True, text=True, timeout=150)
    try:
        assert up.returncode == 0, up.stderr
        assert "API auth: on" in up.stderr
        auth = (tmp_path / "prefect-auth").read_text().strip()
        assert auth not in up.stdout + up.stderr  # the string itself is never printed
        api = f"http://{topology.GATEWAY}:{port}/api"
        assert post(f"{api}/flows/filter") == 401
        assert post(f"{api}/flows/filter", "homelab:wrong") == 401
        assert post(f"{api}/flows/filter", auth) == 200
    finally:
        subprocess.run([*HOMELAB, "server", "down"], env=env, capture_output=True, timeout=60)
