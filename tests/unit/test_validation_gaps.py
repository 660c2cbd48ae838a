"""Input that would turn into something else on a host or on this machine is refused before
anything is contacted: names with a trailing line break, operands that read as options
(``-x``), and stack files that reach outside the config repo (also at a ``--ref``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from unitsupport import MINIMAL_COMPOSE, ONE_STACK_INVENTORY, dedent, git, line_of, write_tree

from model.desired import load_desired_state
from model.errors import InventoryError, SourceError
from model.inventory_loader import load_inventory


@pytest.fixture(autouse=True)
def own_compose_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return caught.value.problems


HOSTS_AND_PHASES = """
hosts:
  {host}:
    address: 10.0.0.1
phases:
  {phase}:
    stacks:
      {stack}:
        hosts: [alpha]
"""


@pytest.mark.parametrize("bad", [r'"web\n"', '"-x"', '"web\\nrm -rf /"'])
@pytest.mark.parametrize("kind", ["host", "phase", "stack"])
def test_names_with_a_line_break_or_a_leading_dash_are_refused(tmp_path, kind, bad):
    names = {"host": "alpha", "phase": "base", "stack": "web", kind: bad}
    text = dedent(HOSTS_AND_PHASES.format(**names))
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    found = [p for p in problems_of(path) if f"{kind} name" in p]
    assert found, problems_of(path)
    assert found[0].startswith(f"{path}:{line_of(text, bad)}:"), found[0]
    assert "must match" in found[0]


@pytest.mark.parametrize("extra", [
    '        env: {"A\\n": "1"}\n',
    '        secrets:\n          - {path: apps/web, keys: ["TOKEN\\n"]}\n',
])
def test_environment_names_with_a_trailing_line_break_are_refused(tmp_path, extra):
    path = write_tree(tmp_path, ONE_STACK_INVENTORY + extra, {"web": MINIMAL_COMPOSE})
    (problem,) = problems_of(path)
    assert "not environment variable names" in problem


@pytest.mark.parametrize(("section", "value", "message"), [
    ("defaults", '"-x"', "starts with `-`"),
    ("host", '"-rf"', "starts with `-`"),
    ("host", '"state\\nrm"', "control character"),
    ("host", '" "', "must not be empty"),
    ("stack", '"--help"', "starts with `-`"),
])
def test_host_paths_that_would_read_as_options_are_refused(tmp_path, section, value, message):
    key = "project_dir" if section == "stack" else "state_dir"
    text = dedent(ONE_STACK_INVENTORY)
    if section == "defaults":
        text = f"defaults:\n  state_dir: {value}\n" + text
    elif section == "host":
        text = text.replace("    address: 10.0.0.1\n", f"    address: 10.0.0.1\n    state_dir: {value}\n")
    else:
        text += f"        project_dir: {value}\n"
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(text, key)}:"), problem
    assert key in problem and message in problem


def without_docker(tmp_path: Path, monkeypatch) -> None:
    only_git = tmp_path / "bin"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(only_git))


@pytest.mark.parametrize("docker", [
    pytest.param(True, marks=pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI here")),
    False])
@pytest.mark.parametrize(("compose", "message"), [
    ("services:\n  web:\n    image: -x\n", "image '-x' starts with `-`"),
    ('services:\n  web:\n    image: "nginx:1 --privileged"\n', "contains a space"),
    ('services:\n  "-x":\n    image: nginx:1\n', "service name '-x' starts with `-`"),
])
def test_images_and_services_that_would_read_as_options_are_refused(tmp_path, monkeypatch, docker, compose,
                                                                      message):
    if not docker:
        without_docker(tmp_path, monkeypatch)
    path = write_tree(tmp_path, ONE_STACK_INVENTORY, {"web": compose})
    with pytest.raises(InventoryError) as caught:
        load_desired_state(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path}/stacks/web/compose.yaml:2: services."), problem
    assert message in problem


@pytest.mark.parametrize("compose", ["/etc/passwd", "../../../etc/passwd", "[compose.yaml, ../../x.yaml]"])
def test_absolute_and_dotdot_compose_paths_are_refused(tmp_path, compose):
    text = dedent(ONE_STACK_INVENTORY) + f"        compose: {compose}\n"
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_desired_state(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:{line_of(text, 'compose:')}: phases.base.stacks.web.compose"), problem


def test_a_compose_file_symlinked_out_of_the_repo_is_refused(tmp_path):
    secret = tmp_path / "outside.yaml"
    secret.write_text(MINIMAL_COMPOSE)
    root = tmp_path / "repo"
    path = write_tree(root, ONE_STACK_INVENTORY, {"web": MINIMAL_COMPOSE})
    (root / "stacks/web/compose.yaml").unlink()
    (root / "stacks/web/compose.yaml").symlink_to(secret)
    with pytest.raises(InventoryError) as caught:
        load_desired_state(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{root}/stacks/web/compose.yaml: a symlink to {secret}, outside the config repo")


def committed(tmp_path: Path, links: dict[str, str]) -> Path:
    """A git repo with the inventory in ``deploy/`` and symlinks (path -> target) under it, tagged v1."""
    root = tmp_path / "repo"
    inventory = write_tree(root / "deploy", ONE_STACK_INVENTORY, {"web": MINIMAL_COMPOSE})
    (root / "deploy/shared.pem").write_text("pem\n")
    for link, target in links.items():
        (root / "deploy" / link).symlink_to(target)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    git(root, "tag", "v1")
    return inventory


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../outside.txt", "../../../../../../etc/passwd"])
def test_a_symlink_out_of_the_repo_at_a_ref_is_refused_naming_it(tmp_path, target):
    inventory = committed(tmp_path, {"stacks/web/passwd": target})
    with pytest.raises(SourceError) as caught:
        load_desired_state(inventory, ref="v1")
    assert caught.value.problems == [
        f"stacks/web/passwd@v1: a symlink to {target}, outside the config repo (copy the file into the repo, "
        "or link to a file inside it)"]


def test_a_compose_file_symlinked_out_of_the_repo_at_a_ref_is_refused(tmp_path):
    inventory = committed(tmp_path, {})
    root = inventory.parent.parent
    (root / "deploy/stacks/web/compose.yaml").unlink()
    (root / "deploy/stacks/web/compose.yaml").symlink_to("/etc/hostname")
    git(root, "commit", "-q", "-am", "v2")
    git(root, "tag", "v2")
    with pytest.raises(InventoryError, match=r"^invalid desired state:\n  stacks/web/compose.yaml@v2: a symlink to "
                                             "/etc/hostname, outside the config repo"):
        load_desired_state(inventory, ref="v2")


def test_a_symlink_inside_the_repo_at_a_ref_still_ships(tmp_path):
    inventory = committed(tmp_path, {"stacks/web/ca.pem": "../../shared.pem"})
    desired = load_desired_state(inventory, ref="v1")
    assert desired.stacks["web"].files.get("ca.pem").data == b"pem\n"
