"""Remote time limits and secrets left behind, against the lab hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab import manager, topology
from model.errors import RemoteTimeout
from tests.integration.deploying import deploy, on_host, results
from tests.integration.secretlab import homelab, lab_copy

pytestmark = [pytest.mark.lab]


def _transport(timeout_s: float = 300):
    from tasks.engine.transport import SshTarget, SshTransport

    return SshTransport(SshTarget(name="vps", address=topology.HOSTS["vps"], port=22, user="root",
                                  known_hosts=topology.known_hosts_path(), identity=topology.client_key_path(),
                                  connect_timeout_s=5, command_timeout_s=timeout_s))


async def test_a_command_past_its_time_limit_is_ended_on_the_host(lab_inventory: Path):
    transport = _transport()
    try:
        with pytest.raises(RemoteTimeout, match="did not finish within 2s"):
            await transport.run(["sh", "-c", "sleep 37 & sleep 38; wait"], timeout=2)
        assert manager.exec_on("vps", ["pgrep", "-f", "sleep 3[78]"]).returncode == 1  # nothing left behind
        fed = await transport.run(["cat"], input=b"stdin still reaches the command\n", timeout=5)
        assert fed.stdout == "stdin still reaches the command\n"
        own = await transport.run(["sh", "-c", "exit 124"], check=False, timeout=5)
        assert own.exit_status == 124  # a command's own 124 is not a time-out
    finally:
        await transport.close()


@pytest.mark.usefixtures("prefect_api")
async def test_a_prune_leaves_no_env_file(clean_lab, tmp_path, vault):
    inventory = lab_copy(clean_lab, tmp_path, "v1", vault["_prefix"])
    state, report = await deploy(inventory)
    assert state.is_completed(), report
    assert on_host("vps", ["ls", "-A", "/root/.homelab/stacks/newsletter"]).count(".env") >= 1
    data = yaml.safe_load(inventory.read_text())
    del data["phases"]["edge"]["stacks"]["newsletter"]
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    manager.exec_on("vps", ["sh", "-c", "echo K=v > /root/.homelab/stacks/newsletter/.env.secrets.tmp.99; "
                                        "touch -d '-1 hour' /root/.homelab/stacks/newsletter/.env.secrets.tmp.99"])
    state, report = await deploy(inventory, prune=True)
    assert results(report)[("vps", "newsletter")] == "removed", report
    left = on_host("vps", ["find", "/root/.homelab/stacks/newsletter", "/root/.homelab/releases/newsletter",
                           "-name", ".env*"])
    assert left == ""
    assert on_host("vps", ["find", "/root/.homelab/releases/newsletter", "-type", "f"]).strip()  # records stay

    # a stale temp file and an orphan env file, planted: scrub lists, then removes them
    manager.exec_on("vps", ["sh", "-c", "mkdir -p /root/.homelab/stacks/ghost && echo K=v > "
                                        "/root/.homelab/stacks/ghost/.env.secrets && echo K=v > "
                                        "/root/.homelab/stacks/api-gateway/.env.tmp.4242 && touch -d '-1 hour' "
                                        "/root/.homelab/stacks/api-gateway/.env.tmp.4242"])
    listed = homelab("secrets", "scrub", "-i", str(inventory), "--dry-run")
    assert listed.returncode == 1, listed.stderr
    assert ".homelab/stacks/ghost/.env.secrets (env, stack ghost)" in listed.stdout
    assert ".homelab/stacks/api-gateway/.env.tmp.4242" in listed.stdout
    removed = homelab("secrets", "scrub", "-i", str(inventory))
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert manager.exec_on("vps", ["test", "-e", "/root/.homelab/stacks/ghost/.env.secrets"]).returncode == 1
    assert manager.exec_on("vps", ["test", "-e", "/root/.homelab/stacks/api-gateway/.env.tmp.4242"]).returncode == 1
    assert homelab("secrets", "scrub", "-i", str(inventory), "--dry-run").returncode == 0
