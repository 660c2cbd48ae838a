"""Benchmark the deploy at 3, 10 and 30 hosts on generated labs (`homelab lab up --hosts N`).

Not a test: run it as root through `bash bench/scale.sh` (set-up, lab, Prefect server). For each
size it brings the lab up at that size, then per round: resets the hosts, deploys ``v1`` fresh,
deploys ``v1`` again (a no-op), and deploys ``v1.1`` (one stack changes), then ``v1`` again
(the same stack back, the second one-stack change of the round). For every deploy it records:

- the CLI's wall time and the run's own (``wall_s`` in the report);
- the orchestrator's peak RSS (the CLI process, where the flow runs);
- its Prefect API requests (bench/api_counter.py);
- the Prefect server's CPU seconds (its whole process group, from /proc).

Per size it also records the lab's idle CPU (every host up, every stack deployed, nothing
deploying) and the memory each extra host adds. Results go to bench/results/scale-<db>.json
and a Markdown table to stdout.

Targets (issue 14): no-op at 30 hosts <= 2x the no-op at 3; one-stack change <= 1.3x; fresh
<= 3x; the orchestrator's peak RSS at 30 hosts < 400 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python")
HOMELAB = str(ROOT / ".venv/bin/homelab")
sys.path.insert(0, str(ROOT))


def lab_up(hosts: int) -> Path:
    done = subprocess.run([HOMELAB, "lab", "up", "--hosts", str(hosts), "--generated"],
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def group_cpu_seconds(leader: int) -> float:
    """User + system CPU seconds of every live process in ``leader``'s process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_leader() -> int:
    from deployments import server

    return int((server.state_dir() / "prefect-server.pid").read_text())


def deploy(inventory: Path, ref: str) -> dict:
    leader = server_leader()
    with tempfile.NamedTemporaryFile(suffix=".json") as counted:
        cpu_before = group_cpu_seconds(leader)
        machine_before = machine_busy_seconds()
        started = time.perf_counter()
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            child = subprocess.Popen([PY, str(ROOT / "bench/api_counter.py"), counted.name, "deploy", "-i",
                                      str(inventory), "--ref", ref, "--json"], stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - started
            machine_busy = machine_busy_seconds() - machine_before
            stdout.seek(0)
            stderr.seek(0)
            done = subprocess.CompletedProcess(child.args, child.returncode, stdout.read().decode(),
                                               stderr.read().decode())
        time.sleep(0.5)  # the server finishes the run's last writes
        server_cpu = group_cpu_seconds(leader) - cpu_before
        api = json.loads(Path(counted.name).read_text() or "{}")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"deploy --ref {ref} printed no JSON (exit {done.returncode}):\n{done.stderr[-3000:]}")
    if report.get("result") != "success":
        failed = [f"{s['host']}/{s['stack']}: {s['result']}: {s.get('error')}" for s in report["stacks"]
                  if s["result"] not in ("healthy", "unchanged")]
        sys.exit(f"deploy --ref {ref} failed ({report.get('wall_s')} s):\n" + "\n".join(failed[:20]))
    survey = (report.get("remote_seconds") or {}).get("preflight", {})  # host -> seconds of its survey
    return {"cli_s": wall, "run_s": report["wall_s"], "api_calls": api.get("total", 0), "server_cpu_s": server_cpu,
            "rss_mib": usage.ru_maxrss / 1024, "cli_cpu_s": usage.ru_utime + usage.ru_stime,
            "preflight_max_s": max(survey.values(), default=0), "preflight_sum_s": sum(survey.values()),
            "machine_cpu_s": machine_busy, "saturation": machine_busy / (wall * (os.cpu_count() or 1)),
            "changed": [s["stack"] for s in report["stacks"] if s["result"] != "unchanged"],
            "placements": len(report["stacks"]), "api_routes": api.get("routes", {})}


def machine_busy_seconds() -> float:
    """CPU seconds this whole machine (every lab host, the server, the CLI) spent busy so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_busy(seconds: float) -> float:
    """This machine's busy fraction over ``seconds`` (1.0 = every core busy)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def host_memory_mib(host: str) -> float:
    """Proportional set size (MiB) of every process in the lab host's pid namespace."""
    from lab import procs
    from lab.hostctl import init_pid

    pid = init_pid(host)
    if pid is None:
        return 0.0
    total = 0
    for member in procs.members(procs.ns_of(pid, "pid"), "pid"):
        try:
            for line in Path(f"/proc/{member.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def bench_size(hosts: int, rounds: int, idle_s: float) -> dict:
    from lab import manager, topology

    inventory = lab_up(hosts)
    cases: dict[str, list[dict]] = {"fresh": [], "noop": [], "one_stack": []}
    for _ in range(rounds):
        manager.reset()
        cases["fresh"].append(deploy(inventory, "v1"))
        noop = deploy(inventory, "v1")
        assert noop["changed"] == [], noop["changed"]
        cases["noop"].append(noop)
        for ref in ("v1.1", "v1"):
            change = deploy(inventory, ref)
            assert len(change["changed"]) == 1, change["changed"]
            cases["one_stack"].append(change)
    idle = cpu_busy(idle_s)
    extra = [h for h in topology.lab_hosts(hosts) if h not in topology.HOSTS]
    per_host = statistics.median([host_memory_mib(h) for h in extra]) if extra else None
    out: dict = {"hosts": hosts, "placements": cases["fresh"][0]["placements"], "idle_cpu": round(idle, 3),
                 "extra_host_mib": round(per_host, 1) if per_host else None,
                 "peak_rss_mib": round(max(r["rss_mib"] for runs in cases.values() for r in runs), 1)}
    for name, runs in cases.items():
        out[name] = {key: stats([r[key] for r in runs])
                     for key in ("cli_s", "run_s", "api_calls", "server_cpu_s", "cli_cpu_s", "preflight_max_s",
                                 "preflight_sum_s", "machine_cpu_s", "saturation")}
    out["noop_routes"] = cases["noop"][0]["api_routes"]
    return out


def table(results: list[dict]) -> str:
    lines = ["| hosts (placements) | case (min / median / max) | CLI s | run s | API calls | server CPU s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for case in ("fresh", "noop", "one_stack"):
            cells = [f"{r[case][k]['min']:g} / {r[case][k]['median']:g} / {r[case][k]['max']:g}"
                     for k in ("cli_s", "run_s", "api_calls", "server_cpu_s")]
            lines.append(f"| {r['hosts']} ({r['placements']}) | {case} | " + " | ".join(cells) + " |")
    lines += ["", "Where the time goes (medians): the orchestrator's CPU, the slowest survey, all surveys, and the "
              "whole machine's CPU during the deploy (saturation: busy share of every core)",
              "", "| hosts | case | run s | orchestrator CPU s | slowest survey s | surveys summed s | machine CPU s "
              "| saturation |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['hosts']} | {case} | {r[case]['run_s']['median']:g} | {r[case]['cli_cpu_s']['median']:g} | "
              f"{r[case]['preflight_max_s']['median']:g} | {r[case]['preflight_sum_s']['median']:g} | "
              f"{r[case]['machine_cpu_s']['median']:g} | {r[case]['saturation']['median']:.0%} |"
              for r in results for case in ("fresh", "noop", "one_stack")]
    lines += ["", "| hosts | orchestrator peak RSS MiB | lab idle CPU (share of 2 cores) | memory per extra host MiB |",
              "|---|---|---|---|"]
    lines += [f"| {r['hosts']} | {r['peak_rss_mib']} | {r['idle_cpu']:.0%} | {r['extra_host_mib'] or '-'} |"
              for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=20)
    parser.add_argument("--label", default="sqlite", help="names the results file (the server's database)")
    args = parser.parse_args()
    results = []
    out = ROOT / "bench/results" / f"scale-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for hosts in args.hosts:
        results.append(bench_size(hosts, args.rounds, args.idle_s))
        out.write_text(json.dumps(results, indent=1))  # each size as it ends: a later failure keeps it
        print(f"{hosts} hosts done", file=sys.stderr, flush=True)
    print(table(results))
    base, top = results[0], results[-1]
    for case, goal in (("noop", 2.0), ("one_stack", 1.3), ("fresh", 3.0)):
        ratio = top[case]["run_s"]["median"] / base[case]["run_s"]["median"]
        print(f"{case}: {top['hosts']} hosts / {base['hosts']} hosts = {ratio:.2f}x on the run's median "
              f"(target <= {goal:g}x)")


if __name__ == "__main__":
    main()
