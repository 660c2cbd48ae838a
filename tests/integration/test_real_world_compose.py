"""Acceptance: compose files from public projects of the kind a homelab runs (Traefik,
Authentik, Immich, Nextcloud, Home Assistant, the Prometheus stack, ...) pass `homelab plan`
against the lab, or give a clear exit-2 error; none gives a traceback.

The files are unmodified upstream copies (see tests/data/real_world_compose/SOURCES.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from model.desired import load_desired_state
from model.errors import InventoryError

pytestmark = [pytest.mark.lab]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "real_world_compose"
SLUGS = sorted(p.name for p in CORPUS.iterdir() if (p / "compose.yaml").is_file()) if CORPUS.is_dir() else []
HOMELAB = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "homelab")


def adopt(lab_inventory: Path, root: Path, slugs: list[str]) -> Path:
    """A config repo with the lab's hosts and one stack per upstream file, all on vps."""
    lab = yaml.safe_load(lab_inventory.read_text())
    stacks = {}
    for slug in slugs:
        shutil.copytree(CORPUS / slug, root / "stacks" / slug)
        stacks[slug] = {"hosts": ["vps"]}
    inventory = {key: lab[key] for key in ("version", "name", "ssh", "defaults", "hosts")}
    inventory["phases"] = {"apps": {"stacks": stacks}}
    path = root / "homelab.yaml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def homelab_plan(inventory: Path, *only: str) -> subprocess.CompletedProcess[str]:
    argv = [HOMELAB, "plan", "--inventory", str(inventory), "--json"]
    for slug in only:
        argv += ["--only", slug]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_thirty_real_world_compose_files_plan_or_fail_clearly(lab_inventory: Path, tmp_path: Path) -> None:
    assert len(SLUGS) >= 30, f"expected 30 upstream compose files, found {len(SLUGS)}"
    passing, refused = [], {}
    for slug in SLUGS:
        inventory = adopt(lab_inventory, tmp_path / slug, [slug])
        try:
            load_desired_state(inventory)
            passing.append(slug)
        except InventoryError as exc:
            refused[slug] = exc.problems
    assert len(passing) >= 20, refused  # most upstream files are plain compose

    together = adopt(lab_inventory, tmp_path / "all", passing)
    done = homelab_plan(together)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = yaml.safe_load(done.stdout)  # JSON is YAML
    assert sorted(c["stack"] for c in plan["changes"]) == sorted(passing)
    assert {c["action"] for c in plan["changes"]} == {"create"}

    for slug, problems in refused.items():
        done = homelab_plan(tmp_path / slug / "homelab.yaml")
        assert done.returncode == 2, (slug, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (slug, done.stderr[-3000:])
        assert f"stacks/{slug}/" in done.stderr, (slug, done.stderr)  # names the file
        assert problems[0].split(": ", 1)[-1][:60] in done.stderr
