"""Fixtures for the unit tests. Nothing here touches the network, SSH, Prefect or root-only things."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = Path(__file__).resolve().parent
# The packages (plain `pytest`, not only `python -m pytest`) and `unitsupport`, whatever the import mode.
for entry in (UNIT_DIR, REPO_ROOT):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))


@pytest.fixture
def fake_bin(tmp_path: Path):
    """``fake_bin(name, script)`` puts an executable sh script on a private PATH; returns the env."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")

    def install(name: str, script: str) -> dict[str, str]:
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n" + textwrap.dedent(script).lstrip())
        exe.chmod(0o755)
        return env

    install.env = env  # type: ignore[attr-defined]
    return install


@pytest.fixture(autouse=True)
def no_trust_file(tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit inventories name made-up hosts: no trust file applies unless a test writes one."""
    monkeypatch.setenv("HOMELAB_TRUST_FILE", str(tmp_path_factory.getbasetemp() / "no-trust.yaml"))
    monkeypatch.delenv("HOMELAB_REQUIRE_TRUST", raising=False)
