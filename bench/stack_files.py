"""Benchmark the stage of a stack folder: 1 file against 200 small files (issue #8).

Not a test: run it as root with the lab up (`bash bench/stack_files.sh`). For each size it
times, over the real SSH transport to one lab host:

- local: reading the folder, hashing it and building the tar;
- stage: the one round trip that unpacks the tar in a release directory and checks images;
- install: putting the release into a project directory (what `compose up` is preceded by).

Target: a stack of 200 small files is not noticeably slower than a stack of one file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from model.desired import load_desired_state
from model.stack_files import collect_stack_files
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.host_commands.compose import ComposeProject
from tasks.host_commands.release_files import INSTALL
from tasks.host_commands.shell import sh

ROOT = Path(__file__).resolve().parent.parent
HOST = "vps"
IMAGE = "localhost/lab-web:1"


def make_folder(root: Path, count: int) -> Path:
    folder = root / "stacks" / f"bench{count}"
    folder.mkdir(parents=True)
    (folder / "compose.yaml").write_text(f"services:\n  web:\n    image: {IMAGE}\n")
    for index in range(count - 1):
        path = folder / "conf" / f"d{index % 10}" / f"file{index}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# config file {index}\nkey: value-{index}\n" + "x" * 400 + "\n")
    return folder


async def time_size(pool: HostPool, root: Path, count: int, rounds: int) -> dict[str, float]:
    folder = make_folder(root, count)
    transport = pool[HOST]
    local, stage, install = [], [], []
    for index in range(rounds):
        started = time.perf_counter()
        files = collect_stack_files(root, folder, str(folder))
        files.manifest()
        tar = files.tar()
        local.append(time.perf_counter() - started)
        release = f"/tmp/homelab-bench/{count}/r{index}"
        argv = sh("umask 022; mkdir -p \"$1/files\" && tar -x -o -f - -C \"$1\" && "
                  "exec docker image inspect --format '{{.Id}}' \"$2\"", "bench-stage", release, IMAGE)
        started = time.perf_counter()
        await transport.run(argv, input=tar)
        stage.append(time.perf_counter() - started)
        project = ComposeProject(name="bench", directory=f"/tmp/homelab-bench/{count}/project", files=())
        started = time.perf_counter()
        await transport.run(sh(INSTALL + "exec true", "bench-install", release, project.directory, "--", "--"))
        install.append(time.perf_counter() - started)
    await transport.run(["rm", "-rf", f"/tmp/homelab-bench/{count}"])
    return {name: round(statistics.median(values) * 1000, 1)
            for name, values in (("local_ms", local), ("stage_ms", stage), ("install_ms", install))}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stack_files.json")
    args = parser.parse_args()
    desired = load_desired_state(args.inventory, only=["newsletter"])  # any stack on HOST
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        async with HostPool(ssh_targets(desired)) as pool:
            await pool[HOST].run(["true"])  # connect first: connection set-up is not part of a stage
            for count in (1, 200):
                result[f"{count}_files"] = await time_size(pool, Path(scratch) / str(count), count, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name, row in result.items():
        print(f"{name:10s} local {row['local_ms']:6.1f} ms  stage {row['stage_ms']:6.1f} ms  "
              f"install {row['install_ms']:6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
