"""Session-scoped real components shared by integration and e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the simulated lab needs root (network namespaces)")


@pytest.fixture(scope="session")
def lab_inventory() -> Path:
    """The simulated homelab, up (idempotent), and the path of its git-tracked inventory."""
    _require_root()
    from lab import configrepo, manager

    manager.up()
    return configrepo.ensure()


@pytest.fixture
def clean_lab(lab_inventory: Path) -> Path:
    """No containers and no deploy state on any lab host, every host's sshd and link up."""
    from lab import manager, topology

    for host in topology.HOSTS:
        manager.start_sshd(host)
        manager.link_up(host)
        manager.start_engine(host)
    manager.reset()
    return lab_inventory


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real Prefect server on loopback (the URL conftest put in PREFECT_API_URL)."""
    url = os.environ["PREFECT_API_URL"]
    port = url.rsplit(":", 1)[1].split("/")[0]
    log = open(Path(os.environ["PREFECT_HOME"]) / "server.log", "wb")  # noqa: SIM115 - lives for the session
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", port], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited: see {log.name}")
    else:
        server.kill()
        raise RuntimeError("prefect server did not become healthy")
    yield url
    _drain_prefect_workers()
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _drain_prefect_workers() -> None:
    """Flush Prefect's background log and event workers, or the process hangs at exit."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
