"""GPU pre-flight judged from a survey: a GPU stack that cannot fit its host is refused with the
cards' free memory and what uses it; GPU stacks of one host take turns."""

from __future__ import annotations

import asyncio

import pytest

from model.inventory import GpuNeed
from tasks.engine.gpu_fit import GpuPlacement, gpu_problems, gpu_turn
from tasks.host_commands.gpu import Gpu, GpuProcess
from tasks.host_commands.survey import HostSurvey

GTX = Gpu(index=0, name="NVIDIA GeForce GTX 1080", memory_total_mb=8192, memory_used_mb=1024, utilization_pct=3,
          uuid="GPU-1")
FULL = Gpu(index=0, name="NVIDIA GeForce GTX 1080", memory_total_mb=8192, memory_used_mb=7900, utilization_pct=97,
           uuid="GPU-1")
OLLAMA = GpuProcess(gpu_uuid="GPU-1", pid=4242, name="/usr/bin/ollama", used_memory_mb=6900)


def survey(*gpus: Gpu, processes: tuple[GpuProcess, ...] = (), error: str | None = None) -> HostSurvey:
    return HostSurvey(engine_ok=True, engine_error=None, disk_free_mb=10_000, disk_error=None, releases={},
                      broken_releases={}, containers=(), gpus=gpus, gpu_error=error, gpu_processes=processes)


def new(stack: str, count: int = 1, memory_mb: int = 0) -> GpuPlacement:
    return GpuPlacement(stack, GpuNeed(count=count, memory_mb=memory_mb), running=False)


def running(stack: str, count: int = 1, memory_mb: int = 0) -> GpuPlacement:
    return GpuPlacement(stack, GpuNeed(count=count, memory_mb=memory_mb), running=True)


@pytest.mark.parametrize(("facts", "wanted", "expected"), [
    (survey(GTX), [new("llm", memory_mb=4000)], []),
    (survey(GTX), [], []),
    (survey(), [new("llm")], ["llm need(s) a GPU, but this host has none"]),
    (survey(error="nvidia-smi: not found"), [new("llm")], ["llm need(s) a GPU, but nvidia-smi failed: nvidia-smi"]),
    (survey(GTX), [new("llm", count=2)], ["llm needs 2 GPUs, the host has 1"]),
    (survey(GTX), [new("llm", memory_mb=16000)], ["llm needs 16000 MiB on 1 GPU(s), more than the card(s) have"]),
    (survey(FULL, processes=(OLLAMA,)), [new("llm", memory_mb=4000)],
     ["llm needs 4000 MiB free on 1 GPU(s): GPU 0 NVIDIA GeForce GTX 1080: 292 of 8192 MiB free; "
      "in use by pid 4242 /usr/bin/ollama (6900 MiB)"]),
    (survey(FULL), [new("llm", memory_mb=4000)], ["llm needs 4000 MiB free", "lists no compute process"]),
    # an update of a running stack frees its own memory: it only has to fit the card
    (survey(FULL, processes=(OLLAMA,)), [running("llm", memory_mb=6000)], []),
    (survey(GTX), [new("llm", memory_mb=4000), new("sd", memory_mb=4000)],
     ["llm, sd together need 8000 MiB of GPU memory, 7168 MiB is free"]),
])
def test_gpu_problems(facts: HostSurvey, wanted: list[GpuPlacement], expected: list[str]) -> None:
    problems = gpu_problems(facts, wanted)
    if not expected:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        for part in expected:
            assert part in problems[0], problems[0]


async def test_gpu_stacks_of_one_host_take_turns_and_others_do_not_wait() -> None:
    needs = {"llm": GpuNeed(), "sd": GpuNeed(), "web": None}
    lock = asyncio.Lock()
    inside: set[str] = set()
    overlaps: list[set[str]] = []

    async def deploy(stack: str) -> None:
        async with gpu_turn(needs[stack], lock):
            inside.add(stack)
            overlaps.append(set(inside))
            await asyncio.sleep(0.05)
            inside.discard(stack)

    await asyncio.gather(deploy("llm"), deploy("sd"), deploy("web"))
    assert not any({"llm", "sd"} <= seen for seen in overlaps), overlaps
    assert any("web" in seen and len(seen) > 1 for seen in overlaps), overlaps  # non-GPU stacks run alongside
