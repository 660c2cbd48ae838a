"""A stack's file set and its hash: what ships, with which mode, and what is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from unitsupport import MINIMAL_COMPOSE, ONE_STACK_INVENTORY, write_tree

from model.desired import load_desired_state
from model.errors import InventoryError
from model.stack_files import StackFile, StackFiles, changed_paths, collect_stack_files, matches

INVENTORY = ONE_STACK_INVENTORY


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    for name, text in {"stacks/web/compose.yaml": MINIMAL_COMPOSE, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def collect(root: Path, **narrow) -> dict[str, str]:
    return collect_stack_files(root, root / "stacks" / "web", "stacks/web", **narrow).manifest()


def test_every_file_of_the_folder_ships_with_path_and_mode(tmp_path):
    root = folder(tmp_path, {"stacks/web/conf/app.yml": "a: 1\n", "stacks/web/run.sh": "#!/bin/sh\n",
                             "stacks/web/.env": "TAG=1\n", "stacks/other/compose.yaml": MINIMAL_COMPOSE})
    (root / "stacks/web/run.sh").chmod(0o775)
    (root / "stacks/web/conf/app.yml").chmod(0o664)  # a umask-002 checkout: same as git's 0644
    manifest = collect(root)
    assert sorted(manifest) == [".env", "compose.yaml", "conf/app.yml", "run.sh"]
    assert manifest["run.sh"].startswith("755:") and manifest["conf/app.yml"].startswith("644:")


def test_the_hash_changes_with_content_mode_and_path(tmp_path):
    base = collect(folder(tmp_path / "a", {"stacks/web/app.yml": "a: 1\n"}))
    assert collect(folder(tmp_path / "b", {"stacks/web/app.yml": "a: 1\n"})) == base
    content = collect(folder(tmp_path / "c", {"stacks/web/app.yml": "a: 2\n"}))
    renamed = collect(folder(tmp_path / "d", {"stacks/web/app2.yml": "a: 1\n"}))
    moded_root = folder(tmp_path / "e", {"stacks/web/app.yml": "a: 1\n"})
    (moded_root / "stacks/web/app.yml").chmod(0o755)
    moded = collect(moded_root)
    assert changed_paths(base, content) == {"app.yml"}
    assert changed_paths(base, renamed) == {"app.yml", "app2.yml"}
    assert changed_paths(base, moded) == {"app.yml"}
    hashes = {load_desired_state(write_tree(r, INVENTORY)).stacks["web"].config_hash
              for r in (tmp_path / "a/repo", tmp_path / "c/repo", tmp_path / "d/repo", tmp_path / "e/repo")}
    assert len(hashes) == 4


def test_homelabignore_and_exclude_drop_files_and_folders(tmp_path):
    root = folder(tmp_path, {
        "stacks/web/.homelabignore": "# comment\n\n*.swp\nnotes/\n/local.env\n",
        "stacks/web/app.yml.swp": "x", "stacks/web/conf/deep.swp": "x", "stacks/web/notes/a.md": "x",
        "stacks/web/local.env": "x", "stacks/web/conf/local.env": "kept: the pattern is anchored",
        "stacks/web/backup.tar": "x", "stacks/web/conf/app.yml": "x"})
    manifest = collect(root, exclude=["*.tar"])
    assert sorted(manifest) == ["compose.yaml", "conf/app.yml", "conf/local.env"]


def test_files_globs_keep_only_what_they_match(tmp_path):
    root = folder(tmp_path, {"stacks/web/conf/app.yml": "x", "stacks/web/data/big.bin": "x",
                             "stacks/web/README.md": "x"})
    assert sorted(collect(root, include=["compose.yaml", "conf/*"])) == ["compose.yaml", "conf/app.yml"]


def test_git_folders_never_ship(tmp_path):
    root = folder(tmp_path, {"stacks/web/.git/config": "x", "stacks/web/sub/.git/HEAD": "x"})
    assert sorted(collect(root)) == ["compose.yaml"]


def test_a_symlink_inside_the_repo_ships_as_the_file_it_names(tmp_path):
    root = folder(tmp_path, {"shared/ca.pem": "CERT\n"})
    (root / "stacks/web/ca.pem").symlink_to("../../shared/ca.pem")
    (root / "stacks/web/shared").symlink_to("../../shared", target_is_directory=True)
    files = collect_stack_files(root, root / "stacks/web", "stacks/web")
    assert files.get("ca.pem").data == b"CERT\n" and files.get("shared/ca.pem").data == b"CERT\n"


@pytest.mark.parametrize(("target", "message"), [
    ("/etc/passwd", "stacks/web/passwd: a symlink to /etc/passwd, outside the config repo"),
    ("../../../outside.txt", "stacks/web/passwd: a symlink to ../../../outside.txt, outside the config repo"),
    ("nowhere.txt", "stacks/web/passwd: a dangling symlink"),
])
def test_a_symlink_out_of_the_repo_is_refused(tmp_path, target, message):
    root = folder(tmp_path, {})
    (tmp_path / "outside.txt").write_text("secret")
    (root / "stacks/web/passwd").symlink_to(target)
    with pytest.raises(InventoryError) as caught:
        collect(root)
    assert message in str(caught.value)


def test_a_symlink_loop_is_an_error_not_a_hang(tmp_path):
    root = folder(tmp_path, {})
    (root / "stacks/web/loop").symlink_to(".", target_is_directory=True)
    with pytest.raises(InventoryError, match="nested too deep"):
        collect(root)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("dir", "../elsewhere", "escapes"),
    ("dir", "/etc", "relative path"),
    ("compose", "../../x.yaml", "escapes the stack folder"),
    ("compose", "[compose.yaml, /abs.yaml]", "relative path"),
    ("files", "['../*']", "escapes the stack folder"),
    ("exclude", "['a/../../b']", "escapes the stack folder"),
])
def test_paths_that_escape_are_refused_with_the_line(tmp_path, key, value, message):
    path = write_tree(tmp_path, INVENTORY + f"        {key}: {value}\n", {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_desired_state(path)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{path}:9: phases.base.stacks.web.{key}"), problem
    assert message in problem


def test_a_homelabignore_negation_is_refused_with_its_line(tmp_path):
    root = folder(tmp_path, {"stacks/web/.homelabignore": "*.log\n!keep.log\n"})
    with pytest.raises(InventoryError, match=r"stacks/web/\.homelabignore:2: negated patterns"):
        collect(root)


def test_excluding_a_compose_file_is_an_error(tmp_path):
    path = write_tree(tmp_path, INVENTORY + "        exclude: ['*.yaml']\n", {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError, match=r"compose\.yaml: the compose file is not shipped"):
        load_desired_state(path)


@pytest.mark.parametrize(("path", "pattern", "is_dir", "expected"), [
    ("a/b/c.swp", "*.swp", False, True),
    ("a/notes", "notes/", True, True),
    ("a/notes", "notes/", False, False),
    ("local.env", "/local.env", False, True),
    ("conf/local.env", "/local.env", False, False),
    ("conf/app.yml", "conf/*.yml", False, True),
])
def test_glob_rules(path, pattern, is_dir, expected):
    assert matches(path, pattern, is_dir) is expected


def test_the_tar_holds_exactly_the_files_asked_for_with_their_modes():
    files = StackFiles((StackFile("a.yml", 0o644, b"a"), StackFile("bin/run", 0o755, b"#!"),
                        StackFile("c.yml", 0o644, b"c")))
    data = files.tar(only=["bin/run"], extra={".env.secrets": (b"K=v\n", 0o600)})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: (m.mode, m.uid, m.mtime) for m in archive.getmembers()}
    assert members == {"files/bin/run": (0o755, 0, 0), ".env.secrets": (0o600, 0, 0)}
    assert files.tar() == files.tar()  # same content, same bytes
