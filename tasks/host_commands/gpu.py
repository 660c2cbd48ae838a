"""GPUs as ``nvidia-smi`` reports them (parsed; the query runs inside the survey)."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.host_commands.sections import failed, failure_text


@dataclass(frozen=True, kw_only=True)
class Gpu:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int
    utilization_pct: int


GPU_FIELDS = "index,name,memory.total,memory.used,utilization.gpu"


def parse_nvidia_smi(text: str) -> tuple[tuple[Gpu, ...], str | None]:
    """``nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits`` -> GPUs."""
    if not text:
        return (), None
    if failed(text):
        return (), failure_text(text) or "nvidia-smi failed"
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
        try:
            gpus.append(Gpu(index=int(parts[0]), name=parts[1], memory_total_mb=_int(parts[2]),
                            memory_used_mb=_int(parts[3]), utilization_pct=_int(parts[4])))
        except ValueError:
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
    return tuple(gpus), None


def _int(value: str) -> int:
    """nvidia-smi prints "[N/A]" for fields a board does not report."""
    return -1 if value.startswith("[") else int(float(value))
