"""``homelab import`` on the lab: projects started by hand with plain ``docker compose up``
become stack folders and an inventory fragment, and the first deploy recreates nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from lab import manager
from tests.integration.deploying import deploy, on_host, project_container_ids

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

HOMELAB = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "homelab")
SECRET_VALUE = "s3cr3t-token-value"
HANDMADE = {
    "compose.yaml": yaml.safe_dump({"services": {"web": {
        "image": "localhost/lab-web:${WEB_TAG}", "init": True, "network_mode": "host",
        "environment": {"PORT": "8195", "STACK": "handmade"}, "volumes": ["./site.conf:/tmp/www/site.conf:ro"]}}}),
    ".env": "WEB_TAG=1\n",
    "site.conf": "served = yes\n",
}
SECRETIVE = {
    "compose.yaml": yaml.safe_dump({"services": {"worker": {
        "image": "localhost/lab-worker:1", "init": True, "network_mode": "host", "env_file": ["app.env"]}}}),
    "app.env": f"API_TOKEN={SECRET_VALUE}\nMODE=batch\n",
}


def start_by_hand(host: str, name: str, files: dict[str, str]) -> None:
    """Files in the host's own /root (bind-mounted per lab host), then `docker compose up -d`."""
    for relative, text in files.items():
        manager.exec_on(host, ["sh", "-c", f'mkdir -p /root/{name} && cat > /root/{name}/{relative}'],
                        input=text.encode())
    on_host(host, ["sh", "-c", f"cd /root/{name} && docker compose up -d --quiet-pull"])


def homelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOMELAB, *args], capture_output=True, text=True, timeout=120, check=False)


async def test_import_then_deploy_recreates_nothing(clean_lab: Path, tmp_path: Path) -> None:
    start_by_hand("vps", "handmade", HANDMADE)
    start_by_hand("vps", "secretive", SECRETIVE)
    try:
        before = project_container_ids("vps", "handmade")
        assert before
        into = tmp_path / "imported"
        done = homelab("import", "-i", str(clean_lab), "--host", "vps", "--into", str(into), "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        by_stack = {s["stack"]: s for s in result["stacks"]}
        assert by_stack["handmade"]["files"] == [".env", "compose.yaml", "site.conf"]
        assert (into / "stacks/handmade/site.conf").read_text() == HANDMADE["site.conf"]
        secretive = by_stack["secretive"]
        assert secretive["files"] == ["compose.yaml"]  # app.env holds a secret: not copied
        assert secretive["entry"]["secrets"] == [{"path": "homelab/secretive/app-env", "keys": ["API_TOKEN", "MODE"],
                                                  "env_file": "app.env"}]
        assert any("app.env: holds secrets (API_TOKEN)" in note for note in secretive["notes"])
        for path in into.rglob("*"):
            assert not path.is_file() or SECRET_VALUE not in path.read_text(errors="replace"), path
        assert SECRET_VALUE not in done.stdout + done.stderr

        fragment = yaml.safe_load((into / "homelab.fragment.yaml").read_text())
        entry = fragment["phases"]["adopted"]["stacks"]["handmade"]
        assert entry == {"hosts": ["vps"], "project_dir": "/root/handmade", "compose": ["compose.yaml"],
                         "description": "adopted from vps"}
        repo = tmp_path / "repo"
        (repo / "stacks").mkdir(parents=True)
        (into / "stacks" / "handmade").rename(repo / "stacks" / "handmade")
        lab = yaml.safe_load(clean_lab.read_text())
        lab["phases"] = {"adopted": {"stacks": {"handmade": entry}}}
        (repo / "homelab.yaml").write_text(yaml.safe_dump(lab, sort_keys=False))

        plan = homelab("plan", "-i", str(repo / "homelab.yaml"), "--json")
        assert plan.returncode == 0, plan.stderr
        [change] = json.loads(plan.stdout)["changes"]
        assert (change["action"], change["reason"]) == ("create", "never deployed to this host")
        _, report = await deploy(repo / "homelab.yaml")
        assert report["result"] == "success", report
        assert project_container_ids("vps", "handmade") == before  # adopted, not recreated
        again = homelab("plan", "-i", str(repo / "homelab.yaml"), "--json")
        assert [c["action"] for c in json.loads(again.stdout)["changes"]] == ["unchanged"]
    finally:
        for name in ("handmade", "secretive"):
            manager.exec_on("vps", ["sh", "-c", f"cd /root/{name} && docker compose down; rm -rf /root/{name}"])


async def test_import_of_an_unknown_project_says_what_runs(clean_lab: Path, tmp_path: Path) -> None:
    done = homelab("import", "-i", str(clean_lab), "--host", "vps", "--project", "nope", "--into", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert "no compose project nope on vps" in done.stderr and "Traceback" not in done.stderr
