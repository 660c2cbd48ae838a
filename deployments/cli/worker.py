"""``homelab worker install|upgrade|status``: the hosts' own Prefect workers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from deployments.cli.app import app
from deployments.cli.common import load, prefect_api, run_command, table

worker_app = typer.Typer(no_args_is_help=True, help="Prefect workers on the hosts (dispatch: worker).")
app.add_typer(worker_app, name="worker")

Inventory = Annotated[Path, typer.Option("-i", "--inventory", help="inventory file")]
Host = Annotated[str, typer.Option("--host", help="the inventory's name of the host")]
ApiUrl = Annotated[str | None, typer.Option(
    "--api-url", help="the Prefect API as the host reaches it (default: this machine's PREFECT_API_URL)")]
Python = Annotated[str | None, typer.Option(
    "--python", help="a Python on the host that has Prefect (default: a venv made there with pip)")]


def _install(inventory: Path, host: str, api_url: str | None, python: str | None, renew_key: bool) -> None:
    url = prefect_api()
    desired = load(inventory)
    from deployments import workers

    row = run_command(workers.install(desired, host, api_url=api_url or os.environ.get("PREFECT_API_URL", url),
                                      python=python, renew_key=renew_key))
    print(f"{row.worker}: online on pool {row.pool}")


@worker_app.command("install")
def install(inventory: Inventory, host: Host, api_url: ApiUrl = None, python: Python = None,
            renew_key: Annotated[bool, typer.Option(help="a new wire key for the host")] = False) -> None:
    """Set up the host's worker over SSH (once; afterwards the host pulls its work)."""
    _install(inventory, host, api_url, python, renew_key)


@worker_app.command("upgrade")
def upgrade(inventory: Inventory, host: Host, api_url: ApiUrl = None, python: Python = None) -> None:
    """Bring the host's worker to this orchestrator's code version (its key is kept)."""
    _install(inventory, host, api_url, python, renew_key=False)


@worker_app.command("status")
def status(inventory: Inventory, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each pool's workers: status, last heartbeat, version (and whether it is this one's)."""
    prefect_api()
    desired = load(inventory)
    from deployments import workers

    rows = run_command(workers.status(desired))
    if as_json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return
    print(table([[r.pool, r.host, r.dispatch, r.worker or "-", r.status,
                  r.last_heartbeat.isoformat(timespec="seconds") if r.last_heartbeat else "-",
                  (r.version or "-") + ("" if r.current or not r.version else " (not this version)")]
                 for r in rows], ["pool", "host", "dispatch", "worker", "status", "last heartbeat", "version"]))
