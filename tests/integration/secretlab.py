"""Shared pieces of the secrets tests: a per-test Vault prefix with canary values, and a copy
of the lab repository whose stacks declare secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.deploying import on_host, project_container_ids

ROOT = Path(__file__).resolve().parents[2]
# stack -> (KV path, key); jjeco-light runs on two hosts
SECRET_STACKS = {"postgres": ("homelab/postgres", "POSTGRES_PASSWORD"),
                 "newsletter": ("homelab/newsletter", "LISTMONK_PASSWORD"),
                 "jjeco-light": ("homelab/jjeco", "JJECO_API_KEY"),
                 "media": ("homelab/media", "JELLYFIN_API_KEY")}


def canary(tag: str) -> str:
    return f"S3CR3T-{tag}-{uuid.uuid4().hex[:12]}"


def tricky_canary(tag: str) -> str:
    """A canary with a double quote, backslashes and non-ASCII characters: it survives JSON and
    repr escaping unchanged only if the masker knows those forms. (A compose env file cannot hold
    a single quote or a line break; those go into ``NOTE``, a key no stack renders.)"""
    return f'S3CR3T-{tag}-"q\\b\\-ü€-{uuid.uuid4().hex[:12]}'


@pytest.fixture
def vault(openbao, monkeypatch, request) -> dict[str, str]:
    """Fresh secrets under a per-test prefix, an AppRole that may read only those paths, and
    the VAULT_* environment pointing at it. Returns path -> canary value.

    Parametrize it indirectly with "tricky" for canaries with quotes, backslashes and non-ASCII,
    plus a ``NOTE`` key at each path holding a line break and a single quote (returned as
    ``path:NOTE``)."""
    tricky = getattr(request, "param", "plain") == "tricky"
    prefix = f"t{uuid.uuid4().hex[:8]}"
    values = {}
    for stack, (path, key) in SECRET_STACKS.items():
        values[f"{prefix}/{path}"] = (tricky_canary if tricky else canary)(stack)
        data = {key: values[f"{prefix}/{path}"], "USERNAME": "deploy-user"}
        if tricky:
            values[f"{prefix}/{path}:NOTE"] = data["NOTE"] = f"S3CR3T-note-{stack}\nit's \"{uuid.uuid4().hex[:12]}\""
        openbao.put(f"{prefix}/{path}", data)
    role_id, secret_id = openbao.approle([f"{prefix}/homelab/*"])
    for name, value in openbao.env(role_id, secret_id).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    values["_prefix"] = prefix
    return values


def leak_command(key: str) -> list[str]:
    """A container command that prints the secret ``key`` to its log raw, JSON-escaped and in
    base64, then serves as usual (``$$`` is compose's escape of ``$``)."""
    value = f'"$${key}"'
    script = (f'printf "leak raw: %s\\n" {value}; '
              f'printf "leak json: {{\\"k\\":\\"%s\\"}}\\n" '
              f'"$$(printf %s {value} | sed -e \'s/\\\\/\\\\\\\\/g\' -e \'s/"/\\\\"/g\')"; '
              f'printf "leak b64: %s\\n" "$$(printf %s {value} | base64 | tr -d \'\\n\')"; '
              'exec /bin/sh /lab/web.sh')
    return ["/bin/sh", "-c", script]


def lab_copy(clean_lab: Path, tmp_path: Path, tag: str, prefix: str, picky: tuple[str, ...] = (),
             leaky: tuple[str, ...] = ()) -> Path:
    """The lab repo at ``tag`` with secrets declared on some stacks and referenced by env_file.
    The ``picky`` stacks are healthy only while their secret looks like a test canary, so a
    rotation to a random value fails their health gate. The ``leaky`` stacks print their secret
    to their container log (``leak_command``)."""
    copy = tmp_path / "config"
    if not copy.exists():
        subprocess.run(["git", "clone", "-q", str(clean_lab.parent), str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "-f", tag], check=True)
    inventory = copy / "homelab.yaml"
    data = yaml.safe_load(inventory.read_text())
    for phase in data["phases"].values():
        for stack, spec in phase["stacks"].items():
            if stack in SECRET_STACKS:
                path, key = SECRET_STACKS[stack]
                spec["secrets"] = [{"path": f"{prefix}/{path}", "keys": [key]}]
                compose_file = copy / "stacks" / stack / "compose.yaml"
                compose = yaml.safe_load(compose_file.read_text())
                compose["services"]["web"]["env_file"] = [".env.secrets"]
                if stack in leaky:
                    compose["services"]["web"]["command"] = leak_command(key)
                if stack in picky:
                    compose["services"]["web"]["healthcheck"] = {
                        "test": ["CMD-SHELL", f'case "$${key}" in S3CR3T-*) exit 0;; *) exit 1;; esac'],
                        "interval": "1s", "timeout": "2s", "retries": 2}
                compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


def container_env(host: str, stack: str) -> dict[str, str]:
    ids = sorted(project_container_ids(host, stack))
    out = on_host(host, ["docker", "inspect", "--format", "{{json .Config.Env}}", ids[0]])
    return dict(item.split("=", 1) for item in json.loads(out))


def homelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)
