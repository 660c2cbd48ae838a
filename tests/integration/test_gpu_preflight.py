"""GPU-aware pre-flight against the lab's simulated nvidia-smi on rtx1080: a GPU stack that
cannot fit is refused before anything changes, naming what uses the card; once the card is
idle the same deploy goes through, with its compose device reservation (the lab's podman
accepts and ignores DeviceRequests; Docker with the NVIDIA toolkit honours them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lab import manager
from model.errors import PreflightFailed
from model.gpu_reservation import GPU_OVERRIDE
from tests.integration.deploying import container_ids, current_release, deploy, lab_checkout, on_host

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_api")]

STATE = "/usr/local/sbin/nvidia-smi.state.json"  # read by the lab's nvidia-smi, beside it on rtx1080's tmpfs
BUSY = {"gpu": {"memory.used": "7900", "utilization.gpu": "97"},
        "apps": [{"pid": "4242", "process_name": "ollama", "used_memory": "7890"}]}


def gpu_lab(clean_lab: Path, tmp_path: Path, need: dict, host: str = "rtx1080") -> Path:
    """The lab repo at v1 with jjeco-heavy declaring ``gpu: need`` and placed on ``host``."""
    inventory = lab_checkout(clean_lab, tmp_path, "v1")
    data = yaml.safe_load(inventory.read_text())
    heavy = data["phases"]["ai"]["stacks"]["jjeco-heavy"]
    heavy["gpu"] = need
    heavy["hosts"] = [host]
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


@pytest.fixture
def busy_card():
    done = manager.exec_on("rtx1080", ["sh", "-c", f"cat > {STATE}"], input=json.dumps(BUSY).encode())
    assert done.returncode == 0, done.stderr
    yield
    manager.exec_on("rtx1080", ["rm", "-f", STATE])


def nvidia_smi(*args: str) -> str:
    done = manager.exec_on("rtx1080", ["nvidia-smi", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


async def test_a_gpu_stack_that_cannot_fit_is_refused_before_any_change(
        clean_lab: Path, tmp_path: Path, busy_card) -> None:
    assert "ollama" in nvidia_smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv")
    inventory = gpu_lab(clean_lab, tmp_path, {"count": 1, "memory_mb": 4000})
    before = container_ids()
    state, error = await deploy(inventory)
    assert state.is_failed() and isinstance(error, PreflightFailed), error
    assert list(error.failures) == ["rtx1080"]
    reason = " ".join(error.failures["rtx1080"])
    assert "jjeco-heavy needs 4000 MiB free" in reason, reason
    assert "GTX 1080" in reason and "pid 4242 ollama" in reason, reason
    assert container_ids() == before

    # the card freed: the same deploy passes pre-flight and puts jjeco-heavy on rtx1080
    manager.exec_on("rtx1080", ["rm", "-f", STATE])
    state, report = await deploy(inventory)
    assert state.is_completed(), report
    assert ("rtx1080", "jjeco-heavy") in {(s["host"], s["stack"]) for s in report["stacks"]
                                          if s["result"] == "healthy"}
    # its release runs with the generated reservation, passed last
    release = current_release("rtx1080", "jjeco-heavy")
    record = json.loads(on_host("rtx1080", ["cat", f"/root/.homelab/releases/jjeco-heavy/{release}/release.json"]))
    assert record["compose_files"][-1] == GPU_OVERRIDE
    assert "driver: nvidia" in on_host("rtx1080", ["cat", f"/root/.homelab/stacks/jjeco-heavy/{GPU_OVERRIDE}"])


async def test_a_gpu_stack_placed_on_a_host_without_a_gpu_is_refused(clean_lab: Path, tmp_path: Path) -> None:
    inventory = gpu_lab(clean_lab, tmp_path, {"count": 1, "memory_mb": 1000}, host="vps")
    before = container_ids()
    state, error = await deploy(inventory)
    assert state.is_failed() and isinstance(error, PreflightFailed), error
    assert "jjeco-heavy" in " ".join(error.failures["vps"]) and "GPU" in " ".join(error.failures["vps"])
    assert container_ids() == before
