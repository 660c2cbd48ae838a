"""``homelab import``: adopt the compose projects already running on a host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployments.cli.app import app
from deployments.cli.common import DEFAULT_INVENTORY, InventoryOption, JsonOption, emit, run_command


@app.command("import")
def import_(host: Annotated[str, typer.Option("--host", help="the inventory host to read")],
            into: Annotated[Path, typer.Option("--into", help="folder to write stacks/<project>/ and the fragment")],
            project: Annotated[list[str] | None, typer.Option("--project", help="only these projects (repeatable)")]
            = None,
            inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """Write the compose projects running on a host as stack folders plus an inventory
    fragment (homelab.fragment.yaml). Env files with secrets are listed, never copied."""
    from tasks.engine.adopt import FRAGMENT, import_projects

    async def run() -> list:
        from model.desired import DesiredState
        from model.inventory_loader import load_inventory

        inv = load_inventory(inventory)
        desired = DesiredState(inventory=inv, source=str(inventory), commit=None, stacks={},
                               inventory_dir=inventory.parent)
        into.mkdir(parents=True, exist_ok=True)
        return await import_projects(desired, host, project or None, into)

    done = run_command(run())
    if as_json:
        emit({"fragment": str(into / FRAGMENT), "stacks": [
            {"stack": d.stack, "files": d.files, "notes": d.notes, "entry": d.entry} for d in done]})
        return
    for item in done:
        print(f"{item.stack}: {len(item.files)} file(s) -> {into / 'stacks' / item.stack}")
        for note in item.notes:
            print(f"  note: {note}")
    print(f"inventory fragment: {into / FRAGMENT}")
