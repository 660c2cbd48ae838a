"""Pre-flight checks: judged from the host survey, before anything on any host changes.

A host fails pre-flight if it cannot be reached, its container engine does not answer, its
state directory's disk is short of space, or (for GPU hosts) ``nvidia-smi`` shows no GPU.
"""

from __future__ import annotations

from tasks.host_commands.survey import HostSurvey


def preflight_problems(survey: HostSurvey, *, min_free_disk_mb: int, gpu: bool) -> list[str]:
    problems = []
    if not survey.complete:
        problems.append("the host survey was cut off; the host may be overloaded")
    if survey.engine_error:
        problems.append(f"container engine not answering: {survey.engine_error}")
    if survey.disk_error:
        problems.append(f"cannot measure free disk: {survey.disk_error}")
    elif survey.disk_free_mb is not None and survey.disk_free_mb < min_free_disk_mb:
        problems.append(f"only {survey.disk_free_mb} MiB free in the state directory, "
                        f"{min_free_disk_mb} MiB required")
    if gpu:
        if survey.gpu_error:
            problems.append(f"GPU host but nvidia-smi failed: {survey.gpu_error}")
        elif not survey.gpus:
            problems.append("GPU host but nvidia-smi lists no GPU")
    return problems
