"""A real Prometheus and Pushgateway (Debian's binaries), for tests.

Fixtures (through ``pytest_plugins = ["tests.prometheus"]``), both session-scoped and shared:

- ``pushgateway``: ``prometheus-pushgateway`` on a free 127.0.0.1 port, without a persistence
  file and with the admin API on, so ``wipe()`` (or ``reset_pushgateway(gateway)``) empties it
  between tests.
- ``prometheus``: ``prometheus`` with a generated config: scrape and evaluation every 1 s, job
  ``pushgateway`` (honor_labels) scraping the fixture's gateway, job ``homelab-control`` whose
  targets a test adds with ``scrape_also("127.0.0.1:PORT")`` (a file_sd file), and the shipped
  rules of deployments/monitoring/alerts.yml. Offers ``query``, ``wait_for``, ``alerts``,
  ``rules``, ``targets``, ``reload`` and ``forget`` (delete series: the TSDB keeps what earlier
  tests pushed, and ``increase()`` over a long window still sees it after a wipe).

Either fixture skips its tests when its binary is missing. Each process runs in its own session
and is killed at teardown, or at interpreter exit if teardown never runs; each starts in well
under a second. A module that names the fixtures in ``pytest_plugins`` imports this module only
under ``TYPE_CHECKING`` (pytest cannot rewrite the asserts of an imported plugin).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS_BIN = "/usr/bin/prometheus"
PUSHGATEWAY_BIN = "/usr/bin/prometheus-pushgateway"
ALERT_RULES = Path(__file__).resolve().parent.parent / "deployments" / "monitoring" / "alerts.yml"
START_TIMEOUT_S = 15
CONTROL_JOB = "homelab-control"
GATEWAY_JOB = "pushgateway"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(path: str) -> str:
    found = path if os.access(path, os.X_OK) else shutil.which(os.path.basename(path))
    if not found:
        pytest.skip(f"{path} is not installed (Debian: apt-get install prometheus prometheus-pushgateway)")
    return found


def _request(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class _Process:
    """A server process in its own session, and its log."""

    process: subprocess.Popen = field(repr=False)
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: both keep nothing worth a clean shutdown (tmp storage, no persistence)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _start(argv_for_port: Callable[[int], list[str]], workdir: Path, name: str,
           attempts: int = 3) -> tuple[str, _Process]:
    """Start a server on a free loopback port and wait for its /-/ready; retries a port lost to a race."""
    last = ""
    for _ in range(attempts):
        port = _free_port()
        log_path = workdir / f"{name}-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv_for_port(port), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
        server = _Process(process, log_path)
        atexit.register(server.kill)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                if _request(f"{url}/-/ready", timeout=1)[0] == 200:
                    return url, server
            time.sleep(0.02)
        server.kill()
        last = server.log_tail()
        if "address already in use" not in last:
            break
    raise RuntimeError(f"{name} did not become ready within {START_TIMEOUT_S}s; its log:\n{last}")


# ---------------------------------------------------------------- Pushgateway


@dataclass
class Pushgateway:
    url: str
    server: _Process = field(repr=False)

    def wipe(self) -> None:
        """Delete every group (the admin API's wipe)."""
        status, body = _request(f"{self.url}/api/v1/admin/wipe", method="PUT")
        if status != 202:
            raise RuntimeError(f"pushgateway wipe answered {status}: {body[:300]!r}")

    def groups(self) -> list[dict[str, Any]]:
        """The pushed groups (/api/v1/metrics): each with its labels and metric families."""
        status, body = _request(f"{self.url}/api/v1/metrics")
        if status != 200:
            raise RuntimeError(f"pushgateway /api/v1/metrics answered {status}: {body[:300]!r}")
        return json.loads(body)["data"]


def reset_pushgateway(gateway: Pushgateway) -> None:
    """Empty the shared gateway, so a test sees only what it pushes itself."""
    gateway.wipe()


def start_pushgateway(workdir: Path) -> Pushgateway:
    binary = _binary(PUSHGATEWAY_BIN)
    workdir.mkdir(parents=True, exist_ok=True)
    url, server = _start(lambda port: [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=",
                                       "--web.enable-admin-api", "--log.level=warn"], workdir, "pushgateway")
    return Pushgateway(url, server)


# ---------------------------------------------------------------- Prometheus


class PrometheusError(RuntimeError):
    """An API answer that was not status "success" (a parse error, a bad matcher): Prometheus's text."""


@dataclass
class Prometheus:
    url: str
    server: _Process = field(repr=False)
    workdir: Path
    config_path: Path
    control_targets: Path  # file_sd of job homelab-control

    def api(self, path: str, params: dict[str, str] | list[tuple[str, str]] | None = None,
            method: str = "GET") -> Any:
        """GET (or POST form) /api/v1/<path>; the answer's ``data``. Raises PrometheusError."""
        query = urllib.parse.urlencode(params or {})
        if method == "GET":
            status, body = _request(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        else:
            status, body = _request(f"{self.url}/api/v1/{path}", method=method, data=query.encode())
        if status == 204:
            return None
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"/api/v1/{path}: HTTP {status}: {body[:300]!r}") from None
        if answer.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer.get("data")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: a list of {"metric": ..., "value": [t, "v"]} (a scalar or a
        string comes back as a one-element list of its [t, "v"])."""
        data = self.api("query", {"query": expr})
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait_for(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                 timeout_s: float = 10) -> list[dict[str, Any]]:
        """Query ``expr`` until ``predicate(result)`` holds (default: any series); the result.
        AssertionError with the last result after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r}: still {result} after {timeout_s}s")
            time.sleep(0.2)

    def alerts(self) -> list[dict[str, Any]]:
        """The pending and firing alerts (/api/v1/alerts): labels, annotations, state, activeAt."""
        return self.api("alerts")["alerts"]

    def alert_states(self, name: str) -> set[str]:
        """The states ("pending", "firing") of the alerts named ``name``; empty when none is active."""
        return {a["state"] for a in self.alerts() if a["labels"].get("alertname") == name}

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (/api/v1/rules), each with its rules' health and lastError."""
        return self.api("rules")["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets: scrapePool (the job), scrapeUrl, health, lastError."""
        return self.api("targets", {"state": "active"})["activeTargets"]

    def reload(self) -> None:
        """Reread the config and the rule files (POST /-/reload)."""
        status, body = _request(f"{self.url}/-/reload", method="POST")
        if status != 200:
            raise PrometheusError(f"reload answered {status}: {body[:500]!r}")

    def scrape_also(self, target: str) -> None:
        """Add ``target`` ("127.0.0.1:PORT", or its /metrics URL) to job homelab-control; Prometheus
        picks the file up within a second and scrapes it from then on."""
        address = urllib.parse.urlsplit(target).netloc if "://" in target else target
        groups = self._control_groups()
        if not any(address in g["targets"] for g in groups):
            self._write_control_groups([*groups, {"targets": [address], "labels": {}}])

    def stop_scraping(self, target: str) -> None:
        """Remove ``target`` again (a test whose process is gone, so its `up == 0` does not linger)."""
        address = urllib.parse.urlsplit(target).netloc if "://" in target else target
        self._write_control_groups([g for g in self._control_groups() if address not in g["targets"]])

    def forget(self, match: str = '{__name__=~"homelab_.+"}') -> None:
        """Delete the stored samples of the series ``match`` selects, up to now (newer ones stay)."""
        self.api("admin/tsdb/delete_series", [("match[]", match), ("end", f"{time.time():.3f}")], method="POST")

    def _control_groups(self) -> list[dict[str, Any]]:
        return json.loads(self.control_targets.read_text())

    def _write_control_groups(self, groups: list[dict[str, Any]]) -> None:
        tmp = self.control_targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.control_targets)  # file_sd must never read a half-written file


def prometheus_config(gateway_address: str, control_targets: Path, rule_files: list[Path]) -> dict[str, Any]:
    """The test Prometheus's config: the jobs of deployments/monitoring/scrape.yml, pointed at
    the fixtures, with 1 s scrapes and evaluations."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": GATEWAY_JOB, "honor_labels": True, "static_configs": [{"targets": [gateway_address]}]},
            {"job_name": CONTROL_JOB, "metrics_path": "/metrics",
             "file_sd_configs": [{"files": [str(control_targets)], "refresh_interval": "1s"}]},
        ],
    }


def start_prometheus(workdir: Path, gateway: Pushgateway, rule_files: list[Path] | None = None) -> Prometheus:
    binary = _binary(PROMETHEUS_BIN)
    workdir.mkdir(parents=True, exist_ok=True)
    control_targets = workdir / "control-targets.json"
    control_targets.write_text("[]")
    config_path = workdir / "prometheus.yml"
    config = prometheus_config(urllib.parse.urlsplit(gateway.url).netloc, control_targets,
                               rule_files if rule_files is not None else [ALERT_RULES])
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    url, server = _start(lambda port: [
        binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--web.enable-admin-api",
        "--log.level=warn"], workdir, "prometheus")
    return Prometheus(url, server, workdir, config_path, control_targets)


@pytest.fixture(scope="session")
def pushgateway() -> Iterator[Pushgateway]:
    """One Pushgateway for the session; call ``wipe()`` before pushing what a test asserts on."""
    workdir = Path(tempfile.mkdtemp(prefix="homelab-test-pushgateway-"))
    gateway = start_pushgateway(workdir)
    try:
        yield gateway
    finally:
        gateway.server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def prometheus(pushgateway: Pushgateway) -> Iterator[Prometheus]:
    """One Prometheus for the session, scraping ``pushgateway`` with the shipped alert rules."""
    workdir = Path(tempfile.mkdtemp(prefix="homelab-test-prometheus-"))
    server = start_prometheus(workdir, pushgateway)
    try:
        yield server
    finally:
        server.server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
