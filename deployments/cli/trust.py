"""``homelab trust init|check``: the trust file that no ref or inventory can change on its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from deployments.cli.app import trust_app
from deployments.cli.common import DEFAULT_INVENTORY, InventoryOption, RefOption, fail
from model.errors import HomelabError, UsageError

BranchOption = Annotated[list[str] | None, typer.Option(
    "--branch", help="protected branch a ref must be reachable from (repeatable); default: the default branch")]


@trust_app.command("init")
def trust_init(inventory: InventoryOption = DEFAULT_INVENTORY, branch: BranchOption = None,
               force: Annotated[bool, typer.Option("--force", help="replace an existing trust file")] = False,
               ) -> None:
    """Write a trust file that allows exactly what INVENTORY asks for today (hosts, SSH settings,
    Vault paths). Review it: from then on, a ref or inventory that asks for more is refused."""
    from model.inventory_loader import load_inventory
    from model.trust import check_outside_repo, dump, pin, trust_path

    path = trust_path()
    try:
        if path.exists() and not force:
            raise UsageError(f"trust file {path} exists; review it, or pass --force to replace it")
        check_outside_repo(path, inventory)
        pinned = pin(load_inventory(inventory, str(inventory)), branch or None)
    except HomelabError as exc:
        raise fail(exc) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, dump(pinned))
    print(f"wrote {path}: {len(pinned.hosts)} host(s), Vault paths for {len(pinned.vault_paths)} stack(s); "
          "review it before `homelab serve`", file=sys.stderr)
    print(path)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (0644: others may read what is trusted, only the owner change it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


@trust_app.command("check")
def trust_check(inventory: InventoryOption = DEFAULT_INVENTORY, ref: RefOption = None) -> None:
    """Say whether INVENTORY (at REF) passes the trust file, without contacting any host; exit 2 if not."""
    from model.desired import load_desired_state
    from model.trust import trust_path

    try:
        desired = load_desired_state(inventory, ref)
    except HomelabError as exc:
        raise fail(exc) from None
    path = trust_path()
    print(f"{desired.source}: admitted" + (f" by {path}" if path.exists() else f" (no trust file at {path})"))
