"""Benchmark the ways in that ``homelab serve`` provides, against the simulated lab.

Not a test: run it as root with the lab up and the Prefect server running (`bash
bench/serve.sh` does both). It starts a control process in a private HOMELAB_HOME and times,
as a user would see them:

- a no-op CLI deploy of the whole lab, whole process, handed to the control process;
- a one-stack change (lab tags v1 <-> v1.1 alternately: one stack, newsletter, changes);
- how long a run created like the UI's Run button takes to start executing.

Targets (issue 9): no-op <= 0.8 s, one-stack change <= 3.5 s, UI run start <= 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOMELAB = [str(ROOT / ".venv/bin/homelab")]


def cli_deploy(inventory: Path, ref: str, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run([*HOMELAB, "deploy", "-i", str(inventory), "--ref", ref, "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"deploy --ref {ref} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall


async def ui_start_latency(deployment: str, parameters: dict) -> float:
    """Create a run the way the UI does, then wait until the server says it is running."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        created = time.perf_counter()
        run = await client.create_flow_run_from_deployment(found.id, parameters=parameters)
        while True:
            state = (await client.read_flow_run(run.id)).state
            if state.is_running() or state.is_final():
                latency = time.perf_counter() - created
                break
            await asyncio.sleep(0.05)
        while not (await client.read_flow_run(run.id)).state.is_final():
            await asyncio.sleep(0.2)
    return latency


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serve.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="homelab-bench-serve-"))
    env = {**os.environ, "HOMELAB_HOME": str(home)}
    started = subprocess.run([*HOMELAB, "serve", "--detach", "--no-webhook", "-i", str(args.inventory)],
                             capture_output=True, text=True, env=env)
    if started.returncode != 0:
        sys.exit(f"homelab serve --detach failed:\n{started.stdout}{started.stderr}")
    try:
        from lab import manager

        manager.reset()
        cli_deploy(args.inventory, "v1", env)  # the first release
        cli_deploy(args.inventory, "v1", env)  # warm the caches
        noop = [cli_deploy(args.inventory, "v1", env) for _ in range(args.rounds)]
        change = [cli_deploy(args.inventory, ref, env) for ref in (["v1.1", "v1"] * args.rounds)[:args.rounds]]
        os.environ["HOMELAB_HOME"] = str(home)
        ui = [asyncio.run(ui_start_latency("deploy-homelab/deploy", {"ref": "v1"})) for _ in range(args.rounds)]
    finally:
        subprocess.run([*HOMELAB, "serve", "--stop"], env=env, capture_output=True)
    result = {"noop_deploy_s": summary(noop), "one_stack_change_s": summary(change), "ui_run_start_s": summary(ui)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
