"""``homelab rollback``, ``releases`` and ``unlock``: release history and what guards it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli.app import app
from deployments.cli.common import (
    DEFAULT_INVENTORY,
    InventoryOption,
    JsonOption,
    LockWaitOption,
    emit,
    exit_after_flush,
    load,
    load_for_flow,
    run_command,
    run_flow,
    table,
)

if TYPE_CHECKING:
    from tasks.host_commands.lock import LockSnapshot


@app.command()
def rollback(inventory: InventoryOption = DEFAULT_INVENTORY,
             host: Annotated[list[str] | None, typer.Option("--host", help="only these hosts (repeatable)")] = None,
             stack: Annotated[list[str] | None, typer.Option("--stack", help="only these stacks (repeatable)")] = None,
             to: Annotated[str | None, typer.Option("--to", help="release id (default: previous healthy)")] = None,
             lock_wait: LockWaitOption = 90, as_json: JsonOption = False) -> None:
    """Return stacks to a recorded release, exactly (same compose file and image ids), health-gated."""
    desired, api_url = load_for_flow(inventory)
    report, ui = run_flow(desired, api_url, "flows.rollback", "rollback_homelab", as_json, dict(
        inventory=str(inventory.absolute()), hosts=host or None, stacks=stack or None, to_release=to,
        lock_wait_s=lock_wait))
    if as_json:
        emit(report)
    else:
        rows = [[r["host"], r["stack"], r["from"] or "-", r["to"] or "-", r["result"], r["detail"][:80]]
                for r in report["stacks"]]
        print(table(rows, ["HOST", "STACK", "FROM", "TO", "RESULT", "DETAIL"]))
        if ui:
            print(f"\nPrefect UI: {ui}")
    exit_after_flush(0 if report["result"] == "success" else 1)


@app.command()
def releases(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """List the release records on every host (newest first; * marks the current one)."""
    from tasks.engine.release_history import collect_releases

    result = run_command(collect_releases(load(inventory)))
    if as_json:
        emit(result)
        return
    rows = [[host, stack, ("* " if r["id"] == info["current"] else "  ") + r["id"], r["status"],
             (r["commit"] or "-")[:12], r["created_at"]]
            for host, stacks in result["hosts"].items() for stack, info in stacks.items() for r in info["releases"]]
    print(table(rows, ["HOST", "STACK", "RELEASE", "STATUS", "COMMIT", "CREATED"]))


@app.command()
def unlock(inventory: InventoryOption = DEFAULT_INVENTORY,
           host: Annotated[list[str], typer.Option("--host", help="host whose deploy lock to break")] = ...,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (it asks only on a terminal)")] = False,
           ) -> None:
    """Show a host's deploy lock owner, then break the lock (audited) only if that owner still holds
    it. Use only if its owner is gone."""
    from tasks.engine.locks import describe_owner, force_unlock

    ask = not yes and sys.stdin.isatty()

    def confirm(name: str, shown: LockSnapshot) -> bool:
        print(f"{name}: deploy lock held by {describe_owner(shown.owner)}")
        return typer.confirm(f"{name}: remove this lock?") if ask else True

    results = run_command(force_unlock(load(inventory), host, confirm))
    for result in results.values():
        print(f"{result.host}: {result.message}")
    outcomes = {r.outcome for r in results.values()}
    raise typer.Exit(5 if "changed" in outcomes else 1 if "failed" in outcomes else 0)
