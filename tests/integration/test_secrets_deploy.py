"""Secrets from a real OpenBao (AppRole, least privilege) to the lab hosts, end to end."""

from __future__ import annotations

import json
import uuid

import pytest

from lab import manager
from tasks.integrations.vault.errors import SecretsError
from tests.integration.deploying import audit_events, container_ids, deploy, on_host, place_lock, results
from tests.integration.secretlab import canary, container_env, homelab, lab_copy

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]
async def test_deploy_delivers_secrets_as_0600_env_files_and_records_versions(clean_lab, tmp_path, vault):
    prefix = vault["_prefix"]
    state, report = await deploy(lab_copy(clean_lab, tmp_path, "v1", prefix))
    assert state.is_completed(), report
    value = vault[f"{prefix}/homelab/postgres"]
    assert container_env("rtx1080", "postgres")["POSTGRES_PASSWORD"] == value
    mode = on_host("rtx1080", ["stat", "-c", "%a %U", "/root/.homelab/stacks/postgres/.env.secrets"]).split()
    assert mode == ["600", "root"]
    release = on_host("rtx1080", ["cat", "/root/.homelab/releases/postgres/current"]).strip()
    record = json.loads(on_host("rtx1080", ["cat", f"/root/.homelab/releases/postgres/{release}/release.json"]))
    assert record["secret_versions"] == {f"{prefix}/homelab/postgres": 1}
    assert value not in json.dumps(record)
    compose = on_host("rtx1080", ["cat", f"/root/.homelab/releases/postgres/{release}/files/compose.yaml"])
    assert value not in compose  # values only ever live in the env file
    for host in ("vps", "thinkpad"):
        assert container_env(host, "jjeco-light")["JJECO_API_KEY"] == vault[f"{prefix}/homelab/jjeco"]
    # the audit log names the paths and versions read, never a value
    read = audit_events("secrets.read")[-1]
    assert read["versions"][f"{prefix}/homelab/postgres"] == 1 and "postgres" in read["stacks"]
    assert value not in json.dumps(read)


async def test_a_new_secret_version_redeploys_only_the_stacks_using_it(clean_lab, tmp_path, vault, openbao):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix)
    await deploy(inventory)
    before = container_ids()
    rotated = canary("newsletter-2")
    openbao.put(f"{prefix}/homelab/newsletter", {"LISTMONK_PASSWORD": rotated, "USERNAME": "deploy-user"})

    _, report = await deploy(inventory)
    changed = {k: r for k, r in results(report).items() if r != "unchanged"}
    assert changed == {("vps", "newsletter"): "healthy"}
    assert container_env("vps", "newsletter")["LISTMONK_PASSWORD"] == rotated
    newsletter_before = {i for i in before["vps"] if i not in container_ids()["vps"]}
    assert newsletter_before  # the newsletter container was recreated, nothing else
    assert before["rtx1080"] == container_ids()["rtx1080"]


@pytest.mark.parametrize("fault", ["missing key", "wrong secret_id", "denied path", "vault stopped"])
async def test_vault_problems_abort_before_any_host_changes(clean_lab, tmp_path, vault, openbao,
                                                          openbao_disposable, monkeypatch, fault):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix)
    await deploy(inventory)
    before = container_ids()
    inventory = lab_copy(clean_lab, tmp_path, "v2", prefix)
    if fault == "missing key":
        openbao.put(f"{prefix}/homelab/newsletter", {"USERNAME": "deploy-user"})
    elif fault == "wrong secret_id":
        monkeypatch.setenv("VAULT_SECRET_ID", str(uuid.uuid4()))
    elif fault == "denied path":
        role_id, secret_id = openbao.approle([f"{prefix}/homelab/postgres"])  # nothing else
        monkeypatch.setenv("VAULT_ROLE_ID", role_id)
        monkeypatch.setenv("VAULT_SECRET_ID", secret_id)
    else:
        monkeypatch.setenv("VAULT_ADDR", openbao_disposable.addr)
        openbao_disposable.stop()
    state, error = await deploy(inventory)
    assert state.is_failed()
    assert isinstance(error, SecretsError), error
    text = str(error)
    if fault in ("missing key", "denied path"):
        assert f"{prefix}/homelab/" in text
    if fault == "missing key":
        assert "LISTMONK_PASSWORD" in text
    for value in (v for k, v in vault.items() if k != "_prefix"):
        assert value not in text
    assert container_ids() == before


async def test_drift_is_found_by_hash_and_fixed_by_sync(clean_lab, tmp_path, vault):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix)
    await deploy(inventory)
    clean = homelab("secrets", "check", "-i", str(inventory))
    assert clean.returncode == 0, clean.stderr
    manager.exec_on("vps", ["sh", "-c", "echo LISTMONK_PASSWORD=hand-edited > "
                                        "/root/.homelab/stacks/newsletter/.env.secrets"])
    drift = homelab("secrets", "check", "-i", str(inventory), "--json")
    assert drift.returncode == 1
    assert json.loads(drift.stdout)["drift"] == [
        {"host": "vps", "stack": "newsletter", "file": ".env.secrets", "state": "drifted"}]
    synced = homelab("secrets", "sync", "-i", str(inventory), "--json")
    assert synced.returncode == 0, synced.stderr[-2000:]
    assert json.loads(synced.stdout)["fixed"] == ["vps/newsletter/.env.secrets"]
    assert homelab("secrets", "check", "-i", str(inventory)).returncode == 0
    mode = on_host("vps", ["stat", "-c", "%a", "/root/.homelab/stacks/newsletter/.env.secrets"]).strip()
    assert mode == "600"


async def test_rotation_writes_a_new_version_and_redeploys_only_its_users(clean_lab, tmp_path, vault, openbao):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix)
    await deploy(inventory)
    old = vault[f"{prefix}/homelab/jjeco"]
    # rotating needs write access: an operator's AppRole, not the deploy role (read-only)
    role_id, secret_id = openbao.approle([f"{prefix}/homelab/jjeco"], capabilities=("read", "create", "update"))
    done = homelab("secrets", "rotate", f"{prefix}/homelab/jjeco", "JJECO_API_KEY", "-i", str(inventory), "--json",
                   env=openbao.env(role_id, secret_id))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["rotated"]["from_version"] == 1 and report["rotated"]["to_version"] == 2
    assert {(s["host"], s["stack"]) for s in report["stacks"]} == {("vps", "jjeco-light"), ("thinkpad", "jjeco-light")}
    assert {s["result"] for s in report["stacks"]} == {"healthy"}
    new = container_env("vps", "jjeco-light")["JJECO_API_KEY"]
    assert new != old and container_env("thinkpad", "jjeco-light")["JJECO_API_KEY"] == new
    assert openbao.get(f"{prefix}/homelab/jjeco", version=1)[0]["JJECO_API_KEY"] == old  # KV history
    assert old not in done.stdout + done.stderr and new not in done.stdout + done.stderr


async def test_a_rotation_whose_redeploy_fails_rolls_back_to_the_old_value(clean_lab, tmp_path, vault, openbao):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix, picky=("jjeco-light",))
    _, first = await deploy(inventory)
    assert first["result"] == "success"
    old = vault[f"{prefix}/homelab/jjeco"]
    role_id, secret_id = openbao.approle([f"{prefix}/homelab/jjeco"], capabilities=("read", "create", "update"))
    done = homelab("secrets", "rotate", f"{prefix}/homelab/jjeco", "JJECO_API_KEY", "-i", str(inventory), "--json",
                   env=openbao.env(role_id, secret_id))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert {s["result"] for s in report["stacks"]} == {"failed"}
    assert all(s["rollback"].startswith("restored release") for s in report["stacks"])
    for host in ("vps", "thinkpad"):  # back on the old value, healthy
        assert container_env(host, "jjeco-light")["JJECO_API_KEY"] == old
    # Vault holds the old value again (version 3, written with check-and-set against 2), so the
    # hourly sync cannot bring the value that failed back to the hosts
    data, version = openbao.get(f"{prefix}/homelab/jjeco")
    assert (data["JJECO_API_KEY"], version) == (old, 3)
    assert report["rotated"] == {"path": f"{prefix}/homelab/jjeco", "key": "JJECO_API_KEY", "from_version": 1,
                                 "to_version": 2, "reverted_version": 3}
    reverted = audit_events("secret.rotation_reverted")[-1]
    assert (reverted["rotated_version"], reverted["to_version"]) == (2, 3)
    assert old not in json.dumps(reverted)
    assert homelab("secrets", "check", "-i", str(inventory)).returncode == 0  # hosts and Vault agree


async def test_a_rotation_takes_the_locks_before_it_writes_vault(clean_lab, tmp_path, vault, openbao):
    prefix = vault["_prefix"]
    inventory = lab_copy(clean_lab, tmp_path, "v1", prefix)
    await deploy(inventory)
    place_lock("thinkpad", {"flow_run_id": str(uuid.uuid4()), "user": "someone", "host": "elsewhere", "pid": 1,
                            "started_at": "2026-12-04T00:00:00Z", "commit": None})
    role_id, secret_id = openbao.approle([f"{prefix}/homelab/jjeco"], capabilities=("read", "create", "update"))
    done = homelab("secrets", "rotate", f"{prefix}/homelab/jjeco", "JJECO_API_KEY", "-i", str(inventory),
                   "--lock-wait", "1", env=openbao.env(role_id, secret_id))
    assert done.returncode == 5, done.stderr[-2000:]
    assert "someone" in done.stderr
    assert openbao.get(f"{prefix}/homelab/jjeco")[1] == 1  # nothing written while a host was busy
