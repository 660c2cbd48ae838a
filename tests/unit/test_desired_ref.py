"""The desired state from the working tree or from a git ref (``--ref``)."""

from __future__ import annotations

import pytest
from unitsupport import git, line_of, write_tree

from model.desired import config_hash, load_desired_state
from model.errors import InventoryError, SourceError

INVENTORY = """
hosts:
  alpha:
    address: 10.0.0.1
  beta:
    address: 10.0.0.2
phases:
  base:
    stacks:
      db:
        hosts: [beta]
  top:
    depends_on: [base]
    stacks:
      web:
        hosts: [alpha, beta]
"""
WEB_V1 = "services:\n  web:\n    image: nginx:1.26\n"
WEB_V2 = "services:\n  web:\n    image: nginx:1.27\n"
DB = "services:\n  db:\n    image: postgres:16\n"


@pytest.fixture
def repo(tmp_path):
    """A git repo with the inventory in ``deploy/`` (as in the real project), tagged v1."""
    root = tmp_path / "repo"
    inventory = write_tree(root / "deploy", INVENTORY, {"web": WEB_V1, "db": DB})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    git(root, "tag", "v1")
    return root, inventory


def test_worktree_state_outside_git(tmp_path):
    inventory = write_tree(tmp_path / "plain", INVENTORY, {"web": WEB_V1, "db": DB})
    desired = load_desired_state(inventory)
    assert desired.commit is None
    assert desired.source == str(inventory)
    assert list(desired.stacks) == ["db", "web"]
    web = desired.stacks["web"]
    assert (web.phase, web.hosts, web.images, web.services) == ("top", ("alpha", "beta"), {"web": "nginx:1.26"},
                                                                ("web",))
    assert web.files.get("compose.yaml").data == WEB_V1.encode()
    assert web.config_hash == config_hash(web.identity)
    assert desired.targeted_hosts() == ["alpha", "beta"]


def test_only_restricts_stacks_and_hosts(tmp_path):
    inventory = write_tree(tmp_path, INVENTORY, {"web": WEB_V1, "db": DB})
    desired = load_desired_state(inventory, only=["db"])
    assert list(desired.stacks) == ["db"]
    assert desired.targeted_hosts() == ["beta"]


def test_only_with_an_unknown_stack(tmp_path):
    inventory = write_tree(tmp_path, INVENTORY, {"web": WEB_V1, "db": DB})
    with pytest.raises(InventoryError, match=r"--only: unknown stack\(s\) nope \(known: db, web\)"):
        load_desired_state(inventory, only=["nope", "db"])


def test_config_hash_follows_every_byte_of_the_stack_folder(tmp_path):
    assert config_hash("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    one = load_desired_state(write_tree(tmp_path / "a", INVENTORY, {"web": WEB_V1, "db": DB})).stacks["web"]
    again = load_desired_state(write_tree(tmp_path / "b", INVENTORY, {"web": WEB_V1, "db": DB})).stacks["web"]
    other = load_desired_state(write_tree(tmp_path / "c", INVENTORY, {"web": WEB_V1 + "\n", "db": DB})).stacks["web"]
    assert one.config_hash == again.config_hash != other.config_hash


def test_ref_deploys_the_files_as_committed(repo):
    root, inventory = repo
    (inventory.parent / "stacks" / "web" / "compose.yaml").write_text(WEB_V2)  # uncommitted change
    head = git(root, "rev-parse", "HEAD")

    at_ref = load_desired_state(inventory, "v1")
    assert at_ref.commit == head
    assert at_ref.source == "deploy/homelab.yaml@v1"
    assert at_ref.stacks["web"].files.get("compose.yaml").data == WEB_V1.encode()
    assert at_ref.stacks["web"].images == {"web": "nginx:1.26"}

    worktree = load_desired_state(inventory)
    assert worktree.commit == f"{head}+dirty"
    assert worktree.stacks["web"].files.get("compose.yaml").data == WEB_V2.encode()
    assert worktree.stacks["web"].config_hash != at_ref.stacks["web"].config_hash
    assert worktree.stacks["web"].images == {"web": "nginx:1.27"}


def test_clean_worktree_commit_has_no_dirty_suffix(repo):
    root, inventory = repo
    assert load_desired_state(inventory).commit == git(root, "rev-parse", "HEAD")


def test_ref_sees_a_later_commit_only_at_that_ref(repo):
    root, inventory = repo
    (inventory.parent / "stacks" / "web" / "compose.yaml").write_text(WEB_V2)
    git(root, "commit", "-q", "-am", "v2")
    git(root, "tag", "v2")
    assert load_desired_state(inventory, "v1").stacks["web"].images == {"web": "nginx:1.26"}
    assert load_desired_state(inventory, "v2").stacks["web"].images == {"web": "nginx:1.27"}
    assert load_desired_state(inventory, "HEAD~1").commit == git(root, "rev-parse", "v1")


def test_ref_ignores_files_that_exist_only_in_the_worktree(repo):
    _, inventory = repo
    text = inventory.read_text().replace("hosts: [beta]", "hosts: [beta]\n      cache:\n        hosts: [alpha]")
    write_tree(inventory.parent, text, {"cache": "services:\n  c:\n    image: redis:7\n"})
    assert "cache" in load_desired_state(inventory).stacks
    assert "cache" not in load_desired_state(inventory, "v1").stacks


@pytest.mark.parametrize("ref", ["no-such-tag", "deadbeefdeadbeef", "v1..v2"])
def test_unknown_ref_is_an_inventory_error_naming_the_ref(repo, ref):
    _, inventory = repo
    with pytest.raises(InventoryError) as caught:
        load_desired_state(inventory, ref)
    assert isinstance(caught.value, SourceError)
    assert f"--ref {ref}" in str(caught.value)


def test_ref_outside_a_git_repository(tmp_path):
    inventory = write_tree(tmp_path / "plain", INVENTORY, {"web": WEB_V1, "db": DB})
    with pytest.raises(InventoryError, match=r"--ref v1: .* is not inside a git repository"):
        load_desired_state(inventory, "v1")


def test_problems_at_a_ref_name_the_file_at_that_ref(repo):
    root, inventory = repo
    broken = "services:\n  web:\n    restart: always\n"
    (inventory.parent / "stacks" / "web" / "compose.yaml").write_text(broken)
    git(root, "commit", "-q", "-am", "broken")
    git(root, "tag", "broken")
    with pytest.raises(InventoryError) as caught:
        load_desired_state(inventory, "broken")
    assert caught.value.problems == [
        f"stacks/web/compose.yaml@broken:{line_of(broken, 'web:')}: services.web.image: every service needs an "
        "image (build images in CI and reference them here)"]


def test_inventory_problems_at_a_ref_name_the_inventory_at_that_ref(repo):
    root, inventory = repo
    inventory.write_text(inventory.read_text() + "colour: blue\n")
    git(root, "commit", "-q", "-am", "typo")
    git(root, "tag", "typo")
    with pytest.raises(InventoryError) as caught:
        load_desired_state(inventory, "typo")
    line = line_of(inventory.read_text(), "colour:")
    assert caught.value.problems == [f"deploy/homelab.yaml@typo:{line}: colour: unknown key"]
