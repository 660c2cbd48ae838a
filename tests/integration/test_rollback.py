"""Never leave a host broken: automatic rollback and the partial-failure policies, on the lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.errors import DeployFailed
from tests.integration.deploying import (
    container_ids,
    current_release,
    deploy,
    project_container_ids,
    release_status,
    results,
    stack_health,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]


def by_stack(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["host"], s["stack"]): s for s in report["stacks"]}


def currents(report: dict) -> dict[tuple[str, str], str | None]:
    return {(h, s): current_release(h, s) for h, s in results(report)}


async def test_broken_release_is_rolled_back_and_nothing_else_is_touched(clean_lab: Path) -> None:
    _, before = await deploy(clean_lab, ref="v2")
    assert before["result"] == "success"
    releases_before, ids_before = currents(before), container_ids()
    media_before = project_container_ids("rtx1080", "media")

    state, report = await deploy(clean_lab, ref="v3-broken")
    assert state.is_failed() and report["result"] == "failed"
    media = by_stack(report)[("rtx1080", "media")]
    assert media["result"] == "failed"
    assert "health gate failed" in media["error"]
    assert media["rollback"] == f"restored release {releases_before[('rtx1080', 'media')]} (healthy)"
    assert currents(before) == releases_before  # every stack on its previous release
    assert stack_health("rtx1080", "media") == {"web": "healthy"}
    # the failed attempt is on record, and nothing else was recreated
    assert release_status("rtx1080", "media", media["release"]) == "failed"
    ids_after = container_ids()
    for host, ids in ids_before.items():
        untouched = ids - (media_before if host == "rtx1080" else set())
        assert untouched <= ids_after[host]


async def test_a_stack_without_a_previous_release_is_removed(clean_lab: Path) -> None:
    state, report = await deploy(clean_lab, ref="v3-broken", only=["media"])
    assert state.is_failed()
    media = by_stack(report)[("rtx1080", "media")]
    assert media["rollback"] == "removed (the stack had no previous release)"
    assert project_container_ids("rtx1080", "media") == set()
    assert current_release("rtx1080", "media") is None


async def test_default_policy_keeps_rtx1080_when_vps_fails_later(clean_lab: Path) -> None:
    """The seed's hard case: redis on rtx1080 (foundation) succeeds, newsletter on vps (edge) fails."""
    _, before = await deploy(clean_lab, ref="v2")
    releases_before = currents(before)

    _, report = await deploy(clean_lab, ref="v3-edge-broken")
    stacks = by_stack(report)
    assert stacks[("rtx1080", "redis")]["result"] == "healthy"
    assert stacks[("vps", "newsletter")]["result"] == "failed"
    assert stacks[("vps", "newsletter")]["rollback"].startswith("restored release")
    assert current_release("rtx1080", "redis") == stacks[("rtx1080", "redis")]["release"]  # kept
    assert current_release("vps", "newsletter") == releases_before[("vps", "newsletter")]
    assert stack_health("vps", "newsletter") == {"web": "healthy"}


async def test_rollback_all_restores_exactly_the_releases_from_before(clean_lab: Path) -> None:
    _, before = await deploy(clean_lab, ref="v2")
    releases_before = currents(before)

    _, report = await deploy(clean_lab, ref="v3-edge-broken", on_failure="rollback-all")
    stacks = by_stack(report)
    assert stacks[("rtx1080", "redis")]["result"] == "rolled-back"
    assert stacks[("rtx1080", "redis")]["rollback"] == (
        f"restored release {releases_before[('rtx1080', 'redis')]} (healthy)")
    assert stacks[("vps", "newsletter")]["result"] == "failed"
    assert currents(before) == releases_before
    for host, stack in [("rtx1080", "redis"), ("vps", "newsletter")]:
        assert stack_health(host, stack) == {"web": "healthy"}
    assert release_status("rtx1080", "redis", stacks[("rtx1080", "redis")]["release"]) == "rolled-back"


async def test_rollback_phase_undoes_the_failing_phase_but_keeps_earlier_phases(clean_lab: Path) -> None:
    _, before = await deploy(clean_lab, ref="v1")
    releases_before = currents(before)

    _, report = await deploy(clean_lab, ref="v3-broken", on_failure="rollback-phase")
    stacks = by_stack(report)
    assert stacks[("rtx1080", "redis")]["result"] == "healthy"  # phase foundation: kept
    assert stacks[("thinkpad", "homeassistant")]["result"] == "rolled-back"  # phase apps: undone
    assert stacks[("rtx1080", "media")]["result"] == "failed"
    assert current_release("thinkpad", "homeassistant") == releases_before[("thinkpad", "homeassistant")]
    assert current_release("rtx1080", "redis") == stacks[("rtx1080", "redis")]["release"]
    later = [s for s in report["stacks"] if s["phase"] in ("ai", "edge")]
    assert all(s["result"] == "not-run" for s in later)


async def test_continue_runs_the_phases_that_do_not_depend_on_the_failed_one(clean_lab: Path) -> None:
    _, first = await deploy(clean_lab, ref="v1")
    assert first["result"] == "success", first
    _, report = await deploy(clean_lab, ref="v3-broken", on_failure="continue")
    assert report["result"] == "failed"
    stacks = by_stack(report)
    assert stacks[("rtx1080", "media")]["result"] == "failed"
    # ai and edge depend on foundation and core, not on apps: they still ran
    assert stacks[("vps", "newsletter")]["result"] == "healthy"
    assert {s["result"] for s in report["stacks"] if s["phase"] == "ai"} == {"unchanged"}


async def test_failed_run_raises_deploy_failed_with_the_report(clean_lab: Path) -> None:
    from flows.deploy import deploy_homelab

    state = await deploy_homelab(inventory=str(clean_lab), ref="v3-broken", only=["media"], return_state=True)
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, DeployFailed)
    assert "1 failed" in str(error)


async def test_a_failing_compose_up_is_undone(clean_lab: Path, tmp_path: Path) -> None:
    """compose up itself fails half-way (the old container is already gone): the stack is
    put back on its previous release at once."""
    import subprocess

    import yaml

    copy = tmp_path / "config"
    subprocess.run(["git", "clone", "-q", str(clean_lab.parent), str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "v1"], check=True)
    _, first = await deploy(copy / "homelab.yaml", only=["newsletter"])
    assert first["result"] == "success"
    before = current_release("vps", "newsletter")
    compose_file = copy / "stacks/newsletter/compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    compose["services"]["web"]["network_mode"] = "container:no-such-container"  # fails at create
    compose_file.write_text(yaml.safe_dump(compose))

    state, report = await deploy(copy / "homelab.yaml", only=["newsletter"])
    assert state.is_failed()
    newsletter = by_stack(report)[("vps", "newsletter")]
    assert newsletter["result"] == "failed"
    assert "exited with" in newsletter["error"]  # the compose up command failed
    assert newsletter["rollback"] == f"restored release {before} (healthy)"
    assert current_release("vps", "newsletter") == before
    assert stack_health("vps", "newsletter") == {"web": "healthy"}
