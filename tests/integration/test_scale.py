"""A 10-host lab: it comes up, takes a full deploy of its generated inventory (34 stacks, 37
placements) and a no-op that recreates no container, and goes back to the 3 hosts leaving
nothing of the extra hosts behind. The 30-host run is bench/scale.py's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import configrepo, manager, netns, scalerepo, topology
from tests.integration.deploying import deploy, on_host, results

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]
HOSTS = 10


def ids(host: str) -> set[str]:
    return set(on_host(host, ["docker", "ps", "-aq", "--no-trunc"]).split())


@pytest.fixture(scope="module")
def big_lab(lab_inventory: Path) -> Iterator[Path]:
    manager.up(HOSTS)
    manager.reset()  # after up: the extra hosts keep their storage (and stacks) from an earlier lab
    configrepo.ensure()  # the lab's trust file now admits the extra hosts
    try:
        yield scalerepo.ensure(HOSTS)
    finally:
        manager.up()  # back to the 3 hosts every other test uses
        manager.reset()


async def test_ten_hosts_deploy_then_a_noop_recreates_nothing(big_lab):
    extra = [h for h in topology.lab_hosts(HOSTS) if h not in topology.HOSTS]
    assert len(extra) == 7 and all(manager.status()[h]["sshd"] for h in extra)

    state, report = await deploy(big_lab, ref="v1")
    assert state.is_completed(), report
    placed = results(report)
    assert len(placed) == 37 and set(placed.values()) == {"healthy"}
    assert {h for h, _ in placed} == set(topology.lab_hosts(HOSTS))
    before = {h: ids(h) for h in topology.lab_hosts(HOSTS)}
    assert all(before.values())

    state, report = await deploy(big_lab, ref="v1")
    assert state.is_completed(), report
    assert set(results(report).values()) == {"unchanged"}
    assert {h: ids(h) for h in topology.lab_hosts(HOSTS)} == before


def test_shrinking_back_to_three_hosts_leaves_nothing_of_the_others(big_lab):
    extra = [h for h in topology.lab_hosts(HOSTS) if h not in topology.HOSTS]
    manager.up()
    assert list(manager.status()) == list(topology.HOSTS)
    for host in extra:
        assert not netns.netns_exists(host)
        assert not os.path.exists(f"/sys/class/net/{topology.veth_name(host)}")
        assert manager.init_pid(host) is None
    with open("/proc/self/mountinfo") as mounts:
        assert not [line for line in mounts if "/hosts/node" in line]
