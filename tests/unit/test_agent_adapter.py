"""The DeploymentOrchestratorAgent without a lab: it subclasses J-Jeco's BaseAgent when a
package provides one (a fake ``agents.base_agent`` on the path), else the stand-in; refs are
checked before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.agent import check_ref
from model.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_subclasses_jjecos_base_agent_when_it_is_there(tmp_path: Path) -> None:
    package = tmp_path / "agents"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base_agent.py").write_text(
        "class BaseAgent:\n"
        "    def __init__(self, model, temperature, role):\n"
        "        self.model, self.temperature, self.role = model, temperature, role\n"
        "        self.registered = True\n")
    probe = ("from deployments.agent import DeploymentOrchestratorAgent as A; from agents.base_agent import BaseAgent; "
             "a = A(model='llama3', temperature=0.2); "
             "print(issubclass(A, BaseAgent), a.registered, a.model, a.temperature, a.role)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert done.stdout.split() == ["True", "True", "llama3", "0.2", "deployment_orchestrator"], done.stderr
    alone = subprocess.run([sys.executable, "-c", "from deployments.agent import DeploymentOrchestratorAgent as A, "
                            "StandaloneAgent; print(issubclass(A, StandaloneAgent))"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert alone.stdout.strip() == "True", alone.stderr


@pytest.mark.parametrize("ref", ["3f2c1a9b", "v1.1", "main", "release/2026-12", "a" * 40])
def test_refs_a_deploy_may_name(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", "--upload-pack=x", "v1 v2", "a..b", "x\ny", None, "-v"])
def test_refs_refused_before_any_run_is_created(ref: object) -> None:
    with pytest.raises(UsageError, match="commit_hash must be"):
        check_ref(ref)  # type: ignore[arg-type]
