"""Stacks as people write them, on the lab: a folder with config files beside the compose
files, an override, an ``include:``, ``.env`` interpolation and a profile (the lab's
``monitoring`` stack, whose web service serves its bind-mounted prometheus.yml back)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lab import configrepo
from model.desired import load_desired_state
from tasks.engine.preview import preview_plan
from tests.integration.deploying import (
    container_ids,
    current_release,
    deploy,
    on_host,
    project_container_ids,
    results,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

CONFIG = "stacks/monitoring/prometheus.yml"
GRAFANA_URL = f"http://127.0.0.1:{configrepo.PORTS['monitoring'] + 100}/grafana.ini"


def served(url: str = configrepo.MONITORING_CONFIG_URL, host: str = "thinkpad") -> str:
    """What a live service serves, fetched from inside its host."""
    return on_host(host, ["wget", "-q", "-O", "-", url])


def repo_copy(clean_lab: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "config"
    subprocess.run(["git", "clone", "-q", str(clean_lab.parent), str(copy)], check=True)
    return copy / "homelab.yaml"


def service_ids(stack: str, host: str = "thinkpad") -> dict[str, str]:
    out = on_host(host, ["docker", "ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={stack}",
                         "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'])
    return {service: cid for cid, service in (line.split() for line in out.splitlines())}


async def test_a_config_file_change_reaches_the_service_and_rolls_back(clean_lab: Path, tmp_path: Path) -> None:
    inventory = repo_copy(clean_lab, tmp_path)
    _, first = await deploy(inventory)
    assert first["result"] == "success", first
    assert served() == configrepo.PROMETHEUS_YML  # a file next to compose.yaml reached the container
    assert "http_port = 3000" in served(GRAFANA_URL)  # a relative mount of an included file
    assert set(service_ids("monitoring")) == {"web", "grafana", "exporter"}  # the `exporters` profile
    env = on_host("thinkpad", ["docker", "inspect", "--format", '{{range .Config.Env}}{{println .}}{{end}}',
                               service_ids("monitoring")["web"]])
    assert "ROLE=lab-monitoring" in env.splitlines()  # the override file, interpolated from inventory env:
    old_release = current_release("thinkpad", "monitoring")
    before, monitoring_before = container_ids(), service_ids("monitoring")

    new_config = configrepo.PROMETHEUS_YML.replace("scrape_interval: 15s", "scrape_interval: 30s")
    (inventory.parent / CONFIG).write_text(new_config)
    plan = await preview_plan(load_desired_state(inventory), full=True)
    pending = [(c.host, c.stack, c.action) for c in plan.pending]
    assert pending == [("thinkpad", "monitoring", "update")]

    _, second = await deploy(inventory)
    assert second["result"] == "success", second
    assert {k for k, v in results(second).items() if v != "unchanged"} == {("thinkpad", "monitoring")}
    assert served() == new_config  # health-gated: the gate probes /config.yml too
    after = service_ids("monitoring")
    assert after["web"] != monitoring_before["web"]  # it mounts the changed file: recreated
    assert after["grafana"] == monitoring_before["grafana"]  # its files did not change
    assert after["exporter"] == monitoring_before["exporter"]
    others = {h: ids - project_container_ids(h, "monitoring") for h, ids in container_ids().items()}
    assert others == {h: ids - set(monitoring_before.values()) for h, ids in before.items()}  # nothing else

    from flows.rollback import rollback_homelab
    state = await rollback_homelab(inventory=str(inventory), stacks=["monitoring"], return_state=True)
    assert state.is_completed()
    assert current_release("thinkpad", "monitoring") == old_release
    assert served() == configrepo.PROMETHEUS_YML  # the old content is live again


async def test_a_failed_deploy_puts_the_old_files_back(clean_lab: Path, tmp_path: Path) -> None:
    inventory = repo_copy(clean_lab, tmp_path)
    _, first = await deploy(inventory, only=["monitoring"])
    assert first["result"] == "success", first
    folder = inventory.parent / "stacks" / "monitoring"
    (folder / "prometheus.yml").write_text("# a config that ships with a broken image\n")
    (folder / "extra.rules.yml").write_text("groups: []\n")
    (folder / ".env").write_text("WEB_TAG=broken\n")  # interpolated into both services' image
    _, second = await deploy(inventory, only=["monitoring"])
    assert second["result"] == "failed"
    stack = next(s for s in second["stacks"] if s["stack"] == "monitoring")
    assert stack["rollback"].startswith("restored release")
    assert served() == configrepo.PROMETHEUS_YML
    listing = on_host("thinkpad", ["ls", "-A", "/root/.homelab/stacks/monitoring"]).split()
    assert "extra.rules.yml" not in listing  # a file the failed release added is gone again
    assert "WEB_TAG=1" in on_host("thinkpad", ["cat", "/root/.homelab/stacks/monitoring/.env"])


async def test_an_ignored_file_never_ships_and_a_symlink_out_of_the_repo_is_refused(
        clean_lab: Path, tmp_path: Path) -> None:
    inventory = repo_copy(clean_lab, tmp_path)
    folder = inventory.parent / "stacks" / "monitoring"
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.md").write_text("not for the host\n")
    (folder / "prometheus.yml.swp").write_text("editor junk\n")
    stack = load_desired_state(inventory, only=["monitoring"]).stacks["monitoring"]
    assert "notes/todo.md" not in stack.files.manifest() and "prometheus.yml.swp" not in stack.files.manifest()
    (folder / "passwd").symlink_to("/etc/passwd")
    done = subprocess.run([".venv/bin/homelab", "plan", "--inventory", str(inventory), "--only", "monitoring"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "passwd: a symlink to /etc/passwd, outside the config repo" in done.stderr
    assert "Traceback" not in done.stderr


async def test_per_host_env_gives_each_host_its_own_variant(clean_lab: Path, tmp_path: Path) -> None:
    inventory = repo_copy(clean_lab, tmp_path)
    data = yaml.safe_load(inventory.read_text())
    light = data["phases"]["ai"]["stacks"]["jjeco-light"]
    compose_file = inventory.parent / "stacks" / "jjeco-light" / "compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    compose["services"]["web"]["environment"]["TIER"] = "${TIER:-light}"
    compose_file.write_text(yaml.safe_dump(compose))
    light["per_host"] = {"thinkpad": {"env": {"TIER": "staging"}}}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    _, report = await deploy(inventory, only=["jjeco-light"])
    assert report["result"] == "success", report
    for host, tier in (("vps", "light"), ("thinkpad", "staging")):
        cid = service_ids("jjeco-light", host)["web"]
        env = on_host(host, ["docker", "inspect", "--format", '{{range .Config.Env}}{{println .}}{{end}}', cid])
        assert f"TIER={tier}" in env.splitlines()


def image_id(host: str, ref: str) -> str:
    return on_host(host, ["docker", "image", "inspect", "--format", "{{.Id}}", ref]).strip()


async def test_a_moved_tag_updates_exactly_its_stack_and_rolls_back_to_the_old_image(
        clean_lab: Path, tmp_path: Path) -> None:
    moving = "localhost/lab-web:moving"
    on_host("rtx1080", ["docker", "tag", "localhost/lab-web:1", moving])
    try:
        inventory = repo_copy(clean_lab, tmp_path)
        compose_file = inventory.parent / "stacks" / "redis" / "compose.yaml"
        compose = yaml.safe_load(compose_file.read_text())
        compose["services"]["web"]["image"] = moving
        compose_file.write_text(yaml.safe_dump(compose))
        _, first = await deploy(inventory)
        assert first["result"] == "success", first
        old_id, new_id = image_id("rtx1080", moving), image_id("rtx1080", "localhost/lab-web:2")
        on_host("rtx1080", ["docker", "tag", "localhost/lab-web:2", moving])  # the tag moves upstream

        desired = load_desired_state(inventory)
        assert not (await preview_plan(desired, full=True)).pending  # without a refresh nobody looks
        plan = await preview_plan(desired, full=True, refresh_images=True)
        assert [(c.host, c.stack, c.action) for c in plan.pending] == [("rtx1080", "redis", "update")]
        reason = plan.pending[0].reason
        assert reason == f"image {moving} sha256:{old_id[7:19]}\u2026 \u2192 sha256:{new_id[7:19]}\u2026", reason

        _, second = await deploy(inventory, refresh_images=True)
        assert second["result"] == "success", second
        assert {k for k, v in results(second).items() if v != "unchanged"} == {("rtx1080", "redis")}
        running = on_host("rtx1080", ["docker", "inspect", "--format", "{{.Image}}",
                                      *project_container_ids("rtx1080", "redis")]).split()
        assert running == [new_id]

        from flows.rollback import rollback_homelab
        state = await rollback_homelab(inventory=str(inventory), stacks=["redis"], return_state=True)
        assert state.is_completed()
        running = on_host("rtx1080", ["docker", "inspect", "--format", "{{.Image}}",
                                      *project_container_ids("rtx1080", "redis")]).split()
        assert running == [old_id]  # the old image id, although the tag had moved
        assert image_id("rtx1080", moving) == old_id
    finally:
        on_host("rtx1080", ["docker", "rmi", "--force", moving])


LEDGER_PORT = 8190
LEDGER_DATA = f"http://127.0.0.1:{LEDGER_PORT}/data/db.txt"
DB = "/tmp/www/data/db.txt"


def with_ledger(inventory: Path, migrate: str) -> None:
    """A postgres-like stack with a file-backed "database" in its project directory
    (./data, never shipped), served over HTTP, and the three data hooks."""
    data = yaml.safe_load(inventory.read_text())
    data["phases"]["foundation"]["stacks"]["ledger"] = {
        "hosts": ["rtx1080"],
        "health": {"timeout_s": 20, "checks": [{"http": LEDGER_DATA}]},
        "hooks": {
            "backup": {"service": "db", "run": f"cp {DB} {DB}.bak"},
            "migrate": {"service": "db", "run": migrate, "timeout_s": 20},
            "restore": {"service": "db", "run": f"cp {DB}.bak {DB}"},
        },
    }
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    folder = inventory.parent / "stacks" / "ledger"
    folder.mkdir(exist_ok=True)
    compose = {"services": {"db": {"image": "localhost/lab-web:1", "init": True, "network_mode": "host",
                                   "environment": {"PORT": str(LEDGER_PORT), "STACK": "ledger"},
                                   "volumes": ["./data:/tmp/www/data"]}}}
    (folder / "compose.yaml").write_text(yaml.safe_dump(compose))


async def test_a_failed_migration_ends_on_the_old_release_with_the_old_data(clean_lab: Path, tmp_path: Path) -> None:
    inventory = repo_copy(clean_lab, tmp_path)
    with_ledger(inventory, f"echo 'schema 1' > {DB}")
    _, first = await deploy(inventory, only=["ledger"])
    assert first["result"] == "success", first
    assert served(LEDGER_DATA, host="rtx1080") == "schema 1\n"
    old_release = current_release("rtx1080", "ledger")

    with_ledger(inventory, f"echo 'schema 2, half-way' > {DB}; echo 'ALTER TABLE failed' >&2; exit 3")
    _, second = await deploy(inventory, only=["ledger"])
    assert second["result"] == "failed"
    ledger = next(s for s in second["stacks"] if s["stack"] == "ledger")
    assert ledger["error"].startswith("migrate hook failed (exit 3)"), ledger
    assert "ALTER TABLE failed" in ledger["error"]  # the hook's own output
    assert ledger["rollback"] == f"restored release {old_release} (healthy, data restored by the restore hook)"
    assert current_release("rtx1080", "ledger") == old_release
    assert served(LEDGER_DATA, host="rtx1080") == "schema 1\n"  # the old release, on the restored data
    record = yaml.safe_load(on_host("rtx1080", ["cat", f"/root/.homelab/releases/ledger/{ledger['release']}/"
                                                       "release.json"]))
    assert record["hooks"]["backup"]["exit"] == 0
    assert record["hooks"]["migrate"]["exit"] == 3 and "ALTER TABLE failed" in record["hooks"]["migrate"]["output"]
