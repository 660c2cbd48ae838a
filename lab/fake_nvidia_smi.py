#!/usr/bin/python3 -I
"""A stand-in for nvidia-smi on the lab's GPU host: one GeForce GTX 1080, driver 535.183.01.

It answers the calls the orchestrator's GPU preflight makes, in the real tool's formats:
`nvidia-smi`, `nvidia-smi -L`,
`nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]` and
`nvidia-smi --query-compute-apps=<fields> --format=csv[,noheader][,nounits]`.

A test makes the card look busy by writing STATE (JSON beside this script, on the GPU host's
own tmpfs): {"gpu": {"memory.used": "7900", ...}, "apps": [{"pid": "4242",
"process_name": "/usr/bin/ollama", "used_memory": "6900"}]}. Without it the card is idle.
"""

from __future__ import annotations

import json
import os
import sys
import time

DRIVER = "535.183.01"
CUDA = "12.2"
GPU = {
    "index": "0",
    "name": "NVIDIA GeForce GTX 1080",
    "uuid": "GPU-4f3a2c1e-8b7d-4e6f-9a1b-2c3d4e5f6a7b",
    "pci.bus_id": "00000000:01:00.0",
    "memory.total": "8192",
    "memory.used": "1024",
    "memory.free": "7168",
    "utilization.gpu": "3",
    "temperature.gpu": "41",
    "driver_version": DRIVER,
    "power.draw": "38.52",
    "power.limit": "180.00",
}
STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nvidia-smi.state.json")
APP_UNITS = {"used_memory": " MiB"}
APP_HEADERS = {"used_memory": "used_gpu_memory [MiB]"}


def load_state() -> list[dict[str, str]]:
    """Apply STATE to GPU; the compute processes it lists."""
    try:
        with open(STATE) as f:
            state = json.load(f)
    except FileNotFoundError:
        return []
    GPU.update({k: str(v) for k, v in state.get("gpu", {}).items()})
    used = int(GPU["memory.used"])
    GPU["memory.free"] = str(int(GPU["memory.total"]) - used)
    return [{"gpu_uuid": GPU["uuid"], "gpu_name": GPU["name"], **{k: str(v) for k, v in app.items()}}
            for app in state.get("apps", [])]


# Units the real tool appends unless `nounits` is given.
UNITS = {
    "memory.total": " MiB",
    "memory.used": " MiB",
    "memory.free": " MiB",
    "utilization.gpu": " %",
    "power.draw": " W",
    "power.limit": " W",
}
HEADERS = {
    "memory.total": "memory.total [MiB]",
    "memory.used": "memory.used [MiB]",
    "memory.free": "memory.free [MiB]",
    "utilization.gpu": "utilization.gpu [%]",
    "power.draw": "power.draw [W]",
    "power.limit": "power.limit [W]",
}


def table() -> str:
    g = GPU
    power = f"{float(g['power.draw']):.0f}W / {float(g['power.limit']):.0f}W"
    memory = f"{g['memory.used']}MiB / {g['memory.total']}MiB"
    util = f"{g['utilization.gpu']}%"
    row2 = f"| 27%   {g['temperature.gpu']}C    P8{power:>25} |{memory:>21} |{util:>9}      Default |"
    return f"""\
{time.strftime("%a %b %d %H:%M:%S %Y")}
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI {DRIVER}             Driver Version: {DRIVER}   CUDA Version: {CUDA}     |
|-----------------------------------------+----------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |
|                                         |                      |               MIG M. |
|=========================================+======================+======================|
|   0  NVIDIA GeForce GTX 1080        Off | 00000000:01:00.0 Off |                  N/A |
{row2}
|                                         |                      |                  N/A |
+-----------------------------------------+----------------------+----------------------+

+---------------------------------------------------------------------------------------+
| Processes:                                                                            |
|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |
|        ID   ID                                                             Usage      |
|=======================================================================================|
|  No running processes found                                                           |
+---------------------------------------------------------------------------------------+
"""


def query(fields_arg: str, fmt: str, rows: list[dict[str, str]] | None = None,
          units_of: dict[str, str] = UNITS, headers: dict[str, str] = HEADERS) -> int:
    fields = [f.strip() for f in fields_arg.split(",") if f.strip()]
    known = GPU if rows is None else {"gpu_uuid", "gpu_name", "pid", "process_name", "used_memory"}
    for field in fields:
        if field not in known:
            print(f'Field "{field}" is not a valid field to query.', file=sys.stderr)
            print("", file=sys.stderr)
            return 2
    options = {o.strip() for o in fmt.split(",")}
    if "csv" not in options:
        print(f'"{fmt}" is not a valid format.', file=sys.stderr)
        return 2
    units = "nounits" not in options
    if "noheader" not in options:
        print(", ".join(headers.get(f, f) for f in fields))
    for row in ([GPU] if rows is None else rows):
        print(", ".join(row[f] + (units_of.get(f, "") if units else "") for f in fields))
    return 0


def main(argv: list[str]) -> int:
    apps = load_state()
    if not argv:
        sys.stdout.write(table())
        return 0
    if argv in (["-L"], ["--list-gpus"]):
        print(f"GPU 0: {GPU['name']} (UUID: {GPU['uuid']})")
        return 0
    opts = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    unknown = [a for a in argv if not (a.startswith("--") and "=" in a)]
    if "--query-gpu" in opts and not unknown:
        return query(opts["--query-gpu"], opts.get("--format", "csv"))
    if "--query-compute-apps" in opts and not unknown:
        return query(opts["--query-compute-apps"], opts.get("--format", "csv"), apps, APP_UNITS, APP_HEADERS)
    bad = unknown[0] if unknown else argv[0]
    print(f"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n({bad})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
