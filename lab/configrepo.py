"""The lab's GitOps repository: the same hosts, phases and stack names as
``deployments/homelab.yaml``, but lab addresses and lab images, in tagged releases:

- ``v1``        first release: every stack on ``lab-web:1``
- ``v1.1``      one stack changed (newsletter -> ``lab-web:2``)
- ``v2``        some more stacks updated (redis, homeassistant -> ``lab-web:2``); ``main`` points here
- ``v3-broken`` on branch ``broken``: media runs ``lab-web:broken``, whose healthcheck never passes
- ``v3-edge-broken`` on branch ``edge-broken``: redis (rtx1080, phase foundation) goes back to
  ``lab-web:1`` and succeeds, then newsletter (vps, phase edge) runs ``lab-web:broken``

The release pipeline's branch ``pipeline`` (from ``v2``): newsletter and redis have staging
copies (``compose.staging.yaml``: their own port on thinkpad) with smoke tests, and the inventory
keeps the default approval policy (every production change asks). Earlier releases exempt
every trigger, so they deploy without a gate.

- ``v4-staged``       newsletter's config changes (EDITION=4): stages, passes its smoke tests
- ``v4-smoke-fails``  newsletter's config changes (EDITION=5) and a smoke test wants a body it never serves
- ``v4-prod-broken``  newsletter runs ``lab-web:broken`` in production; its staging copy runs ``lab-web:2``
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from lab import topology

REPO_VERSION = "7"  # bump when the generated content changes, so `lab up` rebuilds the repo

# (phase, depends_on, {stack: hosts}) - mirrors deployments/homelab.yaml
PHASES: list[tuple[str, list[str], dict[str, list[str]]]] = [
    ("foundation", [], {"postgres": ["rtx1080"], "redis": ["rtx1080"]}),
    ("core", ["foundation"], {"traefik": ["thinkpad"], "authentik": ["thinkpad"], "portainer": ["thinkpad"]}),
    ("apps", ["core"], {"monitoring": ["thinkpad"], "homeassistant": ["thinkpad"], "media": ["rtx1080"]}),
    ("ai", ["foundation"], {"jjeco-heavy": ["rtx1080"], "jjeco-light": ["vps", "thinkpad"]}),
    ("edge", ["core"], {"newsletter": ["vps"], "api-gateway": ["vps"]}),
]
STACKS = [name for _, _, stacks in PHASES for name in stacks]
PORTS = {name: 8101 + index for index, name in enumerate(STACKS)}
WORKER = "localhost/lab-worker:1"
RELEASES: list[tuple[str, dict[str, str]]] = [
    ("v1", {}),
    ("v1.1", {"newsletter": "2"}),
    ("v2", {"newsletter": "2", "redis": "2", "homeassistant": "2"}),
]
# (tag, {stack: {"edition": ..., "smoke_body": ..., "prod_image": ...}}), in order on branch PIPELINE_BRANCH
PIPELINE_BRANCH = "pipeline"
STAGED = ("newsletter", "redis")  # stacks with a staging copy on the pipeline branch
STAGING_PORT_OFFSET = 1000
PIPELINE: list[tuple[str, dict[str, dict[str, str]]]] = [
    ("v4-staged", {"newsletter": {"edition": "4"}}),
    ("v4-smoke-fails", {"newsletter": {"edition": "5", "smoke_body": "edition 5"}}),
    ("v4-prod-broken", {"newsletter": {"edition": "4", "prod_image": "broken"}}),
]
# (tag, branch, versions), each branched from the last release
BROKEN = [
    ("v3-broken", "broken", {"newsletter": "2", "redis": "2", "homeassistant": "2", "media": "broken"}),
    ("v3-edge-broken", "edge-broken", {"newsletter": "broken", "redis": "1", "homeassistant": "2"}),
]


def repo_dir() -> Path:
    return topology.LAB_DIR / "config"


def inventory_path() -> Path:
    return repo_dir() / "homelab.yaml"


def web(stack: str, version: str, port: int) -> dict:
    return {"image": f"localhost/lab-web:{version}", "init": True, "network_mode": "host",
            "environment": {"PORT": str(port), "STACK": stack}}


def compose_for(stack: str, version: str) -> dict:
    port = PORTS[stack]
    services = {"web": web(stack, version, port)}
    if stack == "authentik":  # a two-service stack, one without a healthcheck
        services["worker"] = {"image": WORKER, "init": True, "network_mode": "host",
                              "environment": {"STACK": stack}}
    return {"services": services}


# The monitoring stack is shaped like a real one: a main file with an `include:` and a
# profile, an override file, `.env` interpolation, and bind-mounted config files that the
# service serves back (GET /config.yml), so a probe sees which config is live.
MONITORING_CONFIG_URL = f"http://127.0.0.1:{PORTS['monitoring']}/config.yml"
PROMETHEUS_YML = """# Prometheus configuration of the lab (served back by the lab's monitoring web service).
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:9090"]
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:9100"]
"""


def monitoring_files(version: str) -> dict[str, str]:
    port = PORTS["monitoring"]
    main = {
        "include": ["grafana/compose.yaml"],
        "services": {
            "web": {**web("monitoring", "${WEB_TAG:-1}", port), "volumes": ["./prometheus.yml:/tmp/www/config.yml:ro"]},
            "exporter": {"image": WORKER, "init": True, "network_mode": "host", "profiles": ["exporters"],
                         "environment": {"STACK": "monitoring"}},
        },
    }
    grafana = {"services": {"grafana": {**web("monitoring", "${WEB_TAG:-1}", port + 100),
                                        "volumes": ["./grafana.ini:/tmp/www/grafana.ini:ro"]}}}
    override = {"services": {"web": {"environment": {"ROLE": "${ROLE:-monitoring}"}}}}
    return {
        "compose.yaml": yaml.safe_dump(main, sort_keys=False),
        "lab.override.yaml": "# lab-only settings on top of compose.yaml\n" + yaml.safe_dump(override, sort_keys=False),
        ".env": f"WEB_TAG={version}\n",
        "prometheus.yml": PROMETHEUS_YML,
        "grafana/compose.yaml": yaml.safe_dump(grafana, sort_keys=False),
        "grafana/grafana.ini": "[server]\nhttp_port = 3000\n[analytics]\nreporting_enabled = false\n",
        ".homelabignore": "# never shipped\n*.swp\nnotes/\n",
    }


def staging_port(stack: str) -> int:
    return PORTS[stack] + STAGING_PORT_OFFSET


def staging_form(stack: str, smoke_body: str | None = None) -> dict:
    """The staging copy's health gate and smoke tests (its port comes from compose.staging.yaml)."""
    port = staging_port(stack)
    return {"health": {"timeout_s": 20, "checks": [{"http": f"http://127.0.0.1:{port}/health"}]},
            "smoke": [{"name": "home page", "http": f"http://127.0.0.1:{port}/", "expect_status": 200,
                       "body_regex": f"^lab-web \\S+ {stack}$", "max_latency_ms": 2000,
                       **({"body_contains": smoke_body} if smoke_body else {})},
                      {"name": "knows its stack", "exec": f'test "$STACK" = {stack}', "service": "web"}]}


def inventory(pipeline: dict[str, dict[str, str]] | None = None) -> dict:
    """The lab's inventory; ``pipeline`` (a PIPELINE entry's changes): the pipeline branch's."""
    hosts = {name: {"address": address, "gpu": name in topology.GPU_HOSTS}
             for name, address in topology.HOSTS.items()}
    hosts["thinkpad"]["environment"] = "staging"
    phases = {}
    for name, depends_on, stacks in PHASES:
        entries = {}
        for stack, on in stacks.items():
            checks: list[dict] = [{"http": f"http://127.0.0.1:{PORTS[stack]}/health"}]
            if stack == "postgres":
                checks.append({"tcp": PORTS[stack]})
            entries[stack] = {"hosts": on, "health": {"timeout_s": 20, "checks": checks}}
            if stack == "monitoring":
                checks.append({"http": MONITORING_CONFIG_URL})
                entries[stack].update({"compose": ["compose.yaml", "lab.override.yaml"], "profiles": ["exporters"],
                                       "env": {"ROLE": "lab-monitoring"}})
            if pipeline is not None and stack in STAGED:
                entries[stack]["staging"] = staging_form(stack, pipeline.get(stack, {}).get("smoke_body"))
        phases[name] = {"depends_on": depends_on, "stacks": entries} if depends_on else {"stacks": entries}
    # Releases before the pipeline deploy without a gate; the pipeline branch keeps the default.
    exempt = {"approval": {"not_needed": {"triggers": ["manual", "webhook", "nightly", "agent"]}}}
    approval = {} if pipeline is not None else exempt
    return {
        "version": 1,
        "name": "homelab-lab",
        "ssh": {"known_hosts": str(topology.known_hosts_path()), "identity": str(topology.client_key_path()),
                "connect_timeout_s": 5, "command_timeout_s": 120},
        "defaults": {"max_parallel": 4, "keep_releases": 5, "health_timeout_s": 20, "min_free_disk_mb": 64},
        **approval,
        "hosts": hosts,
        "phases": phases,
    }


def pipeline_files(stack: str, version: str, change: dict[str, str]) -> dict[str, str]:
    """A staged stack on the pipeline branch: its compose file (with the change) and its
    staging override (own port; ``prod_image`` changes production only)."""
    main = compose_for(stack, change.get("prod_image", version))
    if "edition" in change:
        main["services"]["web"]["environment"]["EDITION"] = change["edition"]
    staging: dict = {"environment": {"PORT": str(staging_port(stack))}}
    if "prod_image" in change:
        staging["image"] = f"localhost/lab-web:{version}"
    return {"compose.yaml": yaml.safe_dump(main, sort_keys=False),
            "compose.staging.yaml": "# the staging copy on thinkpad: its own port\n"
                                    + yaml.safe_dump({"services": {"web": staging}}, sort_keys=False)}


def _write(root: Path, versions: dict[str, str], pipeline: dict[str, dict[str, str]] | None = None) -> None:
    header = "# The simulated homelab: generated by `homelab lab up` (lab/configrepo.py).\n"
    (root / "homelab.yaml").write_text(header + yaml.safe_dump(inventory(pipeline), sort_keys=False))
    for stack in STACKS:
        version = versions.get(stack, "1")
        if pipeline is not None and stack in STAGED:
            files = pipeline_files(stack, version, pipeline.get(stack, {}))
        elif stack == "monitoring":
            files = monitoring_files(version)
        else:
            files = {"compose.yaml": yaml.safe_dump(compose_for(stack, version), sort_keys=False)}
        for name, text in files.items():
            path = root / "stacks" / stack / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=homelab lab", "-c",
                           "user.email=lab@homelab.invalid", "-c", "commit.gpgsign=false", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _current(root: Path) -> bool:
    marker = root / ".lab-version"
    if not marker.exists() or marker.read_text().strip() != REPO_VERSION:
        return False
    try:
        tags = set(git(root, "tag").split())
    except subprocess.CalledProcessError:
        return False
    return {tag for tag, _ in RELEASES} | {tag for tag, _, _ in BROKEN} | {tag for tag, _ in PIPELINE} <= tags


def ensure() -> Path:
    """Create the repository unless an up-to-date one exists; returns the inventory path."""
    root = repo_dir()
    if _current(root):
        write_trust_file()  # the lab's size may have changed
        return inventory_path()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / ".lab-version").write_text(REPO_VERSION + "\n")
    for tag, versions in RELEASES:
        _write(root, versions)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"lab release {tag}")
        git(root, "tag", tag)
    for tag, branch, versions in BROKEN:
        git(root, "checkout", "-q", "-b", branch, RELEASES[-1][0])
        _write(root, versions)
        git(root, "commit", "-q", "-am", f"lab release {tag}: an image whose healthcheck fails")
        git(root, "tag", tag)
    git(root, "checkout", "-q", "-b", PIPELINE_BRANCH, RELEASES[-1][0])
    for tag, changes in PIPELINE:
        _write(root, RELEASES[-1][1], changes)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"lab release {tag}")
        git(root, "tag", tag)
    git(root, "checkout", "-q", "main")
    write_trust_file()
    return inventory_path()


def trust_file_path() -> Path:
    """The lab's trust file: beside the config repo, not in it."""
    return topology.LAB_DIR / "trust.yaml"


def write_trust_file() -> Path:
    """What the lab's operator trusts: its hosts and SSH settings, deploys from the release
    branches, and the Vault paths the secret tests declare (under any per-test prefix)."""
    from model.inventory import Inventory
    from model.trust import TrustedHost, dump, pin

    pinned = pin(Inventory.model_validate(inventory()),
                 ["main", *(branch for _, branch, _ in BROKEN), PIPELINE_BRANCH])
    # A lab brought up with --hosts N also trusts its extra hosts (the generated inventory's).
    extras = {name: TrustedHost(address=address) for name, address in topology.lab_hosts().items()
              if name not in topology.HOSTS}
    own_path = {"jjeco-light": "jjeco"}  # stacks whose KV path is not their name
    vault = {"*": ["homelab/{stack}", "t*/homelab/{stack}"],
             **{stack: [f"homelab/{path}", f"t*/homelab/{path}"] for stack, path in own_path.items()}}
    path = trust_file_path()
    path.write_text(dump(pinned.model_copy(update={"vault_paths": vault, "hosts": {**pinned.hosts, **extras}})))
    return path
