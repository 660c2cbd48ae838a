"""Pre-flight is judged from the survey alone: a table of surveys -> problems."""

from __future__ import annotations

import dataclasses

import pytest
from unitsupport import make_gpu

from tasks.engine.preflight import preflight_problems
from tasks.host_commands.survey import HostSurvey

GOOD = HostSurvey(engine_ok=True, engine_error=None, disk_free_mb=4096, disk_error=None, releases={},
                  broken_releases={}, containers=(), gpus=(make_gpu(0, "NVIDIA GeForce GTX 1080", 8192, 0, 0),))


def survey(**changes) -> HostSurvey:
    return dataclasses.replace(GOOD, **changes)


# (id, survey, min_free_disk_mb, gpu host?, expected problem substrings in order)
CASES = [
    ("all good", GOOD, 2048, True, []),
    ("all good, CPU host without GPU", survey(gpus=()), 2048, False, []),
    ("exactly the minimum disk", survey(disk_free_mb=2048), 2048, False, []),
    ("engine down", survey(engine_ok=False, engine_error="Cannot connect to the Docker daemon"), 2048, False,
     ["container engine not answering: Cannot connect to the Docker daemon"]),
    ("disk short", survey(disk_free_mb=100), 2048, False,
     ["only 100 MiB free in the state directory, 2048 MiB required"]),
    ("disk unmeasurable", survey(disk_free_mb=None, disk_error="no output from df"), 2048, False,
     ["cannot measure free disk: no output from df"]),
    ("GPU host without GPU", survey(gpus=()), 2048, True, ["GPU host but nvidia-smi lists no GPU"]),
    ("GPU host, nvidia-smi error", survey(gpus=(), gpu_error="NVIDIA-SMI has failed"), 2048, True,
     ["GPU host but nvidia-smi failed: NVIDIA-SMI has failed"]),
    ("nvidia-smi error on a CPU host is ignored", survey(gpus=(), gpu_error="not found"), 2048, False, []),
    ("incomplete survey", survey(complete=False), 2048, False, ["the host survey was cut off"]),
    ("everything wrong", survey(complete=False, engine_ok=False, engine_error="down", disk_free_mb=1, gpus=()),
     2048, True, ["cut off", "container engine not answering: down", "only 1 MiB free", "lists no GPU"]),
]


@pytest.mark.parametrize(("facts", "min_free", "gpu", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_preflight_problems(facts, min_free, gpu, expected):
    problems = preflight_problems(facts, min_free_disk_mb=min_free, gpu=gpu)
    assert len(problems) == len(expected), problems
    for problem, part in zip(problems, expected, strict=True):
        assert part in problem
