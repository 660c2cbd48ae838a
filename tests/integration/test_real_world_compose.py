"""Compose files of the kind a homelab runs (Traefik, Authentik, a photo library, Nextcloud,
Home Assistant, the Prometheus stack, ...) pass `homelab plan` against the lab, or give a
clear exit-2 error; none gives a traceback.

The committed corpus (tests/data/compose_shapes) is written for these tests in the shapes
those projects use. Point HOMELAB_COMPOSE_CORPUS at a folder of upstream files (one
`<slug>/compose.yaml` each, with whatever sits beside it) to run the same check on them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from model.desired import load_desired_state
from model.errors import InventoryError

pytestmark = [pytest.mark.lab]

SHAPES = Path(__file__).resolve().parents[1] / "data" / "compose_shapes"
CORPUS = Path(os.environ.get("HOMELAB_COMPOSE_CORPUS") or SHAPES)
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


def test_real_world_compose_files_plan_or_fail_clearly(clean_lab: Path, tmp_path: Path) -> None:
    assert SLUGS, f"no <slug>/compose.yaml under {CORPUS}"
    passing, refused = [], {}
    for slug in SLUGS:
        inventory = adopt(clean_lab, tmp_path / slug, [slug])
        try:
            load_desired_state(inventory)
            passing.append(slug)
        except InventoryError as exc:
            refused[slug] = exc.problems
    if CORPUS == SHAPES:  # the two made wrong on purpose, and only those
        assert sorted(refused) == ["build-only", "needs-secret-var"], refused
        assert "never builds on a host" in refused["build-only"][0]
        assert "required variable APP_VERSION is missing a value" in refused["needs-secret-var"][0]
    print(f"{len(passing)} plan, {len(refused)} refused with exit 2: " + "; ".join(
        f"{slug}: {problems[0]}" for slug, problems in refused.items()))

    together = adopt(clean_lab, tmp_path / "all", passing)
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
        assert problems[0].split(": ", 1)[0] in done.stderr  # the same file (and line) as in-process
