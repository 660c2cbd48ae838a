"""Every YAML we did not write goes through ``load_with_lines``: alias bombs and cycles are
refused quickly, at the alias's line; ordinary anchors and merge keys keep working."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from unitsupport import MINIMAL_COMPOSE, ONE_STACK_INVENTORY, git, line_of, write_tree

from model.adoption import referenced_files
from model.desired import load_desired_state
from model.errors import InventoryError
from model.inventory_loader import load_inventory
from model.yamlpos import ALIAS_BUDGET, MAX_DEPTH, YamlSyntaxError, load_with_lines

ROOT = Path(__file__).resolve().parents[2]


def bomb(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """The "billion laughs": ``width ** levels`` values from a few hundred bytes."""
    names = "abcdefghij"
    rows = [f'{indent}a: &a [{",".join(["lol"] * width)}]']
    rows += [f'{indent}{names[n]}: &{names[n]} [{",".join([f"*{names[n - 1]}"] * width)}]' for n in range(1, levels)]
    return "\n".join(rows) + "\n"


def test_the_billion_laughs_is_refused_in_well_under_a_second():
    text = bomb()
    assert len(text) < 400
    started = time.monotonic()
    with pytest.raises(YamlSyntaxError) as caught:
        load_with_lines(text)
    assert time.monotonic() - started < 1.0  # a guard only: it takes milliseconds
    assert f"expands to more than {ALIAS_BUDGET:,} values" in str(caught.value)
    assert "alias *" in str(caught.value)
    assert 1 < caught.value.line <= 9  # a line with aliases, not the anchor of plain values


def test_a_bomb_through_a_merge_key_is_refused_at_the_merge():
    levels = [", ".join(f"k{i}: {f'*l{n - 1}' if n else 'lol'}" for i in range(10)) for n in range(4)]
    text = "".join(f"l{n}: &l{n} {{{keys}}}\n" for n, keys in enumerate(levels))  # l3 holds 11,111 values
    text += "top:\n  <<: *l3\n"
    with pytest.raises(YamlSyntaxError, match="alias \\*l3 expands to more than") as caught:
        load_with_lines(text)
    assert caught.value.line == line_of(text, "<<: *l3")


@pytest.mark.parametrize(("text", "alias_line"), [
    ("a: &a [*a]\n", 1),
    ("x: 1\na: &a\n  b:\n    - 1\n    - {c: *a}\n", 5),
    ("- &top\n  - one\n  - *top\n", 3),
    ("base: &b\n  x: 1\n  <<: *b\n", 3),
])
def test_an_alias_inside_its_own_block_is_refused_at_its_line(text, alias_line):
    with pytest.raises(YamlSyntaxError) as caught:
        load_with_lines(text)
    assert caught.value.line == alias_line
    assert "names the block that contains it (a cycle)" in str(caught.value)


def test_anchors_and_merge_keys_used_a_hundred_times_still_load():
    common = ("x-common: &common\n  restart: unless-stopped\n  environment: &env\n"
              + "".join(f"    V{i}: '{i}'\n" for i in range(40))
              + "  logging:\n    driver: json-file\n    options: {max-size: 10m}\n")
    services = "services:\n" + "".join(
        f"  s{i}:\n    <<: *common\n    image: img{i}\n    environment:\n      <<: *env\n      X: y\n"
        for i in range(100))
    started = time.monotonic()
    doc = load_with_lines(common + services)
    assert time.monotonic() - started < 2.0
    s5 = doc.data["services"]["s5"]
    assert (s5["restart"], s5["image"], s5["environment"]["V3"], s5["environment"]["X"]) == \
        ("unless-stopped", "img5", "3", "y")
    assert s5["logging"] == {"driver": "json-file", "options": {"max-size": "10m"}}
    assert doc.line_of(("services", "s5", "image")) == line_of(common + services, "image: img5")
    assert not doc.duplicates


def test_each_use_of_an_alias_is_its_own_value():
    doc = load_with_lines("a: &a {x: [1]}\nb: *a\n")
    assert doc.data == {"a": {"x": [1]}, "b": {"x": [1]}}
    assert doc.data["a"] is not doc.data["b"]


@pytest.mark.parametrize(("text", "message"), [
    ("a: !foo bar\n", "could not determine a constructor for the tag '!foo'"),
    ("a: !!int x\n", "invalid YAML"),
    ("k:\n" + "".join("  " * n + "- \n" for n in range(1, MAX_DEPTH + 5)), f"nested deeper than {MAX_DEPTH}"),
])
def test_other_bad_input_is_a_yaml_error_not_a_traceback(text, message):
    with pytest.raises(YamlSyntaxError, match=message):
        load_with_lines(text)


def test_an_inventory_bomb_is_an_inventory_error_with_file_and_line(tmp_path):
    text = "hosts:\n" + bomb(indent="  ") + "phases: {}\n"
    path = tmp_path / "homelab.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{path}:"), problem
    assert "expands to more than" in problem


def test_a_compose_bomb_is_refused_with_the_compose_file_and_line(tmp_path):
    compose = MINIMAL_COMPOSE + "x-laughs:\n" + bomb(indent="  ")
    inventory = write_tree(tmp_path, ONE_STACK_INVENTORY, {"web": compose})
    with pytest.raises(InventoryError) as caught:
        load_desired_state(inventory)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{tmp_path}/stacks/web/compose.yaml:"), problem
    assert "expands to more than" in problem


def test_a_compose_bomb_at_a_ref_names_the_file_at_that_ref(tmp_path):
    root = tmp_path / "repo"
    compose = MINIMAL_COMPOSE + "x-cycle: &c [*c]\n"
    inventory = write_tree(root, ONE_STACK_INVENTORY, {"web": compose})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bomb")
    git(root, "tag", "v1")
    with pytest.raises(InventoryError) as caught:
        load_desired_state(inventory, ref="v1")
    assert caught.value.problems == [
        f"stacks/web/compose.yaml@v1:{line_of(compose, '*c')}: invalid YAML: alias *c names the block that "
        "contains it (a cycle); an alias must name a complete block written before it"]


def test_adoption_reads_nothing_from_a_bomb():
    assert referenced_files("services:\n  a:\n    volumes: [./x:/x]\n" + bomb()) == ([], [])
    assert referenced_files("services:\n  a:\n    volumes: [./x:/x]\n") == (["x"], [])


def test_homelab_plan_refuses_a_bomb_with_exit_2_before_contacting_anything(tmp_path):
    text = "hosts:\n" + bomb(levels=5, width=10, indent="  ") + "phases: {}\n"
    path = tmp_path / "homelab.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "deployments.cli", "plan", "-i", str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "HOMELAB_HOME": str(tmp_path / "home"),
                               "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert done.returncode == 2, done.stderr
    assert f"{path}:6: invalid YAML: alias *d expands to more than" in done.stderr
    assert "Traceback" not in done.stderr
