"""Helpers shared by the unit tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tasks.host_commands.gpu import Gpu

DATA = Path(__file__).parent / "data"

MINIMAL_COMPOSE = "services:\n  web:\n    image: nginx:1.27\n"

# One host, one phase, one stack `web`; tests append keys of the stack (8 spaces deep).
ONE_STACK_INVENTORY = """
hosts:
  alpha:
    address: 10.0.0.1
phases:
  base:
    stacks:
      web:
        hosts: [alpha]
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line that contains ``needle``."""
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} time(s) in the test input"
    return hits[occurrence - 1]


def write_tree(root: Path, inventory: str, stacks: dict[str, str] | None = None,
               name: str = "homelab.yaml") -> Path:
    """Write an inventory and ``stacks/<name>/compose.yaml`` files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(dedent(inventory))
    for stack, compose in (stacks or {}).items():
        compose_file = root / "stacks" / stack / "compose.yaml"
        compose_file.parent.mkdir(parents=True, exist_ok=True)
        compose_file.write_text(compose)
    return path


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
         "-c", "init.defaultBranch=main", *args],
        capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_gpu(index: int, name: str, total_mb: int, used_mb: int, utilization_pct: int) -> Gpu:
    """A parsed GPU, in nvidia-smi's column order."""
    return Gpu(index=index, name=name, memory_total_mb=total_mb, memory_used_mb=used_mb,
               utilization_pct=utilization_pct)
