"""``homelab secrets check|sync|rotate``: env files from Vault on every host."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from deployments.cli import common
from deployments.cli.app import secrets_app
from deployments.cli.common import DEFAULT_INVENTORY, InventoryOption, JsonOption, LockWaitOption
from deployments.cli.deploy import print_deploy_report
from model.errors import HomelabError


@secrets_app.command("check")
def secrets_check(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """Compare every host's env files with Vault by SHA-256; exit 1 and list the drifted ones."""
    from tasks.engine.secrets_sync import check_drift

    drift = common.run_command(check_drift(common.load(inventory)))
    if as_json:
        common.emit({"drift": [d.to_json() for d in drift]})
    else:
        for item in drift:
            print(f"{item.where}: {item.state}")
        print(f"{len(drift)} drifted env file(s)" if drift else "no drift: every env file matches Vault")
    raise typer.Exit(1 if drift else 0)


@secrets_app.command("sync")
def secrets_sync(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """Run the secrets-sync flow: rewrite every drifted env file from Vault (0600, atomic)."""
    desired, api_url = common.load_for_flow(inventory)
    report, ui = common.run_flow(desired, api_url, "flows.secrets", "sync_secrets", as_json,
                          dict(inventory=str(inventory.absolute())))
    if as_json:
        common.emit(report)
    else:
        for where in report["fixed"]:
            print(f"{where}: rewritten from Vault")
        print("no drift" if not report["fixed"] else f"fixed {len(report['fixed'])} env file(s)")
        print(f"Prefect UI: {ui}")
    common.exit_after_flush(0 if report["result"] == "success" else 1)


@secrets_app.command("rotate")
def secrets_rotate(path: str, key: str, inventory: InventoryOption = DEFAULT_INVENTORY,
                   lock_wait: LockWaitOption = 90, as_json: JsonOption = False) -> None:
    """Write a new random value for KEY at PATH and redeploy only the stacks that use it, all or
    nothing: their hosts are locked first, and if the health-gated redeploy fails, the stacks
    roll back and Vault gets the old value back (check-and-set)."""
    from tasks.engine.secret_rotation import stacks_to_rotate

    try:
        users = stacks_to_rotate(common.load(inventory), path, key, str(inventory))
    except HomelabError as exc:
        raise common.fail(exc) from None
    print(f"rotating {key} at {path}; redeploying {', '.join(users)}", file=sys.stderr)
    desired, api_url = common.load_for_flow(inventory, only=users)
    report, ui = common.run_flow(desired, api_url, "flows.secrets", "rotate_secret", as_json, dict(
        inventory=str(inventory.absolute()), path=path, key=key, lock_wait_s=lock_wait))
    if as_json:
        common.emit(report)
    else:
        print_deploy_report(report)
        rotated = report.get("rotated") or {}
        if rotated.get("reverted_version"):
            print(f"{key} at {path}: the redeploy failed; Vault holds the old value again "
                  f"(version {rotated['reverted_version']})")
        elif rotated:
            print(f"{key} at {path}: version {rotated['from_version']} -> {rotated['to_version']}")
        print(f"Prefect UI: {ui}")
    common.exit_after_flush(0 if report["result"] == "success" else 1)


@secrets_app.command("scrub")
def secrets_scrub(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False,
                  dry_run: Annotated[bool, typer.Option("--dry-run", help="only list the leftovers")] = False) -> None:
    """Remove files holding secrets that nothing needs any more, on every host: env files of
    stacks the inventory no longer places there, env files of release directories without a
    record, and stale temp files. Recorded releases of placed stacks stay (a rollback may need
    them). Each host is scrubbed under its deploy lock; removals are audited (paths only).
    Exit 0 when nothing is left (or all was removed)."""
    from tasks.engine.scrub import scrub_secrets

    hosts = common.run_command(scrub_secrets(common.load(inventory), dry_run=dry_run))
    if as_json:
        common.emit({"dry_run": dry_run, "hosts": [h.to_json() for h in hosts]})
    else:
        verb = "found" if dry_run else "removed"
        for h in hosts:
            for item in h.leftovers:
                print(f"{h.host}: {item.path} ({item.kind}, stack {item.stack}): {verb}")
            for item in h.failed:
                print(f"{h.host}: {item.path}: could not be removed")
            for stack in h.deployed:
                print(f"{h.host}: stack {stack} is no longer placed here but still deployed; "
                      "`homelab deploy --prune` removes it and its env files")
            if h.error:
                print(f"{h.host}: not scrubbed: {h.error}")
        found = sum(len(h.leftovers) for h in hosts)
        print(f"{found} leftover file(s) {verb}" if found else "no leftovers: no file holding a secret is unneeded")
    left = any(not h.clean for h in hosts) or (dry_run and any(h.leftovers for h in hosts))
    raise typer.Exit(1 if left else 0)
