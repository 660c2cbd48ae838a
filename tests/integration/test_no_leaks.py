"""No secret value may appear in any output: run a deploy and a failing deploy through the
CLI with recognisable values, then search every place a value could end up, for the value and
every escaped or encoded form of it (JSON, repr, URL, base64). The failing stack prints its
secret to its container log raw, JSON-escaped and in base64, and the values are run once plain
and once with quotes, backslashes, a line break and non-ASCII characters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lab import manager, topology
from model.masking import encoded_forms
from tasks.engine import audit
from tests.integration.secretlab import container_env, homelab, lab_copy

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]


async def prefect_records() -> str:
    """What the Prefect server serves: logs, artifacts, flow and task runs (events are in its
    database, which ``files_under(PREFECT_HOME)`` reads)."""
    from prefect import get_client
    from prefect.client.schemas.sorting import LogSort

    chunks = []
    async with get_client() as client:
        offset = 0
        while True:
            logs = await client.read_logs(limit=200, offset=offset, sort=LogSort.TIMESTAMP_ASC)
            chunks += [log.model_dump_json() for log in logs]
            if len(logs) < 200:
                break
            offset += 200
        chunks += [a.model_dump_json() for a in await client.read_artifacts(limit=200)]
        chunks += [r.model_dump_json() for r in await client.read_flow_runs(limit=200)]
        chunks += [r.model_dump_json() for r in await client.read_task_runs(limit=200)]
    return "\n".join(chunks)


def files_under(root: Path) -> str:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            out.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(out)


def host_records() -> str:
    """Release records, pending markers and lock owners on every lab host."""
    script = ("cat /root/.homelab/releases/*/*/release.json /root/.homelab/releases/*/pending "
              "/root/.homelab/lock/owner.json 2>/dev/null; true")
    return "\n".join(manager.exec_on(h, ["sh", "-c", script]).stdout.decode() for h in topology.HOSTS)


@pytest.mark.parametrize("vault", ["plain", "tricky"], indirect=True)
async def test_no_secret_value_appears_in_logs_results_artifacts_audit_or_output(clean_lab, tmp_path, vault):
    prefix = vault["_prefix"]
    values = [v for k, v in vault.items() if k != "_prefix"]
    leaky = ("media",)
    good = homelab("deploy", "-i", str(lab_copy(clean_lab, tmp_path, "v1", prefix, leaky=leaky)), "--json")
    assert good.returncode == 0, good.stderr[-3000:]
    bad = homelab("deploy", "-i", str(lab_copy(clean_lab, tmp_path, "v3-broken", prefix, leaky=leaky)), "--json")
    assert bad.returncode == 1  # media (which has a secret) fails its health gate and rolls back
    # its log was kept in the report, with the secret masked in every form it printed
    failed = [f for f in json.loads(bad.stdout)["failures"] if f["stack"] == "media"]
    assert failed and "leak raw: ***" in failed[0]["logs"], bad.stdout[-3000:]
    assert 'leak json: {"k":"***"}' in failed[0]["logs"]
    assert "leak b64: ***" in failed[0]["logs"]
    plan = homelab("plan", "-i", str(lab_copy(clean_lab, tmp_path, "v1", prefix, leaky=leaky)), "--json")
    status = homelab("status", "-i", str(clean_lab), "--json")
    # the values really were used: otherwise searching for them would prove nothing
    assert container_env("rtx1080", "postgres")["POSTGRES_PASSWORD"] == vault[f"{prefix}/homelab/postgres"]

    places = {
        "CLI output": "\n".join(p.stdout + p.stderr for p in (good, bad, plan, status)),
        "Prefect server": await prefect_records(),
        "Prefect home (results, logs, db)": files_under(Path(os.environ["PREFECT_HOME"])),
        "audit log": audit.audit_path().read_text(),
        "host records": host_records(),
    }
    for where, text in places.items():
        assert text, f"nothing collected from {where}"
        for value in values:
            for form in encoded_forms(value):
                assert form not in text, f"a secret value leaked into the {where} (as {form!r})"
