"""Session-scoped real components shared by integration and e2e tests."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the simulated lab needs root (network namespaces)")


LAB_TEST_LOCK = "/run/homelab-lab-tests.lock"


@pytest.fixture(scope="session")
def lab_inventory() -> Iterator[Path]:
    """The simulated homelab, up (idempotent), and the path of its git-tracked inventory. Held
    under an exclusive lock for the session: two test sessions on one machine would reset and
    deploy the same lab hosts under each other, so a second one waits."""
    _require_root()
    from lab import configrepo, manager

    with open(LAB_TEST_LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        manager.up()
        yield configrepo.ensure()


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


_SERVER: dict[str, subprocess.Popen] = {}


def start_prefect_server(url: str) -> subprocess.Popen:
    """The test Prefect server on the port of ``url``, healthy (its SQLite DB persists in
    PREFECT_HOME, so a restart keeps deployments and scheduled runs)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    log = open(Path(os.environ["PREFECT_HOME"]) / "server.log", "ab")  # noqa: SIM115 - lives with the server
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", port], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    _SERVER["process"] = server
                    return server
        except OSError:
            time.sleep(0.3)
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited: see {log.name}")
    server.kill()
    raise RuntimeError("prefect server did not become healthy")


def stop_prefect_server() -> None:
    server = _SERVER.pop("process", None)
    if server is None:
        return
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real Prefect server on loopback (the URL conftest put in PREFECT_API_URL)."""
    url = os.environ["PREFECT_API_URL"]
    start_prefect_server(url)
    yield url
    _drain_prefect_workers()
    stop_prefect_server()


def _drain_prefect_workers() -> None:
    """Flush Prefect's background log and event workers, or the process hangs at exit."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


WEBHOOK_SECRET = "lab-webhook-secret-not-for-production"


class ControlProcess:
    """``homelab serve`` as a user starts it, in its own HOMELAB_HOME (so the other CLI tests
    do not hand their work to it), with the webhook on a free loopback port."""

    def __init__(self, inventory: Path, home: Path, *, args: tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None, automations: bool = False):
        from tests.conftest import _free_port

        self.inventory = inventory
        self.home = home
        # more `homelab serve` options (e.g. --branch); the shipped automations only where a test
        # asks, or a failing stack in one test would start rollbacks under the next
        self.args = (*args, "--automations" if automations else "--no-automations")
        self.extra_env = extra_env or {}
        self.webhook_port = _free_port()
        self.metrics_port = _free_port()
        self.log = home / "serve-test.log"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment of a CLI that talks to this control process."""
        return {**os.environ, "HOMELAB_HOME": str(self.home), "HOMELAB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                **self.extra_env}

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/"

    def start(self, timeout_s: float = 90) -> None:
        from deployments import control_socket

        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deployments.cli", "serve", "-i", str(self.inventory),
                 "--webhook-port", str(self.webhook_port), "--metrics-port", str(self.metrics_port), *self.args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**self.env, "PREFECT_LOGGING_LEVEL": "INFO"})  # Prefect's default: the run log reaches the UI
        socket = self.home / "serve" / "control.sock"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"homelab serve exited: {self.log.read_text()[-3000:]}"
            client = control_socket.connect(self.inventory, socket)
            if client is not None:
                client.close()
                return
            time.sleep(0.2)
        raise AssertionError(f"homelab serve did not come up: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def control_process(lab_inventory: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """A running control process for one test module; stopped after it, so that its schedules
    (the hourly secrets-sync) never fire into other tests."""
    control = ControlProcess(lab_inventory, tmp_path_factory.mktemp("serve-home"))
    control.start()
    yield control
    control.stop()
