"""A Pushgateway that hangs costs a run at most its short time limit, twice (the first push and
the last); the pushes in between are skipped, and the run's totals are still kept."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tasks.engine.metric_totals import Samples, totals_path
from tasks.engine.metrics import RunMetrics
from tasks.integrations.pushgateway import PushTarget


@pytest.fixture
def hanging_gateway():
    """Accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_a_hanging_gateway_is_given_up_after_one_timeout(hanging_gateway: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path))
    run = RunMetrics("production", "manual", PushTarget(url=hanging_gateway, timeout_s=0.5))
    started = time.monotonic()
    run.pending.set("homelab_deploy_in_progress", 1)
    await run.push()  # the run's start: times out
    for phase in range(4):
        run.pending.observe("homelab_deploy_duration_seconds", 1.0, host="vps", phase=f"p{phase}")
        await run.push()  # skipped: the gateway already failed this run
    run.finished("success")
    await run.push(final=True)  # the end is tried again
    took = time.monotonic() - started
    assert run.gateway_failed and run.pushes == 0
    assert 0.9 < took < 2.5, took
    kept = Samples.from_json(json.loads(totals_path("production").read_text()))
    assert sum(h.sum for h in kept.histograms["homelab_deploy_duration_seconds"].values()) == 4.0
    assert kept.counters["homelab_deploys_total"] == {("manual", "success"): 1.0}


@pytest.mark.parametrize("url", ["http://8.8.8.8:9091", "http://127.0.0.1:9/not-a-gateway"])
async def test_a_gateway_outside_the_allowed_networks_or_down_is_logged_not_raised(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path))
    run = RunMetrics("production", "manual", PushTarget(url=url, timeout_s=0.5))
    run.finished("failed")
    await run.push(final=True)
    assert run.gateway_failed
    assert "metrics not pushed" in caplog.text
    if url.startswith("http://8.8.8.8"):
        assert "HOMELAB_ALLOWED_NETWORKS" in caplog.text  # refused before any packet is sent
