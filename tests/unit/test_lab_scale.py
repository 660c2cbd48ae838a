"""A lab of any size: its hosts and addresses, and the generated inventory (valid, stable plans)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import configrepo, scalerepo, topology
from model.desired import load_desired_state
from model.inventory import Inventory
from tasks.engine.plan import make_plan
from tasks.host_commands.survey import HostSurvey


def test_extra_hosts_follow_the_three_and_stay_in_the_subnet():
    hosts = topology.lab_hosts(30)
    assert list(hosts)[:3] == ["vps", "thinkpad", "rtx1080"]
    assert dict(list(hosts.items())[:3]) == topology.HOSTS  # the 3-host lab is unchanged
    assert list(hosts)[3:5] == ["node04", "node05"] and hosts["node04"] == "10.203.0.14"
    assert hosts["node30"] == "10.203.0.40"
    assert len(set(hosts.values())) == 30
    last = topology.lab_hosts(topology.MAX_HOSTS)
    assert all(0 < int(a.rsplit(".", 1)[1]) < 255 for a in last.values())
    assert all(len(topology.veth_name(h)) <= 15 for h in last)


@pytest.mark.parametrize("count", [2, 0, topology.MAX_HOSTS + 1])
def test_a_lab_size_out_of_range_is_refused(count):
    with pytest.raises(ValueError, match="a lab has 3 to"):
        topology.lab_hosts(count)


def test_the_recorded_size_survives_garbage(tmp_path, monkeypatch):
    monkeypatch.setattr(topology, "LAB_DIR", tmp_path)
    assert topology.recorded_size() == 3
    topology.record_size(12)
    assert list(topology.lab_hosts())[-1] == "node12"
    (tmp_path / "size").write_text("lots\n")
    assert topology.recorded_size() == 3
    with pytest.raises(ValueError):
        topology.record_size(1)


def test_host_dir_knows_extra_hosts_and_refuses_strangers():
    assert topology.host_dir("node17").name == "node17"
    with pytest.raises(KeyError, match="unknown lab host"):
        topology.host_dir("db01")


@pytest.mark.parametrize(("hosts", "stacks"), [(3, 10), (10, 34), (30, 100)])
def test_the_generated_inventory_validates_at_every_size(hosts, stacks):
    inv = Inventory.model_validate(scalerepo.inventory(hosts))
    assert list(inv.hosts) == list(topology.lab_hosts(hosts))
    assert len(inv.stack_phase()) == stacks
    assert inv.phase_order() == ["foundation", "core", "apps", "ai", "edge"]
    placed = [h for s in inv.stack_phase() for h in inv.stack(s).hosts]
    assert set(placed) == set(inv.hosts)  # every host gets work
    assert len(placed) > stacks  # some stacks on two hosts
    plain = [s for s in inv.stack_phase() if not inv.stack(s).health.checks]
    assert 0 < len(plain) < stacks  # a mix of healthchecked and plain stacks


def test_ports_are_unique_and_healthchecks_settle_slowly():
    composes = [scalerepo.compose_for(i, "1") for i in range(scalerepo.stack_count(30))]
    ports = [c["services"]["app"]["environment"].get("PORT") for c in composes]
    assert len([p for p in ports if p]) == len({p for p in ports if p})
    web = [c["services"]["app"] for c in composes if "labels" in c["services"]["app"]]
    assert web and all(s["labels"]["lab.healthdriver.settled-interval"] == "60" for s in web)


def _empty_survey() -> HostSurvey:
    return HostSurvey(engine_ok=True, engine_error=None, disk_free_mb=10_000, disk_error=None, releases={},
                      broken_releases={}, containers=())


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    lab_dir = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(topology, "LAB_DIR", lab_dir)
        topology.record_size(10)
        path = scalerepo.ensure(10)
        assert scalerepo.ensure(10) == path  # an up-to-date repository is kept
        configrepo.write_trust_file()
    return path


def test_two_plans_of_the_same_state_are_identical(repo, monkeypatch):
    monkeypatch.setenv("HOMELAB_TRUST_FILE", str(repo.parents[2] / "trust.yaml"))
    plans = []
    for _ in range(2):
        desired = load_desired_state(repo, ref="v1")
        plans.append(make_plan(desired, {h: _empty_survey() for h in desired.inventory.hosts}))
    assert plans[0] == plans[1]
    assert {c.action for c in plans[0].changes} == {"create"}


def test_the_one_stack_release_changes_one_stack(repo, monkeypatch):
    monkeypatch.setenv("HOMELAB_TRUST_FILE", str(repo.parents[2] / "trust.yaml"))
    v1, v11 = load_desired_state(repo, ref="v1"), load_desired_state(repo, ref="v1.1")
    differ = [name for name in v1.stacks if v1.stacks[name].identity != v11.stacks[name].identity]
    assert differ == [scalerepo.CHANGED_STACK]


def test_the_lab_trust_file_admits_the_extra_hosts(repo):
    text = (repo.parents[2] / "trust.yaml").read_text()
    assert "node10:" in text and "10.203.0.20" in text
