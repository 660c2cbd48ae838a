"""What every command shares: option types, errors to exit codes, JSON output, running a flow.

Exit codes (each error class carries its own, see ``model/errors.py``): 0 success; 1 the run
failed (a stack is not healthy); 2 invalid inventory or usage; 3 pre-flight failed or a host is
unreachable; 4 the Prefect server failed; 5 a host's deploy lock is held; 6 Vault failed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from deployments import control_socket, server
from deployments.cli.app import app
from deployments.flow_calls import Outcome
from deployments.live_view import LiveView
from model.errors import DeployFailed, HomelabError, ServerError

if TYPE_CHECKING:
    from model.desired import DesiredState

DEFAULT_INVENTORY = Path(os.environ.get("HOMELAB_INVENTORY", "deployments/homelab.yaml"))
InventoryOption = Annotated[Path, typer.Option("--inventory", "-i", help="inventory YAML (env HOMELAB_INVENTORY)")]
RefOption = Annotated[str | None, typer.Option("--ref", help="deploy the inventory as it was at this git commit/tag")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output (stable field names)")]
OnlyOption = Annotated[list[str] | None, typer.Option("--only", help="limit to these stacks (repeatable)")]
RefreshOption = Annotated[bool, typer.Option(
    "--refresh-images", help="pull every stack's images again; stacks whose tags moved are updated")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="also print the remote command log")]
LockWaitOption = Annotated[float, typer.Option("--lock-wait", help="seconds to wait for another run's host locks")]

T = TypeVar("T")
_debug = False


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    global _debug
    _debug = debug


def fail(exc: BaseException) -> typer.Exit:
    """Print the error's one-line message (and with --debug its traceback); exit with its code."""
    if _debug:
        traceback.print_exception(exc)
    print(f"error: {exc}", file=sys.stderr)
    return typer.Exit(getattr(exc, "exit_code", 1))


def emit(data: dict) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def run_command(coro: Coroutine[object, object, T]) -> T:
    """Run a command's coroutine; a HomelabError becomes its one-line message and exit code."""
    try:
        return asyncio.run(coro)
    except HomelabError as exc:
        raise fail(exc) from None


def load(inventory: Path, ref: str | None = None, only: list[str] | None = None) -> DesiredState:
    from model.desired import load_desired_state  # not at import: a warm-path CLI never needs it

    return load_desired_state(inventory, ref, only or None)


def load_for_flow(inventory: Path, ref: str | None = None, only: list[str] | None = None) -> tuple[DesiredState, str]:
    """The desired state and the Prefect API to run a flow against. A bad inventory fails here,
    before any server or host is contacted."""
    try:
        desired = load(inventory, ref, only)
    except HomelabError as exc:
        raise fail(exc) from None
    return desired, prefect_api()


def prefect_api() -> str:
    """The Prefect API URL, starting the local server if none is configured."""
    try:
        return server.ensure_api()
    except HomelabError as exc:
        raise fail(exc) from None


def run_flow(desired: DesiredState, api_url: str, module: str, name: str, as_json: bool,
             params: dict) -> tuple[dict, str | None]:
    """Run a flow in this process against the Prefect API; returns (report JSON, UI link).
    A flow that ended without a report (pre-flight, lock, ...) exits here with its error."""

    async def run() -> tuple[object, str | None]:
        from tasks.engine.host_pool import prewarm, ssh_targets

        # Prefect takes over a second to import: open the SSH connections meanwhile.
        warming = asyncio.create_task(prewarm(ssh_targets(desired, all_hosts=True)))
        flows = await asyncio.to_thread(importlib.import_module, module)
        await warming
        state = await getattr(flows, name)(**params, return_state=True)
        return await state.aresult(raise_on_failure=False), state.state_details.flow_run_id

    value, flow_run_id = asyncio.run(run())
    ui = api_url.removesuffix("/api") + f"/runs/flow-run/{flow_run_id}" if flow_run_id else None
    if isinstance(value, DeployFailed):
        return value.report.to_json(), ui
    if isinstance(value, dict):
        return value, ui
    error = value if isinstance(value, BaseException) else RuntimeError(f"unexpected flow result: {value!r}")
    if as_json:
        emit({"result": "failed", "flow_run_id": str(flow_run_id), "error": str(error), "stacks": []})
    exc = fail(error)
    if ui:
        print(f"Prefect UI: {ui}", file=sys.stderr)
    raise exc


def hand_over(command: str, inventory: Path, params: dict, *, verbose: bool = False,
              view: LiveView | None = None) -> Outcome | None:
    """The control process's outcome if ``homelab serve`` runs for this inventory (warm SSH,
    no Prefect import here), else None: the caller then does the work in this process."""
    with control_socket.connected(inventory) as client:
        if client is None:
            return None
        try:
            return Outcome.from_json(client.call(
                command, inventory.absolute(), params, verbose=verbose,
                on_progress=view.update if view else None, on_log=lambda line: print(line, file=sys.stderr)))
        except (ConnectionError, OSError, ValueError) as exc:
            raise fail(ServerError(f"control process: {exc}")) from None
        finally:
            if view:
                view.clear()


def finish(outcome: Outcome, as_json: bool) -> dict:
    """An outcome without a result exits here with its error (JSON too with --json)."""
    if outcome.result is not None:
        return outcome.result
    if as_json:
        emit({"result": "failed", "flow_run_id": outcome.flow_run_id, "error": outcome.error, "stacks": []})
    print(f"error: {outcome.error}", file=sys.stderr)
    if outcome.ui:
        print(f"Prefect UI: {outcome.ui}", file=sys.stderr)
    exit_after_flush(outcome.exit_code)
    raise AssertionError("unreachable")


def exit_after_flush(code: int) -> None:
    """Deliver Prefect's pending logs and events, then exit without the ~0.4 s interpreter
    teardown of Prefect's module graph (a third of a no-op deploy)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if "prefect" not in sys.modules:  # the control process ran it: nothing of Prefect's to flush
        os._exit(code)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain fixed-width text table for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
