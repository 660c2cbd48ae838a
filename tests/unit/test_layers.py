"""The one-way house holds, and its contract can fail: an upward import breaks ``lint-imports``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"
HOUSE = ["model", "tasks", "flows", "blocks", "deployments", "lab"]

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed in this venv")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, check=False)


def copy_house(tmp_path: Path) -> Path:
    for name in HOUSE:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_house_keeps_every_contract():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "upward", "broken"), [
    ("tasks/host_commands/compose.py", "from tasks.engine.transport import SshTransport",
     "tasks.host_commands is not allowed to import tasks.engine"),
    ("model/desired.py", "from tasks.host_commands.layout import stack_dir",
     "model is not allowed to import tasks.host_commands"),
    ("tasks/engine/rollout.py", "from tasks.steps import PREFECT_STEPS",
     "tasks.engine is not allowed to import tasks.steps"),
    ("flows/deploy.py", "from deployments.cli.common import table",
     "flows is not allowed to import deployments"),
    ("deployments/server.py", "from lab import manager", "deployments.server -> lab.manager"),
    ("tasks/integrations/vault/client.py", "from tasks.integrations.proxmox.names import PREFIX",
     "tasks.integrations.vault is not allowed to import tasks.integrations.proxmox"),
], ids=["host-commands->engine", "model->host-commands", "engine->prefect-tasks", "flows->cli", "house->lab",
        "vault->proxmox"])
def test_an_upward_import_breaks_the_build(tmp_path: Path, module: str, upward: str, broken: str):
    root = copy_house(tmp_path)
    path = root / module
    path.write_text(path.read_text().replace("from __future__ import annotations\n",
                                             f"from __future__ import annotations\n\n{upward}  # noqa\n", 1))
    done = lint(root)
    assert done.returncode == 1, done.stdout
    assert broken in done.stdout
