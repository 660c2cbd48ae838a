"""Benchmark the webhook receiver: signed pushes at a fixed rate, each answered 202 with a run id.

Not a test: `bash bench/webhook.sh`. Everything stays on loopback and in temporary folders:

- a Prefect server of its own (temporary PREFECT_HOME, analytics off) with the deploy
  deployment registered and no work pool, so no run ever executes;
- the receiver (``serve_webhook``) in a child process, so the load generator does not share its loop;
- an open loop: request i leaves at start + i/rate whatever the answers do, and its latency
  counts from that planned time (no coordinated omission). Requests in flight are capped;
  a request that would pass the cap is counted as dropped, not sent.

Reports p50/p95/p99/max latency of the answers and the errors (non-202, timeouts, dropped).
Target: p99 < 100 ms at 50 requests/s for 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"bench-webhook-secret"
DEPLOYMENT = "deploy-homelab/deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise SystemExit(f"{process.args[:4]} exited with {process.returncode}")
    raise SystemExit(f"{url} did not answer within {timeout_s:g}s")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


async def register_deployment() -> None:
    from prefect import get_client

    async with get_client() as client:
        flow_id = await client.create_flow_from_name("deploy-homelab")
        await client.create_deployment(flow_id=flow_id, name="deploy", concurrency_limit=1,
                                       parameters={"ref": None}, entrypoint="flows/deploy.py:deploy_homelab")


async def count_runs() -> dict[str, int]:
    from prefect import get_client

    counts: dict[str, int] = {}
    async with get_client() as client:
        offset = 0
        while batch := await client.read_flow_runs(limit=200, offset=offset):
            for run in batch:
                counts[run.state.name] = counts.get(run.state.name, 0) + 1
            offset += len(batch)
    return counts


def push_body(n: int) -> bytes:
    after = f"{n + 1:040x}"  # never all zeros: that is a branch deletion
    return json.dumps({"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": after, "deleted": False,
                       "created": False, "head_commit": {"id": after, "message": f"commit {n}"},
                       "repository": {"full_name": "me/homelab"}}).encode()


async def load(url: str, rate: float, duration_s: float, max_in_flight: int, timeout_s: float,
               kind: str = "push") -> dict:
    import httpx

    from model.webhook_events import signature

    total = int(rate * duration_s)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    in_flight = 0

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        async def one(n: int, planned: float) -> None:
            nonlocal in_flight
            body = push_body(n) if kind == "push" else b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
            headers = {"Content-Type": "application/json", "X-GitHub-Event": kind,
                       "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature(SECRET, body)}
            try:
                answer = await http.post("/", content=body, headers=headers)
                if answer.status_code != (202 if kind == "push" else 200) or (
                        kind == "push" and "flow_run_id" not in answer.json()):
                    error(f"http {answer.status_code}")
                else:
                    latencies.append(time.perf_counter() - planned)
            except httpx.TimeoutException:
                error("timeout")
            except httpx.HTTPError as exc:
                error(type(exc).__name__)
            finally:
                in_flight -= 1

        tasks = []
        start = time.perf_counter() + 0.1
        for n in range(total):
            planned = start + n / rate
            await asyncio.sleep(max(0.0, planned - time.perf_counter()))
            if in_flight >= max_in_flight:
                error("dropped (in-flight cap)")
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(n, planned)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else None

    return {"kind": kind, "rate": rate, "duration_s": duration_s, "sent": total, "ok": len(latencies), "errors": errors,
            "elapsed_s": round(elapsed, 1), "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None}


async def serve(port: int, deliveries: Path) -> None:
    from deployments.webhook import WebhookSettings, serve_webhook

    await serve_webhook(WebhookSettings(secret=SECRET, deployment=DEPLOYMENT, deliveries_path=deliveries), port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request")
    parser.add_argument("--kind", choices=["push", "ping"], default="push",
                        help="ping: the receiver alone (signature, parsing, audit), no Prefect call")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/webhook.json")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: the receiver's child process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, Path(os.environ["HOMELAB_HOME"]) / "deliveries.sqlite3"))
        return

    scratch = Path(tempfile.mkdtemp(prefix="homelab-bench-webhook-"))
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "HOMELAB_HOME": str(scratch / "homelab"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    with (scratch / "prefect-server.log").open("wb") as server_log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", port], env=env, stdout=server_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    receiver = None
    try:
        wait_healthy(f"{api_url}/health", server, 180)
        os.environ.update({**env, "PREFECT_API_URL": api_url})  # before Prefect is imported
        asyncio.run(register_deployment())
        hook_port = free_port()
        with (scratch / "receiver.log").open("wb") as receiver_log:
            receiver = subprocess.Popen([sys.executable, __file__, "--serve", str(hook_port)], env=os.environ,
                                        stdout=receiver_log, stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd=ROOT)
        url = f"http://127.0.0.1:{hook_port}"
        wait_healthy(f"{url}/healthz", receiver, 60)
        result = asyncio.run(load(url, args.rate, args.duration, args.max_in_flight, args.timeout, args.kind))
        result["runs_by_state"] = asyncio.run(count_runs())
    finally:
        if receiver is not None:
            stop(receiver)
        stop(server)
    result["cpus"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  p99 {result['p99_ms']} ms  "
          f"errors {sum(result['errors'].values())}/{result['sent']}  (target p99 < 100 ms)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
