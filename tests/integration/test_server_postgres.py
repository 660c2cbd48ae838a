"""The Prefect server on PostgreSQL (Debian's, a throw-away cluster on 127.0.0.1): `homelab
server up --database` runs it there, and the core deploy of the lab goes through it."""

from __future__ import annotations

import glob
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _free_port
from tests.integration.deploying import results
from tests.integration.secretlab import homelab

pytestmark = pytest.mark.lab


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or shutil.which("runuser") is None:
        pytest.fail("Debian's postgresql is not installed: scripts/setup.sh installs it")
    return Path(found[-1]).parent


def _as_postgres(*argv: str) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    # Not under pytest's tmp dirs: they are root's 0700, and the cluster runs as postgres.
    bin_dir, root = _pg_bin(), Path(tempfile.mkdtemp(prefix="homelab-pg-"))
    data, password, port = root / "data", secrets.token_hex(12), _free_port()
    (root / "pw").write_text(password + "\n")
    shutil.chown(root, "postgres")
    shutil.chown(root / "pw", "postgres")
    _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=peer",
                 "--auth-host=scram-sha-256", f"--pwfile={root / 'pw'}")
    _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                 f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start")
    try:
        _as_postgres(str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "prefect")
        yield f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{port}/prefect"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_bad_database_url_is_refused_before_a_server_starts(tmp_path):
    done = homelab("server", "up", "--port", str(_free_port()), "--database", "mysql://root:hunter2@db/prefect",
                   env={"HOMELAB_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")})
    assert done.returncode != 0
    assert "must start with postgresql+asyncpg://" in done.stdout + done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert not (tmp_path / "prefect-server.pid").exists()


def test_the_core_deploy_runs_through_a_server_on_postgresql(clean_lab, postgres_url, tmp_path):
    port = _free_port()
    env = {"HOMELAB_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    started = homelab("server", "up", "--port", str(port), "--database", postgres_url, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        assert postgres_url.split("@")[0].rsplit(":", 1)[1] not in started.stdout + started.stderr
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        done = homelab("deploy", "-i", str(clean_lab), "--ref", "v1", "--yes", "--json", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert set(results(report).values()) == {"healthy"} and len(report["stacks"]) == 13
        listed = homelab("history", "--json", env=env)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert report["flow_run_id"] in listed.stdout  # the run's history lives in PostgreSQL
        assert not list((tmp_path / "prefect").glob("*.db"))  # and no SQLite database was made
    finally:
        homelab("server", "down", env=env)
