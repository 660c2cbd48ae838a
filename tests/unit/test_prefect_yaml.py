"""prefect.yaml points at flows that exist, with parameters they accept, and says the same as
the deployments ``homelab serve`` registers from code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_every_deployment_entrypoint_and_parameter_exists() -> None:
    config = load()
    names = [d["name"] for d in config["deployments"]]
    assert names == ["deploy", "nightly", "rollback", "secrets-sync"]
    for deployment in config["deployments"]:
        module, _, attr = deployment["entrypoint"].partition(":")
        assert (ROOT / module).is_file()
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), attr)
        accepted = set(inspect.signature(flow.fn).parameters)
        assert "inventory" not in accepted  # pinned by the worker's environment, never a parameter
        assert set(deployment.get("parameters", {})) <= accepted
        assert deployment["concurrency_limit"] == 1
        assert "HOMELAB_SERVED_INVENTORY" in deployment["work_pool"]["job_variables"]["env"]


async def test_prefect_yaml_and_homelab_serve_register_the_same_deployments() -> None:
    from deployments.control import served_deployments

    from_code = {d.name: d for d in await served_deployments()}
    for deployment in load()["deployments"]:
        served = from_code[deployment["name"]]
        assert served.entrypoint.endswith(deployment["entrypoint"]), served.entrypoint
        assert (served.parameters or {}) == deployment.get("parameters", {})
        assert [(s.schedule.cron, s.schedule.timezone) for s in served.schedules or []] == [
            (s["cron"], s["timezone"]) for s in deployment.get("schedules", [])]
        assert served.concurrency_limit == deployment["concurrency_limit"]
