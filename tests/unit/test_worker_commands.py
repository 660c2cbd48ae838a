"""The pure pieces of a host's worker: its pool, its environment, its env file and unit."""

from __future__ import annotations

import subprocess

import pytest

from model.inventory import Host
from model.work_pools import host_pool
from tasks.host_commands.worker import (
    env_file_text,
    start_supervised,
    stop_supervised,
    systemd_unit,
    worker_env,
    write_env_file,
)


def test_a_gpu_host_gets_a_gpu_tagged_pool_and_others_their_own_name() -> None:
    assert host_pool("rtx1080", Host(address="10.0.0.3", gpu=True)).name == "rtx1080-gpu"
    assert host_pool("rtx1080", Host(address="10.0.0.3", gpu=True)).tags == ("gpu",)
    assert (host_pool("vps", Host(address="10.0.0.1")).name, host_pool("vps", Host(address="10.0.0.1")).tags) == (
        "vps", ())


def test_the_worker_polls_every_second_and_carries_the_auth_string_only_when_there_is_one() -> None:
    env = worker_env("https://10.0.0.9:4200/api", "admin:s3cr3t", ca_file="/etc/homelab/ca.pem")
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "1"
    assert env["PREFECT_API_AUTH_STRING"] == "admin:s3cr3t"
    assert env["PREFECT_API_SSL_CERT_FILE"] == "/etc/homelab/ca.pem"
    assert "PREFECT_API_AUTH_STRING" not in worker_env("http://127.0.0.1:4200/api", None)
    with pytest.raises(ValueError, match="http"):
        worker_env("10.0.0.9:4200", None)


def test_the_env_file_reads_back_in_sh_and_the_secret_is_never_on_the_command_line(tmp_path) -> None:
    env = worker_env("http://10.0.0.9:4200/api", "admin:p@ss w$rd;x")
    argv = write_env_file(str(tmp_path))
    assert all("p@ss" not in part for part in argv)
    subprocess.run(argv, input=env_file_text(env).encode(), check=True)
    path = tmp_path / ".homelab-worker" / "env"
    assert path.stat().st_mode & 0o777 == 0o600
    shown = subprocess.run(["sh", "-c", 'set -a; . "$1"; printf %s "$PREFECT_API_AUTH_STRING"', "t", str(path)],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "admin:p@ss w$rd;x"
    with pytest.raises(ValueError, match="single quote"):
        env_file_text({"PREFECT_API_AUTH_STRING": "it's"})


def test_the_unit_restarts_the_worker_for_its_pool_and_reads_the_env_file() -> None:
    unit = systemd_unit(pool="rtx1080-gpu", name="rtx1080", python="/opt/homelab/venv/bin/python",
                        project_dir="/opt/homelab/project", env_file="/root/.homelab/worker/env")
    assert ("ExecStart=/opt/homelab/venv/bin/python -m prefect worker start --pool rtx1080-gpu --type process "
            "--name rtx1080") in unit
    assert "EnvironmentFile=/root/.homelab/worker/env" in unit and "Restart=always" in unit
    assert "AUTH" not in unit


def test_the_supervisor_restarts_the_worker_and_stops_with_it_and_its_flow_runs(tmp_path) -> None:
    """The lab's (and any systemd-less host's) supervisor, run for real with a stand-in worker:
    it reads the env file, restarts a worker that exits, and stops it on the way out, with the
    flow runs that Prefect started in sessions of their own (as systemd's cgroup would)."""
    import subprocess
    import time

    state = str(tmp_path)
    (tmp_path / ".homelab-worker" / "project").mkdir(parents=True)
    (tmp_path / ".homelab-worker" / "env").write_text(env_file_text({"GREETING": "hello there"}))
    stand_in = tmp_path / "fake_python"
    stand_in.write_text('#!/bin/sh\necho "run $GREETING $*" >> "$0.runs"; sleep 0.3\n')
    stand_in.chmod(0o755)
    start = start_supervised(state, str(stand_in), "vps", "vps@1")
    subprocess.run(start, check=True, timeout=20)
    time.sleep(3.5)
    runs = (tmp_path / "fake_python.runs").read_text().splitlines()
    assert len(runs) >= 2, runs  # restarted after it exited
    assert runs[0] == "run hello there -m prefect worker start --pool vps --type process --name vps@1"
    pid = int((tmp_path / ".homelab-worker" / "supervisor.pid").read_text())
    flow_run = subprocess.Popen(["sleep", "300"], cwd=tmp_path / ".homelab-worker" / "project",
                                start_new_session=True)
    elsewhere = subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
    try:
        subprocess.run(stop_supervised(state), check=True, timeout=20)
        assert not (tmp_path / ".homelab-worker" / "supervisor.pid").exists()
        assert _gone(pid)
        assert flow_run.wait(timeout=15) == -15  # TERM first, as systemd does
        assert elsewhere.poll() is None  # a process that is not the worker's is left alone
    finally:
        flow_run.kill()
        elsewhere.kill()


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """Exited (a zombie waiting for its reaper counts as gone)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.1)
    return False
