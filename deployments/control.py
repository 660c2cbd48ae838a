"""``homelab serve``: the always-on control process.

- Prefect's ``Runner`` registers the deployments ``deploy``, ``nightly``, ``rollback`` and
  ``secrets-sync`` and executes their runs (UI clicks, schedules, webhook pushes), each in its
  own process. The runner gives up when the API stays away, so it is started again once the
  server answers; registering is idempotent and scheduled runs live on the server.
- The GitHub webhook receiver (``deployments/webhook.py``), when a secret is configured.
- A local socket (``deployments/control_socket.py``) where the CLI hands over ``deploy``,
  ``plan`` and ``status``; they run here, on SSH connections kept warm between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner
from prefect.schedules import Cron

from deployments import control_metrics, flow_calls
from deployments.automations import apply_automations
from deployments.control_socket import encode, peer_uid, socket_path
from flows import served
from model.triggers import NIGHTLY_TAG
from tasks.engine import progress
from tasks.engine.host_pool import keep_warm

log = logging.getLogger("homelab.serve")

NIGHTLY_CRON, NIGHTLY_TZ = "30 3 * * *", "Europe/Berlin"
DEPLOY_PARAMS = {"ref", "only", "prune", "on_failure", "refresh_images", "lock_wait_s", "environment", "skip_staging",
                 "yes"}


async def served_deployments() -> list[RunnerDeployment]:
    """The four deployments; every run of them uses the inventory this process pins."""
    return [
        await served.deploy.ato_deployment(
            name="deploy", concurrency_limit=1, tags=["homelab"],
            description="Deploy the homelab (UI, webhook or CLI): pre-flight, plan, phases in order, "
                        "health-gated. Leave the ref empty for the default branch."),
        await served.deploy.ato_deployment(
            name="nightly", concurrency_limit=1, tags=["homelab", NIGHTLY_TAG],
            schedules=[Cron(NIGHTLY_CRON, timezone=NIGHTLY_TZ)], parameters={"refresh_images": True},
            description="Nightly convergence to the config repo's default branch, pulling images again "
                        "so moved tags are picked up."),
        await served.rollback.ato_deployment(
            name="rollback", concurrency_limit=1, tags=["homelab"],
            description="Return stacks to a recorded release (default: the previous healthy one)."),
        await served.secrets_sync.ato_deployment(
            name="secrets-sync", concurrency_limit=1, tags=["homelab"],
            schedules=[Cron("0 * * * *", timezone=NIGHTLY_TZ)],
            description="Rewrite every host's env files that drifted from Vault."),
    ]


def api_healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def run_runner(api_url: str, stop: asyncio.Event, query_seconds: float, registered: asyncio.Event,
                     automations: bool = True) -> None:
    """Prefect's runner, started again whenever it gave up (the API went away): once the API
    answers, the deployments are registered again (idempotent) and polling resumes."""
    delay = 1.0
    while not stop.is_set():
        runner = Runner(name=f"homelab-serve-{os.uname().nodename}", query_seconds=query_seconds,
                        pause_on_shutdown=False, limit=None)
        began = time.monotonic()
        try:
            for deployment in await served_deployments():
                await runner.aadd_deployment(deployment)
            log.info("deployments registered: deploy, nightly, rollback, secrets-sync")
            if automations:
                await apply_automations()
            registered.set()
            starting = asyncio.create_task(runner.start())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                if runner.started:
                    await runner.astop()  # in-flight runs are cancelled with a reason, not left running
                with contextlib.suppress(Exception):
                    await starting
                return
            stopping.cancel()
            starting.result()
        except Exception as exc:
            log.warning("the runner stopped (%s: %s); starting it again once the Prefect API answers",
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        delay = 1.0 if time.monotonic() - began > 60 else min(delay * 2, 30.0)
        while not stop.is_set():  # a pause between attempts, then until the API answers
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if api_healthy(api_url):
                break


# The sink of the request being handled: progress and (with -v) log lines go to its client.
_sink: contextvars.ContextVar[Callable[[dict], None] | None] = contextvars.ContextVar("homelab_sink", default=None)


class _ForwardLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sink = _sink.get()
        if sink is not None and getattr(record, "homelab_verbose", True):
            with contextlib.suppress(Exception):
                sink({"log": self.format(record)})


class ControlSocket:
    """The CLI's way in: one request per line, answered by a stream ending in ``done``."""

    def __init__(self, inventory: Path, api_url: str):
        self.inventory = inventory
        self.api_url = api_url
        self.handler = _ForwardLogs(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if peer_uid(writer.get_extra_info("socket")) != os.getuid():
                return  # another user: the 0700 directory should already have kept them out
            while line := await reader.readline():
                outcome = await self.answer(json.loads(line), writer)
                writer.write(encode({"done": outcome}))
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.info("control client went away: %s", exc)
        finally:
            writer.close()

    async def answer(self, request: dict, writer: asyncio.StreamWriter) -> dict:
        command = request.get("command")
        if command == "hello":
            return {"inventory": str(self.inventory), "pid": os.getpid(), "api": self.api_url}
        asked = Path(str(request.get("inventory", ""))).expanduser().resolve()
        if asked != self.inventory.resolve():
            return flow_calls.Outcome(exit_code=2, error=f"this control process serves {self.inventory}, "
                                                         f"not {asked}").to_json()
        params = request.get("params") or {}
        log.info("control socket: %s asked by the CLI", command)

        def sink(message: dict) -> None:
            if "log" in message and not request.get("verbose"):
                return
            writer.write(encode(message))

        # (again each time: Prefect's logging set-up at the first flow run replaces handlers)
        for name in ("prefect.flow_runs", "prefect.task_runs", "homelab"):
            if self.handler not in logging.getLogger(name).handlers:
                logging.getLogger(name).addHandler(self.handler)
        token = _sink.set(sink)
        try:
            with progress.listening(lambda p: sink({"progress": p.to_json()}),
                                    lambda text: writer.write(encode({"notice": text}))):
                outcome = await self.run(command, params)
        except Exception as exc:  # a bug here must still answer the client, with the reason
            log.exception("control request %s failed", command)
            outcome = flow_calls.error_outcome(exc)
        finally:
            _sink.reset(token)
        return outcome.to_json()

    async def run(self, command: str | None, params: dict) -> flow_calls.Outcome:
        if command == "deploy":
            unknown = set(params) - DEPLOY_PARAMS
            if unknown:
                return flow_calls.Outcome(exit_code=2, error=f"unknown deploy parameter(s): {sorted(unknown)}")
            return await flow_calls.deploy(self.api_url, {**params, "inventory": str(self.inventory)})
        if command == "plan":
            return await flow_calls.plan(self.inventory, params.get("ref"), params.get("only"),
                                         bool(params.get("refresh_images")))
        if command == "status":
            return await flow_calls.status(self.inventory)
        return flow_calls.Outcome(exit_code=2, error=f"unknown control command {command!r}")


async def listen(control: ControlSocket, path: Path) -> asyncio.AbstractServer:
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # the socket is born 0600
    try:
        return await asyncio.start_unix_server(control.handle, path=str(path))
    finally:
        os.umask(old_umask)


async def serve(inventory: Path, api_url: str, *, webhook: object | None = None, webhook_host: str = "127.0.0.1",
                webhook_port: int = 8787, query_seconds: float = 0.5, ready: Callable[[], None] | None = None,
                metrics_host: str = "127.0.0.1", metrics_port: int | None = None, automations: bool = True) -> None:
    """Run until SIGTERM or SIGINT. ``webhook`` is the receiver's settings (None: no receiver);
    ``metrics_port``: serve /metrics there too (the webhook's port always has it); ``automations``:
    apply the shipped Prefect automations (``deployments/automations.py``)."""
    inventory = inventory.expanduser().absolute()
    os.environ[served.PINNED_INVENTORY_ENV] = str(inventory)  # the runner's flow-run processes inherit it
    keep_warm()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    control = ControlSocket(inventory, api_url)
    path = socket_path()
    server = None
    registered = asyncio.Event()
    jobs = [asyncio.create_task(run_runner(api_url, stop, query_seconds, registered, automations), name="runner")]
    if webhook is not None:
        from deployments.webhook import serve_webhook

        jobs.append(asyncio.create_task(serve_webhook(webhook, host=webhook_host, port=webhook_port), name="webhook"))
    metrics_server = control_metrics.serve_metrics(metrics_host, metrics_port) if metrics_port else None
    waiting = asyncio.create_task(stop.wait())
    try:
        # ready (the socket answers the CLI) once the deployments exist, so a click can find them
        await asyncio.wait([asyncio.create_task(registered.wait()), waiting, *jobs],
                           return_when=asyncio.FIRST_COMPLETED)
        if registered.is_set():
            server = await listen(control, path)
            if ready:
                ready()
        await asyncio.wait([waiting, *jobs], return_when=asyncio.FIRST_COMPLETED)
        for job in jobs:
            if job.done() and job.exception():
                raise job.exception()  # e.g. the webhook port is taken: say so and exit
    finally:
        stop.set()
        if metrics_server is not None:
            metrics_server.shutdown()
        if server is not None:
            server.close()
        path.unlink(missing_ok=True)
        await asyncio.wait(jobs[:1], timeout=60)  # the runner cancels its in-flight runs first
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
