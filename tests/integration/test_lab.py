"""The simulated homelab itself: real SSH with pinned host keys, hosts that reach only the lab,
a GPU on rtx1080 only, podman behind `docker compose`, single-host faults, and a clean down.

Every address used here is in 10.203.0.0/24 or loopback; `ip route get` sends no packet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import manager
from lab.topology import (
    BRIDGE,
    GATEWAY,
    GPU_HOSTS,
    HOSTS,
    LAB_DIR,
    client_key_path,
    known_hosts_path,
)

pytestmark = pytest.mark.lab

REQUIRED_TOOLS = ("podman", "runc", "conmon", "catatonit", "sshd", "nsenter", "unshare", "ip", "iptables", "docker")


@pytest.fixture(scope="module")
def lab() -> Iterator[bool]:
    """The lab, up. Yields whether it was already up (then it is left up at the end)."""
    if os.geteuid() != 0:
        pytest.skip("the simulated lab needs root (network namespaces)")
    missing = [tool for tool in REQUIRED_TOOLS if not shutil.which(tool, path=manager.SUPERUSER_PATH)]
    if missing:
        pytest.skip(f"lab tools missing ({', '.join(missing)}): run scripts/setup.sh")
    was_up = all(s["up"] and s["sshd"] and s["engine"] for s in manager.status().values())
    manager.up()
    yield was_up
    if not was_up:
        manager.down()


def ssh(
    host: str, command: str, *, known_hosts: Path | None = None, connect_timeout: int = 5
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, strict host key checking against the lab's known_hosts."""
    argv = [
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts or known_hosts_path()}",
        "-o", f"ConnectTimeout={connect_timeout}", "-i", str(client_key_path()),
        f"root@{HOSTS[host]}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_answers_ssh_with_its_own_name(lab: bool, host: str) -> None:
    done = ssh(host, "hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == host


def test_a_host_key_that_does_not_match_is_refused(lab: bool, tmp_path: Path) -> None:
    pinned = dict(line.split(" ", 1) for line in known_hosts_path().read_text().splitlines())
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{HOSTS['thinkpad']} {pinned[HOSTS['vps']]}\n")  # vps's key under thinkpad's address
    done = ssh("thinkpad", "true", known_hosts=wrong)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_a_host_reaches_only_the_lab_subnet(lab: bool, host: str) -> None:
    routes = manager.exec_on(host, ["ip", "-4", "route"]).stdout.decode()
    assert "default" not in routes
    outside = manager.exec_on(host, ["ip", "route", "get", "1.1.1.1"])  # a route lookup, no packet
    assert outside.returncode != 0
    assert b"unreachable" in outside.stderr
    assert manager.exec_on(host, ["ip", "route", "get", GATEWAY]).returncode == 0


@pytest.mark.parametrize("host", HOSTS)
def test_nvidia_smi_exists_only_on_the_gpu_host(lab: bool, host: str) -> None:
    done = ssh(host, "nvidia-smi -L")
    if host in GPU_HOSTS:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("GPU 0: NVIDIA GeForce GTX 1080 (UUID: GPU-")
    else:
        assert done.returncode == 127  # command not found


def test_nvidia_smi_query_answers_like_the_real_tool(lab: bool) -> None:
    fields = "index,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,driver_version"
    done = ssh("rtx1080", f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits")
    assert done.returncode == 0, done.stderr
    values = done.stdout.rstrip("\n").split(", ")
    assert len(values) == len(fields.split(","))
    assert values[:3] == ["0", "NVIDIA GeForce GTX 1080", "8192"]
    assert int(values[3]) + int(values[4]) == 8192
    assert values[-1] == "535.183.01"
    bad = ssh("rtx1080", "nvidia-smi --query-gpu=index,bogus --format=csv,noheader")
    assert bad.returncode == 2
    assert 'Field "bogus" is not a valid field to query.' in bad.stderr


def test_compose_up_is_healthy_reachable_and_recreates_only_on_change(lab: bool) -> None:
    host, port = "thinkpad", 18990
    compose = (
        "services:\n  web:\n    image: localhost/lab-web:{tag}\n    network_mode: host\n    init: true\n"
        f"    environment:\n      PORT: '{port}'\n      STACK: labtest\n"
    )
    up = (
        "mkdir -p /srv/labtest && cat > /srv/labtest/compose.yaml"
        " && docker compose -p labtest -f /srv/labtest/compose.yaml up -d"
    )
    inspect = ["docker", "inspect", "-f", "{{.Id}} {{.State.Health.Status}}", "labtest-web-1"]

    def wait_healthy() -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cid, _, health = manager.exec_on(host, inspect).stdout.decode().strip().partition(" ")
            if health == "healthy":
                return cid
            time.sleep(0.2)
        raise AssertionError(f"labtest-web-1 not healthy: {health}")

    try:
        done = manager.exec_on(host, ["sh", "-c", up], input=compose.format(tag="1").encode())
        assert done.returncode == 0, done.stderr
        first = wait_healthy()
        # What the orchestrator's probes do: a direct-tcpip channel to 127.0.0.1:PORT on the host.
        probe = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={known_hosts_path()}", "-i", str(client_key_path()),
             "-W", f"127.0.0.1:{port}", f"root@{HOSTS[host]}"],
            input=b"GET /health HTTP/1.0\r\n\r\n", capture_output=True, timeout=30,
        )  # fmt: skip
        assert probe.stdout.startswith(b"HTTP/1.1 200"), probe.stderr
        assert probe.stdout.endswith(b"\r\n\r\nok 1")

        again = manager.exec_on(host, ["sh", "-c", up], input=compose.format(tag="1").encode())
        assert again.returncode == 0, again.stderr
        assert wait_healthy() == first, "an unchanged `up -d` must not recreate the container"

        changed = manager.exec_on(host, ["sh", "-c", up], input=compose.format(tag="2").encode())
        assert changed.returncode == 0, changed.stderr
        assert wait_healthy() != first

        ps = manager.exec_on(host, ["docker", "compose", "-p", "labtest", "ps", "--format", "json"])
        rows = [json.loads(line) for line in ps.stdout.decode().splitlines() if line.strip()]
        assert [(r["Service"], r["Image"], r["Health"]) for r in rows] == [("web", "localhost/lab-web:2", "healthy")]
    finally:
        manager.exec_on(host, ["docker", "compose", "-p", "labtest", "-f", "/srv/labtest/compose.yaml", "down"])


def test_stop_sshd_makes_only_ssh_unreachable(lab: bool) -> None:
    manager.stop_sshd("thinkpad")
    try:
        state = manager.status()["thinkpad"]
        assert (state["up"], state["sshd"], state["engine"]) == (True, False, True)
        assert ssh("thinkpad", "true").returncode == 255
        assert ssh("vps", "true").returncode == 0
    finally:
        manager.start_sshd("thinkpad")
    assert manager.status()["thinkpad"]["sshd"]
    assert ssh("thinkpad", "hostname").stdout.strip() == "thinkpad"


def test_stop_engine_leaves_ssh_up_and_docker_failing(lab: bool) -> None:
    manager.stop_engine("vps")
    try:
        assert manager.status()["vps"]["engine"] is False
        done = ssh("vps", "docker ps")
        assert done.returncode != 0
        assert "Cannot connect to the Docker daemon" in done.stderr
    finally:
        manager.start_engine("vps")
    assert ssh("vps", "docker ps -q").returncode == 0


def test_link_down_cuts_the_host_off(lab: bool) -> None:
    manager.link_down("vps")
    try:
        assert ssh("vps", "true", connect_timeout=2).returncode == 255
    finally:
        manager.link_up("vps")
    assert ssh("vps", "hostname").stdout.strip() == "vps"


def test_reset_removes_containers_and_deploy_state(lab: bool) -> None:
    setup = "mkdir -p /root/.homelab/releases && docker run -d --name leftover localhost/lab-worker:1"
    assert manager.exec_on("rtx1080", ["sh", "-c", setup]).returncode == 0
    manager.reset()
    assert manager.exec_on("rtx1080", ["docker", "ps", "-aq"]).stdout == b""
    assert manager.exec_on("rtx1080", ["test", "-e", "/root/.homelab"]).returncode == 1


def test_down_leaves_nothing_running_or_mounted(lab: bool) -> None:
    """Runs last in this module; brings the lab back up if it was up before the module."""
    recorded = json.loads((LAB_DIR / "machine-state.json").read_text())
    manager.down()
    try:
        assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.strip() == ""
        assert not Path("/sys/class/net", BRIDGE).exists()
        mounts = Path("/proc/mounts").read_text()
        assert "hlab" not in mounts
        assert str(LAB_DIR) not in mounts
        for pattern in ("hostinit.sh", "podman system service", "healthdriver.py", str(LAB_DIR / "hosts")):
            found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
            assert found == "", f"lab processes left: {found}"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == recorded["ip_forward"]
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
        assert BRIDGE not in rules
        assert not (LAB_DIR / "machine-state.json").exists()
        manager.down()  # idempotent
        assert not any(s["up"] for s in manager.status().values())
    finally:
        if lab:
            manager.up()
