"""Who may aim a deploy: refs must come from a protected branch (or a signed tag), and hosts,
SSH settings and Vault paths must match a trust file kept outside the config repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner
from unitsupport import ONE_STACK_INVENTORY, git, write_tree

from deployments.cli import app
from model.desired import load_desired_state
from model.errors import SourceError
from model.inventory_loader import load_inventory
from model.trust import REQUIRE_TRUST_ENV, TRUST_FILE_ENV, RefRules, TrustRefused, dump, pin

INVENTORY = """
ssh:
  known_hosts: /etc/homelab/known_hosts
  identity: /etc/homelab/id_ed25519
""" + ONE_STACK_INVENTORY + """        secrets:
          - path: homelab/web
            keys: [TOKEN]
"""
WEB = "services:\n  web:\n    image: nginx:1.26\n    env_file: .env.secrets\n"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A config repo on `main` with one commit, and a branch `feature` one commit ahead."""
    root = tmp_path / "repo"
    inventory = write_tree(root / "deploy", INVENTORY, {"web": WEB})
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    git(root, "checkout", "-q", "-b", "feature")
    (inventory.parent / "stacks/web/compose.yaml").write_text(WEB.replace("1.26", "1.27"))
    git(root, "commit", "-q", "-am", "feature")
    git(root, "checkout", "-q", "main")
    return root, inventory


@pytest.fixture
def trusted(repo: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A trust file (outside the repo) pinned to the inventory as it is on main."""
    _, inventory = repo
    path = tmp_path / "trust.yaml"
    path.write_text(dump(pin(load_inventory(inventory))))
    monkeypatch.setenv(TRUST_FILE_ENV, str(path))
    return path


def rewrite(path: Path, inventory: Path, **refs: object) -> None:
    """The trust file pinned to ``inventory``, with these ref rules."""
    pinned = pin(load_inventory(inventory))
    path.write_text(dump(pinned.model_copy(update={"refs": RefRules(**refs)})))


def edit_and_commit(root: Path, inventory: Path, old: str, new: str) -> None:
    inventory.write_text(inventory.read_text().replace(old, new))
    git(root, "commit", "-q", "-am", f"{old} -> {new}")


def test_a_ref_on_the_default_branch_is_admitted(repo, trusted):
    _, inventory = repo
    assert load_desired_state(inventory, "main").commit


def test_a_ref_outside_the_protected_branch_is_refused(repo, trusted):
    root, inventory = repo
    feature = git(root, "rev-parse", "feature")
    for ref in ("feature", feature):
        with pytest.raises(TrustRefused, match=r"not on a protected branch \(main\)") as refused:
            load_desired_state(inventory, ref)
        assert refused.value.exit_code == 2


def test_a_ref_outside_the_default_branch_is_refused_without_a_trust_file(repo):
    _, inventory = repo  # the unit conftest points HOMELAB_TRUST_FILE at a missing file
    with pytest.raises(TrustRefused, match="not on a protected branch"):
        load_desired_state(inventory, "feature")


def test_a_listed_branch_is_protected_too(repo, trusted):
    _, inventory = repo
    rewrite(trusted, inventory, protected_branches=["main", "feature"])
    assert load_desired_state(inventory, "feature").commit


def test_an_option_shaped_ref_is_refused(repo, trusted):
    _, inventory = repo
    with pytest.raises(SourceError, match="not a ref"):
        load_desired_state(inventory, "--output=/tmp/x")


def ssh_signing_key(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "signer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@example.org", "-f", str(key)],
                   check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ops@example.org {(tmp_path / 'signer.pub').read_text()}")
    return key, signers


def test_a_signed_tag_is_admitted_and_an_unsigned_one_is_not(repo, trusted, tmp_path):
    root, inventory = repo
    key, signers = ssh_signing_key(tmp_path)
    rewrite(trusted, inventory, allowed_signers=str(signers))
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "user.email=ops@example.org"]
    git(root, *sign, "tag", "-s", "-m", "hotfix", "hotfix-signed", "feature")
    git(root, "tag", "-a", "-m", "hotfix", "hotfix-unsigned", "feature")
    assert load_desired_state(inventory, "hotfix-signed").commit == git(root, "rev-parse", "feature")
    with pytest.raises(TrustRefused, match="is not a signed tag"):
        load_desired_state(inventory, "hotfix-unsigned")


@pytest.mark.parametrize(("old", "new", "field"), [
    ("address: 10.0.0.1", "address: 10.66.0.1", "hosts.alpha.address"),
    ("identity: /etc/homelab/id_ed25519", "identity: /tmp/attacker_key", "ssh.identity"),
    ("known_hosts: /etc/homelab/known_hosts", "known_hosts: /tmp/any_key", "ssh.known_hosts"),
    ("path: homelab/web", "path: homelab/postgres", "stacks.web.secrets: Vault path 'homelab/postgres'"),
])
def test_an_inventory_that_asks_for_more_than_the_trust_file_is_refused(repo, trusted, old, new, field):
    root, inventory = repo
    edit_and_commit(root, inventory, old, new)  # even on the protected branch itself
    for ref in (None, "main"):
        with pytest.raises(TrustRefused, match=re.escape(field)) as refused:
            load_desired_state(inventory, ref)
        assert str(trusted) in str(refused.value)


def test_a_new_host_is_refused(repo, trusted):
    root, inventory = repo
    edit_and_commit(root, inventory, "hosts:\n", "hosts:\n  evil:\n    address: 10.0.0.66\n")
    with pytest.raises(TrustRefused, match=r"hosts\.evil: not a host in the trust file"):
        load_desired_state(inventory)


def test_a_trust_file_inside_the_config_repo_is_refused(repo, monkeypatch):
    root, inventory = repo
    inside = root / "trust.yaml"
    inside.write_text(dump(pin(load_inventory(inventory))))
    monkeypatch.setenv(TRUST_FILE_ENV, str(inside))
    with pytest.raises(TrustRefused, match="inside the config repo"):
        load_desired_state(inventory)


def test_the_control_process_requires_a_trust_file(repo, monkeypatch):
    _, inventory = repo
    monkeypatch.setenv(REQUIRE_TRUST_ENV, "1")
    with pytest.raises(TrustRefused, match="homelab trust init"):
        load_desired_state(inventory)


def test_an_invalid_trust_file_is_refused(repo, trusted):
    _, inventory = repo
    trusted.write_text("version: 1\nhosts: {alpha: {address: 10.0.0.1, typo: 1}}\n")
    with pytest.raises(TrustRefused, match="unreadable or invalid"):
        load_desired_state(inventory)


def test_trust_init_writes_a_file_that_admits_the_inventory_and_keeps_it(repo, tmp_path, monkeypatch):
    _, inventory = repo
    path = tmp_path / "ops" / "trust.yaml"
    monkeypatch.setenv(TRUST_FILE_ENV, str(path))
    runner = CliRunner()
    done = runner.invoke(app, ["trust", "init", "-i", str(inventory)])
    assert done.exit_code == 0, done.output
    assert "homelab/web" in path.read_text() and "10.0.0.1" in path.read_text()
    again = runner.invoke(app, ["trust", "init", "-i", str(inventory)])
    assert again.exit_code == 2 and "--force" in again.output
    checked = runner.invoke(app, ["trust", "check", "-i", str(inventory), "--ref", "main"])
    assert checked.exit_code == 0 and "admitted" in checked.output
    refused = runner.invoke(app, ["trust", "check", "-i", str(inventory), "--ref", "feature"])
    assert refused.exit_code == 2 and "not on a protected branch" in refused.output


def test_an_agent_hook_must_be_the_trusted_one(repo, trusted):
    """A hook reads the plan and gets the token; an entry point runs in the orchestrator: the
    trust file names the one target each hook may call."""
    root, inventory = repo
    edit_and_commit(root, inventory, "hosts:\n", "agents:\n  plan_review:\n    url: http://10.0.0.9:8100/review\n"
                                                 "hosts:\n")
    with pytest.raises(TrustRefused, match=r"agents\.plan_review: the trust file allows no plan_review hook"):
        load_desired_state(inventory)
    pinned = pin(load_inventory(inventory))
    assert pinned.agents == {"plan_review": "http://10.0.0.9:8100/review"}
    trusted.write_text(dump(pinned))
    assert load_desired_state(inventory).inventory.agents.plan_review is not None
    edit_and_commit(root, inventory, "url: http://10.0.0.9:8100/review", "entry_point: os:system")
    with pytest.raises(TrustRefused, match=r"agents\.plan_review: target 'python:os:system' is not the trusted "
                                           r"'http://10\.0\.0\.9:8100/review'"):
        load_desired_state(inventory)
