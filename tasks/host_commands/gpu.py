"""GPUs and the processes using them, as ``nvidia-smi`` reports them (parsed; the queries run
inside the survey).

The survey asks with a header line (``--format=csv,nounits``), so columns are found by name
and a driver that orders or names them differently still parses. The older header-less form
(``index, name, memory.total, memory.used, utilization.gpu``: the recorded H100) parses too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.host_commands.sections import failed, failure_text


@dataclass(frozen=True, kw_only=True)
class Gpu:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int
    utilization_pct: int
    driver_version: str = ""
    uuid: str = ""

    @property
    def memory_free_mb(self) -> int:
        """-1 when the board does not report its memory."""
        if self.memory_total_mb < 0 or self.memory_used_mb < 0:
            return -1
        return self.memory_total_mb - self.memory_used_mb


@dataclass(frozen=True, kw_only=True)
class GpuProcess:
    gpu_uuid: str
    pid: int
    name: str
    used_memory_mb: int


GPU_FIELDS = "index,uuid,name,driver_version,memory.total,memory.used,utilization.gpu"
APP_FIELDS = "gpu_uuid,pid,process_name,used_memory"
_LEGACY = ("index", "name", "memory.total", "memory.used", "utilization.gpu")
_REQUIRED = ("index", "name", "memory.total", "memory.used")


GPU_QUERY = f"nvidia-smi --query-gpu={GPU_FIELDS} --format=csv,nounits"
APPS_QUERY = f"nvidia-smi --query-compute-apps={APP_FIELDS} --format=csv,nounits"


def _columns(header: str) -> list[str]:
    """``memory.total [MiB]`` -> ``memory.total``."""
    return [re.sub(r"\s*\[.*\]$", "", c.strip()) for c in header.split(",")]


def _split(lines: list[str]) -> tuple[list[str], list[str]]:
    """(column names, data lines): from the header line if there is one, else the legacy order."""
    if lines and {"name", "pid"} & set(_columns(lines[0])):
        return _columns(lines[0]), lines[1:]
    return list(_LEGACY), lines


def parse_nvidia_smi(text: str) -> tuple[tuple[Gpu, ...], str | None]:
    """``GPU_QUERY``'s answer (or the legacy header-less one) -> GPUs, or why not."""
    gpu_part = text.strip()
    if not gpu_part:
        return (), None
    if failed(gpu_part):
        return (), failure_text(gpu_part) or "nvidia-smi failed"
    columns, lines = _split(gpu_part.splitlines())
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        return (), f"unexpected nvidia-smi output: no column {missing[0]}: {gpu_part.splitlines()[0][:200]!r}"
    gpus = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(columns):
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
        row = dict(zip(columns, parts, strict=True))
        try:
            gpus.append(Gpu(index=int(row["index"]), name=row["name"], memory_total_mb=_int(row["memory.total"]),
                            memory_used_mb=_int(row["memory.used"]),
                            utilization_pct=_int(row.get("utilization.gpu", "[N/A]")),
                            driver_version=row.get("driver_version", ""), uuid=row.get("uuid", "")))
        except ValueError:
            return (), f"unexpected nvidia-smi output: {line[:200]!r}"
    return tuple(gpus), None


def parse_gpu_processes(text: str) -> tuple[GpuProcess, ...]:
    """``APPS_QUERY``'s answer -> the compute processes; anything unreadable is skipped (they
    only explain a refusal, they never decide one)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or "No running processes" in lines[0]:
        return ()
    columns, rows = _split(lines)
    found = []
    for line in rows:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(columns):
            continue
        row = dict(zip(columns, parts, strict=True))
        try:
            found.append(GpuProcess(gpu_uuid=row.get("gpu_uuid", ""), pid=int(row["pid"]),
                                    name=row.get("process_name", "?"), used_memory_mb=_int(_used_memory(row))))
        except (KeyError, ValueError):
            continue
    return tuple(found)


def _used_memory(row: dict[str, str]) -> str:
    """The column is asked for as used_memory and headed used_gpu_memory."""
    return row.get("used_gpu_memory", row.get("used_memory", "[N/A]"))


def _int(value: str) -> int:
    """nvidia-smi prints "[N/A]" for fields a board does not report."""
    return -1 if value.startswith("[") else int(float(value))
