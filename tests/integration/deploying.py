"""Helpers for integration tests that run the deploy flow in-process against the lab."""

from __future__ import annotations

import json
from pathlib import Path

from lab import manager, topology
from model.errors import DeployFailed
from tasks.engine import audit


async def deploy(inventory: Path, **params: object) -> tuple[object, dict | BaseException]:
    """Run deploy-homelab; returns (final state, report JSON or the exception it raised)."""
    from flows.deploy import deploy_homelab

    state = await deploy_homelab(inventory=str(inventory), return_state=True, **params)
    value = await state.aresult(raise_on_failure=False)
    if isinstance(value, DeployFailed):
        return state, value.report.to_json()
    return state, value


def results(report: dict) -> dict[tuple[str, str], str]:
    """(host, stack) -> result."""
    return {(s["host"], s["stack"]): s["result"] for s in report["stacks"]}


def on_host(host: str, argv: list[str]) -> str:
    """stdout of ``argv`` run inside a lab host (no SSH); fails the test on a non-zero exit."""
    done = manager.exec_on(host, argv)
    assert done.returncode == 0, f"{host}: {argv}: {done.stderr!r}"
    return done.stdout.decode()


def container_ids() -> dict[str, set[str]]:
    """host -> ids of every container on it (running or not)."""
    out = {}
    for host in topology.HOSTS:
        out[host] = set(on_host(host, ["docker", "ps", "-aq", "--no-trunc"]).split())
    return out


def project_container_ids(host: str, stack: str) -> set[str]:
    return set(on_host(host, ["docker", "ps", "-aq", "--no-trunc", "--filter",
                              f"label=com.docker.compose.project={stack}"]).split())


def current_release(host: str, stack: str) -> str | None:
    done = manager.exec_on(host, ["cat", f"/root/.homelab/releases/{stack}/current"])
    return done.stdout.decode().strip() or None if done.returncode == 0 else None


def release_status(host: str, stack: str, release: str) -> str:
    raw = on_host(host, ["cat", f"/root/.homelab/releases/{stack}/{release}/release.json"])
    return json.loads(raw)["status"]


def stack_health(host: str, stack: str) -> dict[str, str]:
    """service -> health of the project's containers (running ones; "exited" otherwise)."""
    ids = project_container_ids(host, stack)
    if not ids:
        return {}
    out = on_host(host, ["docker", "inspect", "--format",
                         '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} '
                         "{{if .State.Health}}{{.State.Health.Status}}{{end}}", *sorted(ids)])
    health = {}
    for line in out.splitlines():
        service, status, *rest = line.split()
        health[service] = (rest[0] if rest else "none") if status == "running" else status
    return health


def deployed_commits() -> dict[tuple[str, str], str]:
    """(host, stack) -> the commit of the stack's current release, for every deployed stack."""
    script = ('for d in /root/.homelab/releases/*/; do [ -f "$d/current" ] || continue; '
              'r=$(cat "$d/current"); printf "%s %s\\n" "$(basename "$d")" '
              '"$(sed -n \'s/.*"commit": *"\\([^"]*\\)".*/\\1/p\' "$d/$r/release.json" | head -n 1)"; done')
    out = {}
    for host in topology.HOSTS:
        for line in on_host(host, ["sh", "-c", script]).splitlines():
            stack, _, commit = line.partition(" ")
            out[(host, stack)] = commit
    return out


def place_lock(host: str, owner: dict) -> None:
    manager.exec_on(host, ["mkdir", "-p", "/root/.homelab/lock"])
    done = manager.exec_on(host, ["sh", "-c", 'cat > /root/.homelab/lock/owner.json'],
                           input=json.dumps(owner).encode())
    assert done.returncode == 0


def lock_owner(host: str) -> dict | None:
    done = manager.exec_on(host, ["cat", "/root/.homelab/lock/owner.json"])
    return json.loads(done.stdout) if done.returncode == 0 else None


def audit_events(event: str) -> list[dict]:
    path = audit.audit_path()
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == event]


def trust_as_is(inventory: Path, monkeypatch) -> Path:
    """A trust file beside ``inventory`` that pins it as it is: for tests that change what the
    lab's own trust file pins (SSH settings) to exercise a check further on."""
    from model.inventory_loader import load_inventory
    from model.trust import TRUST_FILE_ENV, dump, pin

    path = inventory.parent.parent / f"{inventory.parent.name}-trust.yaml"
    path.write_text(dump(pin(load_inventory(inventory))))
    monkeypatch.setenv(TRUST_FILE_ENV, str(path))
    return path


def lab_checkout(clean_lab: Path, tmp_path: Path, tag: str) -> Path:
    """A clone of the lab's config repo with ``tag`` checked out; the path of its inventory,
    for tests that edit the working tree and deploy it."""
    import subprocess

    copy = tmp_path / "config"
    subprocess.run(["git", "clone", "-q", str(clean_lab.parent), str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "-f", tag], check=True)
    return copy / "homelab.yaml"
