"""Parsers against output recorded on a real NVIDIA H100 (nvidia-smi 5xx driver).

The lab's rtx1080 has a simulated nvidia-smi; these recordings prove the parser also reads
the real tool. The survey recording comes from a machine without docker, so it also shows
how a missing engine is reported.
"""

from __future__ import annotations

from pathlib import Path

from unitsupport import make_gpu

from tasks.engine.preflight import preflight_problems
from tasks.host_commands.gpu import parse_nvidia_smi
from tasks.host_commands.survey import parse_survey

DATA = Path(__file__).parent / "data"


def test_real_nvidia_smi_query_output_parses() -> None:
    gpus, error = parse_nvidia_smi((DATA / "nvidia-smi-h100.txt").read_text().strip())
    assert error is None
    assert gpus == (make_gpu(0, "NVIDIA H100 80GB HBM3", 81559, 0, 0),)


def test_real_survey_reports_the_gpu_and_the_missing_engine() -> None:
    survey = parse_survey((DATA / "survey-h100-no-docker.txt").read_text())
    assert survey.complete
    assert [g.name for g in survey.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert not survey.engine_ok
    assert "docker: not found" in (survey.engine_error or "")
    assert survey.disk_free_mb == 67091660 // 1024
    problems = preflight_problems(survey, min_free_disk_mb=1024, gpu=True)
    assert problems == ["container engine not answering: homelab-survey: 6: docker: not found"]
