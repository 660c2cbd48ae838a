"""``homelab plan``, ``deploy`` and ``status``."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Annotated, get_args

import typer

from deployments import flow_calls
from deployments.cli.app import app
from deployments.cli.common import (
    DEFAULT_INVENTORY,
    InventoryOption,
    JsonOption,
    LockWaitOption,
    OnlyOption,
    RefOption,
    RefreshOption,
    VerboseOption,
    emit,
    exit_after_flush,
    fail,
    finish,
    hand_over,
    load_for_flow,
    table,
)
from deployments.flow_calls import Outcome
from deployments.live_view import LiveView
from model.approval import Environment
from model.errors import UsageError
from model.policies import FailurePolicy

POLICIES = get_args(FailurePolicy)
ENVIRONMENTS = get_args(Environment)


@app.command()
def plan(inventory: InventoryOption = DEFAULT_INVENTORY, ref: RefOption = None, only: OnlyOption = None,
         refresh_images: RefreshOption = False, as_json: JsonOption = False) -> None:
    """Show, per phase, host and stack, what a deploy would do, and why. With
    --refresh-images the hosts pull the images first (no container changes)."""
    params = {"ref": ref, "only": only or None, "refresh_images": refresh_images}
    outcome = hand_over("plan", inventory, params) or asyncio.run(
        flow_calls.plan(inventory, ref, only, refresh_images))
    result = finish(outcome, as_json)
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
           verbose: VerboseOption = False,
           environment: Annotated[str, typer.Option(
               "--environment", "-e", help="production: staging, smoke tests, approval, then production; "
                                           "staging: stop after the smoke tests")] = "production",
           skip_staging: Annotated[bool, typer.Option(
               "--skip-staging", help="no staging copy and no smoke tests (audited)")] = False,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="pass the approval gate (audited)")] = False) -> None:
    """Run the deploy-homelab flow (tracked by the Prefect server) and print a result per stack.
    Exit 7 when the run was not approved (rejected or timed out): production is untouched."""
    if on_failure is not None and on_failure not in POLICIES:
        raise fail(UsageError(f"--on-failure must be one of {', '.join(POLICIES)}"))
    if environment not in ENVIRONMENTS:
        raise fail(UsageError(f"--environment must be one of {', '.join(ENVIRONMENTS)}"))
    params = dict(ref=ref, only=only or None, prune=prune, on_failure=on_failure, refresh_images=refresh_images,
                  lock_wait_s=lock_wait, environment=environment, skip_staging=skip_staging, yes=yes)
    view = LiveView.for_terminal(not as_json)
    outcome = hand_over("deploy", inventory, params, verbose=verbose, view=view) \
        or deploy_here(inventory, params, verbose=verbose, view=view)
    report = finish(outcome, as_json)
    if as_json:
        emit(report)
    else:
        print_deploy_report(report)
        if outcome.ui:
            print(f"\nPrefect UI: {outcome.ui}")
    exit_after_flush(outcome.exit_code)


def deploy_here(inventory: Path, params: dict, *, verbose: bool, view: LiveView | None) -> Outcome:
    """No control process: run the flow in this process (Prefect imported, SSH opened here)."""
    desired, api_url = load_for_flow(inventory, params["ref"], params["only"])

    async def run() -> Outcome:
        from tasks.engine import progress
        from tasks.engine.host_pool import prewarm, ssh_targets

        # Prefect takes over a second to import: open the SSH connections meanwhile.
        warming = asyncio.create_task(prewarm(ssh_targets(desired, all_hosts=True)))
        await asyncio.to_thread(importlib.import_module, "flows.deploy")
        await warming
        flow_calls.console_level(verbose)
        def say(text: str) -> None:
            if view:
                view.clear()
            print(text, file=sys.stderr, flush=True)

        with progress.listening(lambda p: view.update(p.to_json()) if view else None, say):
            return await flow_calls.deploy(api_url, {**params, "inventory": str(inventory.absolute())})

    try:
        return asyncio.run(run())
    finally:
        if view:
            view.clear()


def print_deploy_report(report: dict) -> None:
    if report["result"] == "not-approved":
        print(f"NOT APPROVED: {report.get('reason')}; production untouched (commit {report.get('commit')})")
        return
    rows = [[s["phase"], s["host"], s["stack"], s["action"], s["result"], f"{s['duration_s']:.1f}s",
             (s.get("error") or s.get("reason") or "")[:90]] for s in report["stacks"]]
    print(table(rows, ["PHASE", "HOST", "STACK", "ACTION", "RESULT", "TIME", "DETAIL"]))
    for failure in report.get("failures", []):
        print(f"\n--- {failure['stack']} on {failure['host']} failed ---\n{failure['error']}")
        if failure.get("probe_output"):
            print(f"health output:\n{failure['probe_output']}")
        if failure.get("logs"):
            print(f"container logs (tail):\n{failure['logs'][-3000:]}")
    for smoke in report.get("smoke", []):
        print(f"smoke {'ok  ' if smoke['ok'] else 'FAIL'} {smoke['stack']}: {smoke['check']}: {smoke['detail']}")
    where = f" [{report['environment']}]" if report.get("environment") else ""
    print(f"\n{report['result'].upper()}{where} in {report['wall_s']:.1f}s (commit {report.get('commit')})")


@app.command()
def status(inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """Each host's stacks: release, commit, health and containers. Exit 1 if any host is
    unreachable or any stack unhealthy."""
    outcome = hand_over("status", inventory, {}) or asyncio.run(flow_calls.status(inventory))
    result = finish(outcome, as_json)
    bad = outcome.exit_code != 0
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
