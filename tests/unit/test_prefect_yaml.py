"""prefect.yaml points at flows that exist, with parameters they accept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_entrypoint_and_parameter_exists() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = [d["name"] for d in config["deployments"]]
    assert names == ["deploy", "nightly", "rollback", "secrets-sync"]
    for deployment in config["deployments"]:
        module, _, attr = deployment["entrypoint"].partition(":")
        assert (ROOT / module).is_file()
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), attr)
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment["parameters"]) <= accepted
        assert deployment["concurrency_limit"] == 1
    nightly = config["deployments"][1]
    assert nightly["schedules"][0]["cron"] == "30 3 * * *"
