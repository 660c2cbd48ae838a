"""Faults injected into real lab hosts. Each test ends with every stack healthy on a known
(recorded, current) release, after at most one recovery run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import manager
from model.errors import PreflightFailed
from tests.integration.deploying import container_ids, current_release, deploy, results, stack_health

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]


def assert_all_healthy_on_known_releases(report: dict) -> None:
    for host, stack in results(report):
        release = current_release(host, stack)
        assert release is not None, f"{stack} on {host} has no current release"
        health = stack_health(host, stack)
        assert health and set(health.values()) <= {"healthy", "none"}, f"{stack} on {host}: {health}"
    for host in ("vps", "thinkpad", "rtx1080"):
        pending = manager.exec_on(host, ["sh", "-c", "ls /root/.homelab/releases/*/pending"])
        assert pending.returncode != 0, f"{host} still has a pending deploy: {pending.stdout!r}"


async def wait_for_pending(host: str, timeout: float = 60) -> None:
    """Until a deploy step on ``host`` is under way (its pending marker exists)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        done = await asyncio.to_thread(manager.exec_on, host, ["sh", "-c", "ls /root/.homelab/releases/*/pending"])
        if done.returncode == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no deploy step started on {host} within {timeout}s")


async def test_sshd_killed_mid_phase_then_recovered(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success"
    run = asyncio.create_task(deploy(clean_lab, ref="v2"))
    await wait_for_pending("rtx1080")  # redis is being updated in phase foundation
    manager.stop_sshd("rtx1080")
    try:
        state, outcome = await run
    finally:
        manager.start_sshd("rtx1080")
    assert state.is_failed()
    text = str(outcome)
    assert "rtx1080" in text
    # the next run finds the half-done state and finishes the job, health-gated
    state, report = await deploy(clean_lab, ref="v2")
    assert state.is_completed(), report
    assert_all_healthy_on_known_releases(report)


async def test_network_cut_mid_phase_recovers_within_the_run(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success"
    run = asyncio.create_task(deploy(clean_lab, ref="v2"))
    await wait_for_pending("thinkpad", timeout=120)  # homeassistant in phase apps
    manager.link_down("thinkpad")
    await asyncio.sleep(3)
    manager.link_up("thinkpad")
    state, report = await run
    assert state.is_completed(), report
    assert results(report)[("thinkpad", "homeassistant")] == "healthy"
    assert_all_healthy_on_known_releases(report)


def fill_disk(host: str) -> None:
    """A 16 MiB filesystem under the host's state directory: less than the lab's 64 MiB minimum."""
    mounted = manager.exec_on(host, ["sh", "-c", "mkdir -p /root/.homelab-full && "
                                                 "mount -t tmpfs -o size=16m tmpfs /root/.homelab-full && "
                                                 "cp -a /root/.homelab/. /root/.homelab-full/ && "
                                                 "mount --bind /root/.homelab-full /root/.homelab"])
    assert mounted.returncode == 0, mounted.stderr


def free_disk(host: str) -> None:
    manager.exec_on(host, ["sh", "-c", "umount /root/.homelab; umount /root/.homelab-full; rmdir /root/.homelab-full"])


@pytest.mark.parametrize(("host", "fault", "repair", "reason"), [
    pytest.param("vps", manager.stop_engine, manager.start_engine, "container engine not answering",
                 id="engine stopped"),
    pytest.param("rtx1080", fill_disk, free_disk, "MiB free in the state directory, 64 MiB required",
                 id="disk full"),
])
async def test_a_preflight_fault_changes_nothing_and_the_next_run_recovers(
        clean_lab: Path, host: str, fault: Callable[[str], None], repair: Callable[[str], None],
        reason: str) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success"
    before = container_ids()
    fault(host)
    try:
        state, error = await deploy(clean_lab, ref="v2")
    finally:
        repair(host)
    assert state.is_failed()
    assert isinstance(error, PreflightFailed)
    assert list(error.failures) == [host]
    assert reason in error.failures[host][0]
    assert container_ids() == before
    state, report = await deploy(clean_lab, ref="v2")
    assert state.is_completed(), report
    assert_all_healthy_on_known_releases(report)
