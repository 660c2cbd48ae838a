"""The lab's generated GitOps repository mirrors the real inventory and carries the tagged releases."""

from __future__ import annotations

from pathlib import Path

import pytest
from unitsupport import git

from lab import configrepo, topology
from model.desired import load_desired_state
from model.inventory_loader import load_inventory

REAL = Path(__file__).resolve().parents[2] / "deployments" / "homelab.yaml"


@pytest.fixture(scope="module")
def generated_inventory(tmp_path_factory) -> Path:
    lab_dir = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(topology, "LAB_DIR", lab_dir)  # LAB_DIR is read from the environment at import time
        path = configrepo.ensure()
        assert path == lab_dir / "config" / "homelab.yaml"
        assert configrepo.ensure() == path  # second call reuses the up-to-date repo
    return path


@pytest.fixture(autouse=True)
def lab_trust(generated_inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads here are checked against the generated lab's own trust file."""
    monkeypatch.setenv("HOMELAB_TRUST_FILE", str(generated_inventory.parents[1] / "trust.yaml"))


def test_lab_inventory_mirrors_the_real_one(generated_inventory):
    real, lab = load_inventory(REAL), load_inventory(generated_inventory)
    assert list(lab.hosts) == list(real.hosts)
    assert lab.phase_order() == real.phase_order()
    assert lab.stack_phase() == real.stack_phase()
    assert {s: lab.stack(s).hosts for s in lab.stack_phase()} == {s: real.stack(s).hosts for s in real.stack_phase()}
    assert {p: ph.depends_on for p, ph in lab.phases.items()} == {p: ph.depends_on for p, ph in real.phases.items()}
    assert {h: x.gpu for h, x in lab.hosts.items()} == {h: x.gpu for h, x in real.hosts.items()}


def test_lab_inventory_uses_only_lab_addresses(generated_inventory):
    lab = load_inventory(generated_inventory)
    assert {name: host.address for name, host in lab.hosts.items()} == topology.HOSTS
    assert all(h.address.startswith("10.203.0.") for h in lab.hosts.values())


def test_lab_repo_has_the_release_tags(generated_inventory):
    repo = generated_inventory.parent
    assert set(git(repo, "tag").split()) >= {"v1", "v1.1", "v2", "v3-broken"}
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "v2^{commit}")
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def _web_images(ref: str, inventory: Path) -> dict[str, str]:
    desired = load_desired_state(inventory, ref)
    return {name: stack.images["web"] for name, stack in desired.stacks.items()}


# ref -> stacks whose web image is not lab-web:1
TAG_IMAGES = [
    ("v1", {}),
    ("v1.1", {"newsletter": "localhost/lab-web:2"}),
    ("v2", {"newsletter": "localhost/lab-web:2", "redis": "localhost/lab-web:2",
            "homeassistant": "localhost/lab-web:2"}),
    ("v3-broken", {"newsletter": "localhost/lab-web:2", "redis": "localhost/lab-web:2",
                   "homeassistant": "localhost/lab-web:2", "media": "localhost/lab-web:broken"}),
]


@pytest.mark.parametrize(("ref", "changed"), TAG_IMAGES, ids=[t[0] for t in TAG_IMAGES])
def test_tags_load_at_ref_with_the_expected_images(generated_inventory, ref, changed):
    images = _web_images(ref, generated_inventory)
    assert len(images) == 12
    assert {s: i for s, i in images.items() if i != "localhost/lab-web:1"} == changed


def test_tags_differ_only_in_the_changed_stacks(generated_inventory):
    v1 = load_desired_state(generated_inventory, "v1").stacks
    v11 = load_desired_state(generated_inventory, "v1.1").stacks
    assert {s for s in v1 if v1[s].config_hash != v11[s].config_hash} == {"newsletter"}


def test_lab_stacks_with_extra_services(generated_inventory):
    stacks = load_desired_state(generated_inventory, "v2").stacks
    assert stacks["authentik"].images == {"web": "localhost/lab-web:1", "worker": configrepo.WORKER}
    monitoring = stacks["monitoring"]
    # include:, an override file, a profile, .env interpolation: as compose itself reads them
    assert monitoring.images == {"web": "localhost/lab-web:1", "exporter": configrepo.WORKER,
                                 "grafana": "localhost/lab-web:1"}
    assert monitoring.mounts == {"web": ("prometheus.yml",), "exporter": (), "grafana": ("grafana/grafana.ini",)}
    assert monitoring.compose.env == {"ROLE": "lab-monitoring"}
    assert sorted(monitoring.files.manifest()) == [".env", "compose.yaml", "grafana/compose.yaml",
                                                   "grafana/grafana.ini", "lab.override.yaml", "prometheus.yml"]
