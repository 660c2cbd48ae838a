"""Benchmark the whole `homelab deploy` process against the simulated lab.

Not a test: run it as root with the lab up and the Prefect server running
(`bash bench/run.sh` does both). It times, as a user would see them:

- a full fresh deploy (every stack created),
- a no-op redeploy (nothing changed),
- a one-stack change (lab tag v1 -> v1.1),

and the orchestration overhead of the full deploy: wall time minus the critical path of
remote work, i.e. the sum over phases of the slowest host's remote busy time (reported
by the flow in `remote_seconds`).

Targets (issue #2): no-op <= 2 s, one-stack change <= 5 s, full deploy overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOMELAB = [str(ROOT / ".venv/bin/homelab")]


def deploy(inventory: Path, ref: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([*HOMELAB, "deploy", "-i", str(inventory), "--ref", ref, "--json"],
                          capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - started
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"deploy --ref {ref} printed no JSON (exit {done.returncode}):\n{done.stderr[-3000:]}")
    if report.get("result") != "success":
        sys.exit(f"deploy --ref {ref} failed:\n{json.dumps(report, indent=1)[-3000:]}")
    return wall, report


def critical_path(report: dict) -> float:
    """Sum over phases (pre-flight included) of the slowest host's remote busy seconds."""
    return sum(max(hosts.values()) for hosts in report["remote_seconds"].values() if hosts)


def reset_lab() -> None:
    from lab import manager

    manager.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/latest.json")
    args = parser.parse_args()

    rows: dict[str, list[float]] = {"full": [], "noop": [], "one_stack": []}
    overhead: list[float] = []
    flow_overhead: list[float] = []  # the same, inside the flow run only (no process start-up)
    for _ in range(args.rounds):
        reset_lab()
        wall, report = deploy(args.inventory, "v1")
        remote = critical_path(report)
        rows["full"].append(wall)
        overhead.append((wall - remote) / wall * 100)
        flow_overhead.append((report["wall_s"] - remote) / report["wall_s"] * 100)
        wall, report = deploy(args.inventory, "v1")
        assert {s["result"] for s in report["stacks"]} == {"unchanged"}, report
        rows["noop"].append(wall)
        wall, report = deploy(args.inventory, "v1.1")
        changed = [s["stack"] for s in report["stacks"] if s["result"] != "unchanged"]
        assert changed == ["newsletter"], changed
        rows["one_stack"].append(wall)

    result = {name: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3),
                     "max_s": round(max(v), 3)} for name, v in rows.items()}
    result["full_overhead_pct"] = {"median": round(statistics.median(overhead), 1),
                                   "min": round(min(overhead), 1), "max": round(max(overhead), 1)}
    result["flow_overhead_pct"] = {"median": round(statistics.median(flow_overhead), 1)}
    result["rounds"] = args.rounds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    targets = {"noop": 2.0, "one_stack": 5.0}
    for name, stats in result.items():
        if name in rows:
            goal = f"(target <= {targets[name]:g} s)" if name in targets else ""
            print(f"{name:10s} median {stats['median_s']:6.2f} s  min {stats['min_s']:6.2f}  "
                  f"max {stats['max_s']:6.2f} {goal}")
    print(f"overhead   median {result['full_overhead_pct']['median']:5.1f} % of the full deploy (target <= 10 %); "
          f"{result['flow_overhead_pct']['median']:.1f} % inside the flow run")


if __name__ == "__main__":
    main()
