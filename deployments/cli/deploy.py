"""``homelab plan``, ``deploy`` and ``status``."""

from __future__ import annotations

from typing import Annotated, get_args

import typer

from deployments.cli.app import app
from deployments.cli.common import (
    DEFAULT_INVENTORY,
    InventoryOption,
    JsonOption,
    LockWaitOption,
    OnlyOption,
    RefOption,
    RefreshOption,
    emit,
    exit_after_flush,
    fail,
    load,
    load_for_flow,
    run_command,
    run_flow,
    table,
)
from model.errors import UsageError
from model.inventory import FailurePolicy

POLICIES = get_args(FailurePolicy)


@app.command()
def plan(inventory: InventoryOption = DEFAULT_INVENTORY, ref: RefOption = None, only: OnlyOption = None,
         refresh_images: RefreshOption = False, as_json: JsonOption = False) -> None:
    """Show, per phase, host and stack, what a deploy would do, and why. With
    --refresh-images the hosts pull the images first (no container changes)."""
    from tasks.engine.preview import preview_plan

    async def run() -> dict:
        return (await preview_plan(load(inventory, ref, only), full=not only,
                                   refresh_images=refresh_images)).to_json()

    result = run_command(run())
    if as_json:
        emit(result)
        return
    rows = [[c["phase"], c["host"], c["stack"], c["action"], c["reason"]] for c in result["changes"]]
    print(table(rows, ["PHASE", "HOST", "STACK", "ACTION", "REASON"]))
    counts = {a: sum(c["action"] == a for c in result["changes"]) for a in ("create", "update", "unchanged", "remove")}
    print("\n" + ", ".join(f"{n} {a}" for a, n in counts.items()))


@app.command()
def deploy(inventory: InventoryOption = DEFAULT_INVENTORY, ref: RefOption = None, only: OnlyOption = None,
           prune: Annotated[bool, typer.Option(help="also take down stacks the inventory no longer places")] = False,
           on_failure: Annotated[str | None, typer.Option(
               "--on-failure", help="override every phase's policy: halt|rollback-phase|rollback-all|continue")] = None,
           refresh_images: RefreshOption = False, lock_wait: LockWaitOption = 90, as_json: JsonOption = False,
           ) -> None:
    """Run the deploy-homelab flow (tracked by the Prefect server) and print a result per stack."""
    if on_failure is not None and on_failure not in POLICIES:
        raise fail(UsageError(f"--on-failure must be one of {', '.join(POLICIES)}"))
    desired, api_url = load_for_flow(inventory, ref, only)
    report, ui = run_flow(desired, api_url, "flows.deploy", "deploy_homelab", as_json, dict(
        inventory=str(inventory.absolute()), ref=ref, only=only or None, prune=prune, on_failure=on_failure,
        refresh_images=refresh_images, lock_wait_s=lock_wait))
    if as_json:
        emit(report)
    else:
        print_deploy_report(report)
        if ui:
            print(f"\nPrefect UI: {ui}")
    exit_after_flush(0 if report["result"] == "success" else 1)


def print_deploy_report(report: dict) -> None:
    rows = [[s["phase"], s["host"], s["stack"], s["action"], s["result"], f"{s['duration_s']:.1f}s",
             (s.get("error") or s.get("reason") or "")[:90]] for s in report["stacks"]]
    print(table(rows, ["PHASE", "HOST", "STACK", "ACTION", "RESULT", "TIME", "DETAIL"]))
    for failure in report.get("failures", []):
        print(f"\n--- {failure['stack']} on {failure['host']} failed ---\n{failure['error']}")
        if failure.get("probe_output"):
            print(f"health output:\n{failure['probe_output']}")
        if failure.get("logs"):
            print(f"container logs (tail):\n{failure['logs'][-3000:]}")
    print(f"\n{report['result'].upper()} in {report['wall_s']:.1f}s (commit {report.get('commit')})")


@app.command()
def status(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """Each host's stacks: release, commit, health and containers. Exit 1 if any host is
    unreachable or any stack unhealthy."""
    from tasks.engine.status import collect_status

    async def run() -> dict:
        return await collect_status(load(inventory))

    result = run_command(run())
    bad = any(not f["reachable"] or not all(s["healthy"] for s in f["stacks"].values())
              for f in result["hosts"].values())
    if as_json:
        emit(result)
        raise typer.Exit(1 if bad else 0)
    rows = []
    for host, facts in result["hosts"].items():
        if not facts["reachable"]:
            rows.append([host, "-", "-", "-", "UNREACHABLE", facts.get("error", "")[:80]])
        for stack, info in facts["stacks"].items():
            rows.append([host, stack, info["release"] or "-", (info["commit"] or "-")[:12],
                         "healthy" if info["healthy"] else "NOT HEALTHY", f"{len(info['containers'])} container(s)"])
    print(table(rows, ["HOST", "STACK", "RELEASE", "COMMIT", "HEALTH", "CONTAINERS"]))
    raise typer.Exit(1 if bad else 0)
