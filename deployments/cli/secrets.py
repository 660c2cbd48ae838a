"""``homelab secrets check|sync|rotate``: env files from Vault on every host."""

from __future__ import annotations

import sys

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
    """Write a new random value for KEY at PATH (check-and-set), then redeploy only the stacks
    that use it, health-gated; if that fails they roll back (the old value stays in KV history)."""
    from tasks.engine.secret_rotation import rotate_secret

    try:
        desired = common.load(inventory)
        rotation = rotate_secret(desired, path, key, inventory_name=str(inventory))
    except HomelabError as exc:
        raise common.fail(exc) from None
    print(f"rotated {key} at {path}: version {rotation.from_version} -> {rotation.to_version}; redeploying "
          f"{', '.join(rotation.stacks)}", file=sys.stderr)
    api_url = common.prefect_api()
    report, ui = common.run_flow(desired, api_url, "flows.deploy", "deploy_homelab", as_json, dict(
        inventory=str(inventory.absolute()), only=rotation.stacks, lock_wait_s=lock_wait))
    report["rotated"] = rotation.to_json()
    if as_json:
        common.emit(report)
    else:
        print_deploy_report(report)
        print(f"Prefect UI: {ui}")
    common.exit_after_flush(0 if report["result"] == "success" else 1)
