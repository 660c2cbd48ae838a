"""``homelab serve``: start (or ``--stop``) the control process; ``--detach`` backgrounds it."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from deployments import control_socket
from deployments.cli.app import app
from deployments.cli.common import DEFAULT_INVENTORY, InventoryOption, fail, load, prefect_api
from model.errors import HomelabError, UsageError

DETACH_WAIT_S = 90


def pid_file() -> Path:
    return control_socket.socket_dir() / "serve.pid"


def log_file() -> Path:
    return control_socket.socket_dir() / "serve.log"


def running_pid() -> int | None:
    """The pid in the pid file if that process is alive and is a control process (a stale file
    may name a reused pid)."""
    try:
        pid = int(pid_file().read_text())
        proc = Path(f"/proc/{pid}")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if state != "Z" and b"serve" in cmdline else None


def parse_allow_from(value: str | None) -> tuple:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in (value or "").split(",")
                     if part.strip())
    except ValueError as exc:
        raise fail(UsageError(f"--allow-from: {exc}")) from None


@app.command()
def serve(inventory: InventoryOption = DEFAULT_INVENTORY,
          detach: Annotated[bool, typer.Option("--detach", help="run in the background (pid and log file)")] = False,
          stop: Annotated[bool, typer.Option("--stop", help="stop the background control process")] = False,
          webhook: Annotated[bool, typer.Option(help="serve the GitHub webhook receiver (needs a secret)")] = True,
          webhook_host: Annotated[str, typer.Option(help="webhook listen address")] = "127.0.0.1",
          webhook_port: Annotated[int, typer.Option(help="webhook listen port")] = 8787,
          branch: Annotated[str, typer.Option(help="pushes to this branch deploy")] = "main",
          allow_from: Annotated[str | None, typer.Option(help="only these client CIDRs may call the webhook")] = None,
          metrics_host: Annotated[str, typer.Option(help="/metrics listen address")] = "127.0.0.1",
          metrics_port: Annotated[int, typer.Option(help="/metrics listen port (0: off; the webhook port "
                                                         "serves /metrics too)")] = 9109,
          automations: Annotated[bool, typer.Option(help="apply the shipped Prefect automations (roll back a "
                                                         "failed stack)")] = True,
          ) -> None:
    """The control process: registers the deploy, nightly, rollback and secrets-sync deployments
    and runs them (UI clicks, schedules, webhook pushes); CLI deploys hand their work to it."""
    if stop:
        raise typer.Exit(0 if stop_background() else 1)
    # Runs from the UI, webhooks and schedules are aimed by whoever reaches them: every one is
    # checked against the trust file (its flow-run processes inherit this), and serve needs one.
    from model.trust import REQUIRE_TRUST_ENV  # not at import: the warm-path CLI never needs it

    os.environ[REQUIRE_TRUST_ENV] = "1"
    try:
        load(inventory)  # a bad inventory or a missing trust file fails now, not at the first run
    except HomelabError as exc:
        raise fail(exc) from None
    if (pid := running_pid()) is not None:
        raise fail(UsageError(f"a control process already runs (pid {pid}); `homelab serve --stop` first"))
    api_url = prefect_api()
    if detach:
        raise typer.Exit(start_background(sys.argv[1:], inventory, api_url))
    settings = webhook_settings(branch, parse_allow_from(allow_from)) if webhook else None
    run_foreground(inventory, api_url, settings, webhook_host, webhook_port, (metrics_host, metrics_port),
                   automations)


def webhook_settings(branch: str, allow_from: tuple) -> object | None:
    """The receiver's settings, or None (with a note) when no secret is configured."""
    from deployments.webhook import WebhookSettings, load_secret

    try:
        secret = load_secret()
    except HomelabError as exc:
        print(f"webhook: off ({exc})", file=sys.stderr)
        return None
    return WebhookSettings(secret=secret, branch=branch, allow_from=allow_from)


def _log_to_stderr(*names: str) -> None:
    """What the control process itself does goes to its stderr: serve.log when detached,
    the journal under systemd."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # Prefect's root console handler would print each line twice


def run_foreground(inventory: Path, api_url: str, settings: object | None, host: str, port: int,
                   metrics: tuple[str, int] = ("127.0.0.1", 0), automations: bool = True) -> None:
    import asyncio

    if api_url.startswith("http://"):
        # No TLS to verify on a plain-http API: skip loading the CA bundle for each client
        # Prefect opens (~0.1 s a run). Set before Prefect is imported: it reads settings once.
        os.environ.setdefault("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "true")
    from deployments.control import serve as serve_control

    _log_to_stderr("homelab.serve", "homelab.webhook")

    ui = api_url.removesuffix("/api")

    def ready() -> None:
        pid_file().write_text(str(os.getpid()))
        print(f"homelab serve: pid {os.getpid()}, inventory {inventory.absolute()}", flush=True)
        print(f"Prefect UI: {ui}/deployments (deploy-homelab > deploy > Run)", flush=True)
        if settings is not None:
            print(f"webhook: http://{host}:{port}/ (branch {settings.branch})", flush=True)
        if metrics[1]:
            print(f"metrics: http://{metrics[0]}:{metrics[1]}/metrics", flush=True)
        print(f"control socket: {control_socket.socket_path()}", flush=True)

    try:
        asyncio.run(serve_control(inventory, api_url, webhook=settings, webhook_host=host, webhook_port=port,
                                  ready=ready, metrics_host=metrics[0], metrics_port=metrics[1] or None,
                                  automations=automations))
    finally:
        if running_pid() == os.getpid():
            pid_file().unlink(missing_ok=True)


def start_background(argv: list[str], inventory: Path, api_url: str) -> int:
    args = [a for a in argv if a != "--detach"]
    with log_file().open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "deployments.cli", *args], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PREFECT_API_URL": api_url})
    deadline = time.monotonic() + DETACH_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"error: the control process exited with {process.returncode}; see {log_file()}", file=sys.stderr)
            return 4
        client = control_socket.connect(inventory)
        if client is not None:
            client.close()
            print(f"homelab serve: running in the background (pid {process.pid}), inventory {inventory.absolute()}")
            print(f"Prefect UI: {api_url.removesuffix('/api')}/deployments")
            print(f"log: {log_file()}   stop: homelab serve --stop")
            return 0
        time.sleep(0.2)
    process.terminate()
    print(f"error: the control process did not come up within {DETACH_WAIT_S}s; see {log_file()}", file=sys.stderr)
    return 4


def stop_background(timeout_s: float = 90) -> bool:
    pid = running_pid()
    if pid is None:
        print("homelab serve: not running")
        pid_file().unlink(missing_ok=True)
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"homelab serve: stopped (pid {pid})")
            pid_file().unlink(missing_ok=True)
            return True
        time.sleep(0.2)
    print(f"error: pid {pid} did not stop within {timeout_s:g}s", file=sys.stderr)
    return False

