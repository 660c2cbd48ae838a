"""The orchestrator's code identity: the package version plus a digest of its source. A worker
runs the host's steps with its own copy of the code, so both ends must be the same code, not
just the same release number (a hot-fixed checkout differs in the digest)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "tasks", "flows", "blocks", "deployments")


def source_files(root: Path = ROOT) -> list[Path]:
    """What a worker's copy must hold: the packages' Python files and the project file."""
    files = [p for package in PACKAGES for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted([*files, root / "pyproject.toml"])


@functools.cache
def code_version(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{_package_version(root)}+{digest.hexdigest()[:12]}"


def _package_version(root: Path) -> str:
    for line in (root / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0"
