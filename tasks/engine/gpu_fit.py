"""GPU-aware pre-flight and placement: does each GPU stack fit its host's cards, and one GPU
stack at a time per host (two model servers loading at once can run a card out of memory).

Judged from the survey, before any change. A stack that already runs on the host holds its
memory now, and frees it when it is replaced, so it only has to fit the card (count, total
memory). A new stack needs ``memory_mb`` free on ``count`` cards now, and the new stacks of one
host together must fit what is free.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from model.desired import DesiredState
from model.inventory import GpuNeed
from tasks.host_commands.gpu import Gpu, GpuProcess
from tasks.host_commands.survey import HostSurvey


@dataclass(frozen=True)
class GpuPlacement:
    stack: str
    need: GpuNeed
    running: bool  # the host runs a release of it now


def gpu_need(desired: DesiredState, stack: str) -> GpuNeed | None:
    return desired.inventory.stack(stack).gpu


def host_needs_gpu_query(desired: DesiredState, host: str) -> bool:
    """Survey the GPUs: a GPU host, or a host that a GPU stack is placed on."""
    return desired.inventory.hosts[host].gpu or any(
        host in s.hosts and gpu_need(desired, s.name) for s in desired.stacks.values())


def placements(desired: DesiredState, host: str, facts: HostSurvey) -> list[GpuPlacement]:
    return [GpuPlacement(s.name, need, s.name in facts.releases) for s in desired.stacks.values()
            if host in s.hosts and (need := gpu_need(desired, s.name))]


def _cards(gpus: Iterable[Gpu]) -> str:
    return "; ".join(f"GPU {g.index} {g.name}: {g.memory_free_mb} of {g.memory_total_mb} MiB free" for g in gpus)


def _users(processes: Iterable[GpuProcess]) -> str:
    shown = sorted(processes, key=lambda p: -p.used_memory_mb)[:5]
    if not shown:
        return "nvidia-smi lists no compute process (the memory is held outside this host's view, or by the driver)"
    return "in use by " + ", ".join(f"pid {p.pid} {p.name} ({p.used_memory_mb} MiB)" for p in shown)


def gpu_problems(facts: HostSurvey, wanted: list[GpuPlacement]) -> list[str]:
    """Why the GPU stacks cannot run on this host; empty when they fit."""
    if not wanted:
        return []
    names = ", ".join(p.stack for p in wanted)
    if facts.gpu_error:
        return [f"{names} need(s) a GPU, but nvidia-smi failed: {facts.gpu_error}"]
    if not facts.gpus:
        return [f"{names} need(s) a GPU, but this host has none (nvidia-smi lists no GPU)"]
    problems = []
    for p in wanted:
        if len(facts.gpus) < p.need.count:
            problems.append(f"{p.stack} needs {p.need.count} GPUs, the host has {len(facts.gpus)}")
            continue
        big_enough = [g for g in facts.gpus if g.memory_total_mb < 0 or g.memory_total_mb >= p.need.memory_mb]
        if len(big_enough) < p.need.count:
            problems.append(f"{p.stack} needs {p.need.memory_mb} MiB on {p.need.count} GPU(s), more than the "
                            f"card(s) have: {_cards(facts.gpus)}")
            continue
        if p.running or not p.need.memory_mb:
            continue
        free_enough = [g for g in facts.gpus if g.memory_free_mb < 0 or g.memory_free_mb >= p.need.memory_mb]
        if len(free_enough) < p.need.count:
            problems.append(f"{p.stack} needs {p.need.memory_mb} MiB free on {p.need.count} GPU(s): "
                            f"{_cards(facts.gpus)}; {_users(facts.gpu_processes)}")
    new = [p for p in wanted if not p.running and p.need.memory_mb]
    free = sum(g.memory_free_mb for g in facts.gpus if g.memory_free_mb >= 0)
    needed = sum(p.need.memory_mb * p.need.count for p in new)
    if len(new) > 1 and not problems and needed > free:
        problems.append(f"{', '.join(p.stack for p in new)} together need {needed} MiB of GPU memory, "
                        f"{free} MiB is free: {_cards(facts.gpus)}; {_users(facts.gpu_processes)}")
    return problems


def gpu_turn(need: GpuNeed | None, lock: asyncio.Lock) -> contextlib.AbstractAsyncContextManager:
    """The host's one GPU turn (``lock``) for a stack that needs a GPU; nothing to wait for otherwise."""
    return lock if need else contextlib.nullcontext()
