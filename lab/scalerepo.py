"""A generated GitOps repository for a lab of any size (`homelab lab up --hosts N`).

About 3.3 stacks per host over the homelab's five phases (100 stacks at 30 hosts), every tenth
stack placed on a second host, two thirds of them healthchecked web services, the rest plain
workers without a healthcheck. Two tagged releases:

- ``v1``    every stack on its first image
- ``v1.1``  one stack changed (``s001`` -> ``lab-web:2``): the one-stack change of the benchmark

The output is a pure function of the host count, so two lab ups of the same size write the
same repository and two plans of the same state are identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from lab import configrepo, topology

REPO_VERSION = "3"  # bump when the generated content changes
# The homelab's phases and their order (as in deployments/homelab.yaml).
PHASES: list[tuple[str, list[str]]] = [
    ("foundation", []), ("core", ["foundation"]), ("apps", ["core"]), ("ai", ["foundation"]), ("edge", ["core"]),
]
FIRST_PORT = 9001
CHANGED_STACK = "s001"
# A settled container is re-checked this rarely by the lab's healthcheck driver (label read by
# lab/healthdriver.py): 70 healthchecked containers at the driver's 5 s default would keep a
# whole core of this 2-core machine busy; a deploy's gate still sees "healthy" within 1 s.
SETTLED_CHECK_S = 60
# 100 containers starting at once on 2 cores: one `healthcheck run` (an exec into the container)
# can take longer than the image's 2 s timeout, and two misses make the container unhealthy, which
# fails its gate at once. A real operator gives such services a start period, as here: misses in
# it do not count.
WEB_HEALTHCHECK = {"interval": "1s", "timeout": "10s", "retries": 3, "start_period": "60s"}


def stack_count(hosts: int) -> int:
    return -(-hosts * 10 // 3)  # ceil(3.33 per host): 10 at 3 hosts, 34 at 10, 100 at 30


def stack_name(index: int) -> str:
    return f"s{index:03d}"


def is_plain(index: int) -> bool:
    """Every third stack runs a worker without a healthcheck (gated on "running")."""
    return index % 3 == 2


def placement(index: int, hosts: list[str]) -> list[str]:
    first = hosts[index % len(hosts)]
    if index % 10 == 9 and len(hosts) > 1:
        return [first, hosts[(index + 1) % len(hosts)]]
    return [first]


def compose_for(index: int, version: str) -> dict:
    stack = stack_name(index)
    if is_plain(index):
        service = {"image": configrepo.WORKER, "init": True, "network_mode": "host",
                   "environment": {"STACK": stack}}
    else:
        port = FIRST_PORT + index
        probe = f"wget -q -O /dev/null http://127.0.0.1:{port}/health || exit 1"
        service = {**configrepo.web(stack, version, port),
                   "healthcheck": {"test": ["CMD-SHELL", probe], **WEB_HEALTHCHECK},
                   "labels": {"lab.healthdriver.settled-interval": str(SETTLED_CHECK_S)}}
    return {"services": {"app": service}}


def inventory(hosts: int) -> dict:
    base = configrepo.inventory()
    host_entries = {name: {"address": address, "gpu": name in topology.GPU_HOSTS}
                    for name, address in topology.lab_hosts(hosts).items()}
    names = list(host_entries)
    phases: dict[str, dict] = {name: {"stacks": {}} | ({"depends_on": deps} if deps else {})
                               for name, deps in PHASES}
    for index in range(stack_count(hosts)):
        phase = PHASES[index % len(PHASES)][0]
        entry: dict = {"hosts": placement(index, names), "health": {"timeout_s": 60}}
        if not is_plain(index):
            entry["health"]["checks"] = [{"http": f"http://127.0.0.1:{FIRST_PORT + index}/health"}]
        phases[phase]["stacks"][stack_name(index)] = entry
    return {
        "version": 1,
        "name": f"homelab-lab-{hosts}",
        "ssh": base["ssh"],
        "defaults": {**base["defaults"], "max_hosts_parallel": 16},
        "approval": base["approval"],
        "hosts": host_entries,
        "phases": phases,
    }


def repo_dir(hosts: int) -> Path:
    return topology.LAB_DIR / "scale" / f"hosts-{hosts}"


def _write(root: Path, hosts: int, changed: set[str]) -> None:
    header = f"# A generated {hosts}-host lab: `homelab lab up --hosts {hosts}` (lab/scalerepo.py).\n"
    (root / "homelab.yaml").write_text(header + yaml.safe_dump(inventory(hosts), sort_keys=False))
    for index in range(stack_count(hosts)):
        stack = stack_name(index)
        path = root / "stacks" / stack / "compose.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(compose_for(index, "2" if stack in changed else "1"), sort_keys=False))


def ensure(hosts: int) -> Path:
    """Create the repository for ``hosts`` hosts unless an up-to-date one exists; returns the
    inventory path."""
    root = repo_dir(hosts)
    marker = root / ".lab-version"
    if marker.exists() and marker.read_text().strip() == REPO_VERSION:
        return root / "homelab.yaml"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    git = configrepo.git
    git(root, "init", "-q", "-b", "main")
    for tag, changed in (("v1", set()), ("v1.1", {CHANGED_STACK})):
        _write(root, hosts, changed)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"generated {hosts}-host lab release {tag}")
        git(root, "tag", tag)
    marker.write_text(REPO_VERSION + "\n")  # last: a half-written repository is rebuilt
    return root / "homelab.yaml"
