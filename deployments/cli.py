"""The ``homelab`` command.

Exit codes: 0 success; 1 deploy failed (a stack is not healthy); 2 invalid inventory or
usage; 3 a host failed pre-flight or is unreachable; 4 the Prefect server failed.
Prefect is imported only by the commands that run flows, so ``plan`` and ``status`` stay fast.
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
from typing import Annotated, TypeVar, get_args

import typer

from deployments import server
from deployments.desired import DesiredState, load_desired_state
from deployments.inventory import FailurePolicy
from tasks.errors import DeployFailed, HomelabError, PreflightFailed, UsageError
from tasks.report import table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Health-gated, phased Docker Compose deploys of the homelab.")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server (127.0.0.1:4200).")
lab_app = typer.Typer(no_args_is_help=True, help="The simulated homelab (network namespaces on this machine).")
app.add_typer(server_app, name="server")
app.add_typer(lab_app, name="lab")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(audit_app, name="audit")
secrets_app = typer.Typer(no_args_is_help=True, help="Secrets from Vault: drift check, sync, rotation.")
app.add_typer(secrets_app, name="secrets")

DEFAULT_INVENTORY = os.environ.get("HOMELAB_INVENTORY", "deployments/homelab.yaml")
Inventory = Annotated[Path, typer.Option("--inventory", "-i", help="inventory YAML (env HOMELAB_INVENTORY)")]
Ref = Annotated[str | None, typer.Option("--ref", help="deploy the inventory as it was at this git commit/tag")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output (stable field names)")]
Only = Annotated[list[str] | None, typer.Option("--only", help="limit to these stacks (repeatable)")]
LockWait = Annotated[float, typer.Option("--lock-wait", help="seconds to wait for another run's host locks")]

_debug = False
T = TypeVar("T")
POLICIES = get_args(FailurePolicy)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    global _debug
    _debug = debug


def _fail(exc: BaseException) -> typer.Exit:
    if _debug:
        traceback.print_exception(exc)
    print(f"error: {exc}", file=sys.stderr)
    return typer.Exit(getattr(exc, "exit_code", 1))


def _emit(data: dict) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _run(coro: Coroutine[object, object, T]) -> T:
    """Run a command's coroutine; a HomelabError becomes its one-line message and exit code."""
    try:
        return asyncio.run(coro)
    except HomelabError as exc:
        raise _fail(exc) from None


def _load(inventory: Path, ref: str | None, only: list[str] | None = None) -> DesiredState:
    return load_desired_state(inventory, ref, only or None)


@app.command()
def plan(inventory: Inventory = Path(DEFAULT_INVENTORY), ref: Ref = None, only: Only = None,
         as_json: Json = False) -> None:
    """Show, per phase, host and stack, what a deploy would do, and why."""
    from tasks.plan import make_plan
    from tasks.remote import HostPool
    from tasks.survey import ssh_targets, survey_hosts
    from tasks.vaultsync import resolve_secrets

    async def run() -> dict:
        desired = resolve_secrets(_load(inventory, ref, only))
        async with HostPool(ssh_targets(desired)) as pool:
            surveys, problems = await survey_hosts(pool, desired)
        if problems:
            raise PreflightFailed(problems)
        return make_plan(desired, surveys, full=not only).to_json()

    result = _run(run())
    if as_json:
        _emit(result)
        return
    rows = [[c["phase"], c["host"], c["stack"], c["action"], c["reason"]] for c in result["changes"]]
    print(table(rows, ["PHASE", "HOST", "STACK", "ACTION", "REASON"]))
    counts = {a: sum(c["action"] == a for c in result["changes"]) for a in ("create", "update", "unchanged", "remove")}
    print("\n" + ", ".join(f"{n} {a}" for a, n in counts.items()))


@app.command()
def deploy(inventory: Inventory = Path(DEFAULT_INVENTORY), ref: Ref = None, only: Only = None,
           prune: Annotated[bool, typer.Option(help="also take down stacks the inventory no longer places")] = False,
           on_failure: Annotated[str | None, typer.Option(
               "--on-failure", help="override every phase's policy: halt|rollback-phase|rollback-all|continue")] = None,
           lock_wait: LockWait = 90, as_json: Json = False) -> None:
    """Run the deploy-homelab flow (tracked by the Prefect server) and print a result per stack."""
    if on_failure is not None and on_failure not in POLICIES:
        raise _fail(UsageError(f"--on-failure must be one of {', '.join(POLICIES)}"))
    try:
        desired = _load(inventory, ref, only)  # a bad inventory fails here, before any server or host is contacted
        api_url = server.ensure_api()
    except HomelabError as exc:
        raise _fail(exc) from None

    report, ui = _run_flow(desired, api_url, "flows.deploy", "deploy_homelab", as_json, dict(
        inventory=str(inventory.absolute()), ref=ref, only=only or None, prune=prune, on_failure=on_failure,
        lock_wait_s=lock_wait))
    if as_json:
        _emit(report)
    else:
        _print_report(report)
        if ui:
            print(f"\nPrefect UI: {ui}")
    _exit_after_flush(0 if report["result"] == "success" else 1)


def _run_flow(desired: DesiredState, api_url: str, module: str, name: str, as_json: bool,
              params: dict) -> tuple[dict, str | None]:
    """Run a flow in this process against the Prefect API; returns (report, UI link).
    A flow that ended without a report (pre-flight, lock, ...) exits here with its error."""

    async def run() -> tuple[object, str | None]:
        from tasks.remote import prewarm
        from tasks.survey import ssh_targets

        # Prefect takes over a second to import: open the SSH connections meanwhile.
        warming = asyncio.create_task(prewarm(ssh_targets(desired, all_hosts=True)))
        flows = await asyncio.to_thread(importlib.import_module, module)
        await warming
        state = await getattr(flows, name)(**params, return_state=True)
        return await state.aresult(raise_on_failure=False), state.state_details.flow_run_id

    value, flow_run_id = asyncio.run(run())
    ui = api_url.removesuffix("/api") + f"/runs/flow-run/{flow_run_id}" if flow_run_id else None
    if isinstance(value, DeployFailed):
        report = value.report
        return (report if isinstance(report, dict) else report.to_json()), ui
    if isinstance(value, dict):
        return value, ui
    error = value if isinstance(value, BaseException) else RuntimeError(f"unexpected flow result: {value!r}")
    if as_json:
        _emit({"result": "failed", "flow_run_id": str(flow_run_id), "error": str(error), "stacks": []})
    exc = _fail(error)
    if ui:
        print(f"Prefect UI: {ui}", file=sys.stderr)
    raise exc


def _exit_after_flush(code: int) -> None:
    """Deliver Prefect's pending logs and events, then exit without the ~0.4 s interpreter
    teardown of Prefect's module graph (a third of a no-op deploy)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_report(report: dict) -> None:
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
def status(inventory: Inventory = Path(DEFAULT_INVENTORY), as_json: Json = False) -> None:
    """Each host's stacks: release, commit, health and containers. Exit 1 if any host is
    unreachable or any stack unhealthy."""
    from tasks.status import collect_status

    async def run() -> dict:
        return await collect_status(_load(inventory, None))

    result = _run(run())
    bad = any(not f["reachable"] or not all(s["healthy"] for s in f["stacks"].values())
              for f in result["hosts"].values())
    if as_json:
        _emit(result)
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


@app.command()
def rollback(inventory: Inventory = Path(DEFAULT_INVENTORY),
             host: Annotated[list[str] | None, typer.Option("--host", help="only these hosts (repeatable)")] = None,
             stack: Annotated[list[str] | None, typer.Option("--stack", help="only these stacks (repeatable)")] = None,
             to: Annotated[str | None, typer.Option("--to", help="release id (default: previous healthy)")] = None,
             lock_wait: LockWait = 90, as_json: Json = False) -> None:
    """Return stacks to a recorded release, exactly (same compose file and image ids), health-gated."""
    try:
        desired = _load(inventory, None)
        api_url = server.ensure_api()
    except HomelabError as exc:
        raise _fail(exc) from None
    report, ui = _run_flow(desired, api_url, "flows.rollback", "rollback_homelab", as_json, dict(
        inventory=str(inventory.absolute()), hosts=host or None, stacks=stack or None, to_release=to,
        lock_wait_s=lock_wait))
    if as_json:
        _emit(report)
    else:
        rows = [[r["host"], r["stack"], r["from"] or "-", r["to"] or "-", r["result"], r["detail"][:80]]
                for r in report["stacks"]]
        print(table(rows, ["HOST", "STACK", "FROM", "TO", "RESULT", "DETAIL"]))
        if ui:
            print(f"\nPrefect UI: {ui}")
    _exit_after_flush(0 if report["result"] == "success" else 1)


@app.command()
def releases(inventory: Inventory = Path(DEFAULT_INVENTORY), as_json: Json = False) -> None:
    """List the release records on every host (newest first; * marks the current one)."""
    from tasks.history import list_releases, parse_releases_listing
    from tasks.remote import HostPool
    from tasks.survey import ssh_targets

    async def run() -> dict:
        desired = _load(inventory, None)
        out: dict = {"hosts": {}}
        async with HostPool(ssh_targets(desired, all_hosts=True)) as pool:
            for host in desired.inventory.hosts:
                listing = await pool[host].run(list_releases(desired.inventory.state_dir(host)))
                current, records = parse_releases_listing(listing.stdout)
                out["hosts"][host] = {stack: {"current": current.get(stack), "releases": [
                    {"id": r.id, "status": r.status, "commit": r.commit, "created_at": r.created_at,
                     "flow_run_id": r.flow_run_id} for r in records.get(stack, [])]} for stack in sorted(current)}
        return out

    result = _run(run())
    if as_json:
        _emit(result)
        return
    rows = [[host, stack, ("* " if r["id"] == info["current"] else "  ") + r["id"], r["status"],
             (r["commit"] or "-")[:12], r["created_at"]]
            for host, stacks in result["hosts"].items() for stack, info in stacks.items() for r in info["releases"]]
    print(table(rows, ["HOST", "STACK", "RELEASE", "STATUS", "COMMIT", "CREATED"]))


@app.command()
def unlock(inventory: Inventory = Path(DEFAULT_INVENTORY),
           host: Annotated[list[str], typer.Option("--host", help="host whose deploy lock to break")] = ...) -> None:
    """Force-break a host's deploy lock (recorded in the audit log). Use only if its owner is gone."""
    from tasks import audit
    from tasks.locks import break_lock, parse_owner
    from tasks.remote import HostPool
    from tasks.survey import ssh_targets

    async def run() -> None:
        desired = _load(inventory, None)
        unknown = [h for h in host if h not in desired.inventory.hosts]
        if unknown:
            raise UsageError(f"unknown host(s): {', '.join(unknown)}")
        async with HostPool(t for t in ssh_targets(desired, all_hosts=True) if t.name in host) as pool:
            for name in host:
                state_dir = desired.inventory.state_dir(name)
                owner = parse_owner((await pool[name].run(["cat", f"{state_dir}/lock/owner.json"], check=False)).stdout)
                await pool[name].run(break_lock(state_dir))
                audit.append("lock.forced", host=name, owner=owner)
                print(f"{name}: lock removed" + (f" (was {owner.get('flow_run_id')})" if owner else " (was free)"))

    _run(run())


@secrets_app.command("check")
def secrets_check(inventory: Inventory = Path(DEFAULT_INVENTORY), as_json: Json = False) -> None:
    """Compare every host's env files with Vault by SHA-256; exit 1 and list the drifted ones."""
    from tasks.remote import HostPool
    from tasks.survey import ssh_targets
    from tasks.vaultsync import find_drift, resolve_secrets

    async def run() -> list:
        desired = resolve_secrets(_load(inventory, None))
        async with HostPool(ssh_targets(desired)) as pool:
            return await find_drift(pool, desired)

    drift = _run(run())
    if as_json:
        _emit({"drift": [{"host": d.host, "stack": d.stack, "file": d.file, "state": d.state} for d in drift]})
    else:
        for item in drift:
            print(f"{item.where}: {item.state}")
        print(f"{len(drift)} drifted env file(s)" if drift else "no drift: every env file matches Vault")
    raise typer.Exit(1 if drift else 0)


@secrets_app.command("sync")
def secrets_sync(inventory: Inventory = Path(DEFAULT_INVENTORY), as_json: Json = False) -> None:
    """Run the secrets-sync flow: rewrite every drifted env file from Vault (0600, atomic)."""
    try:
        desired = _load(inventory, None)
        api_url = server.ensure_api()
    except HomelabError as exc:
        raise _fail(exc) from None
    report, ui = _run_flow(desired, api_url, "flows.secrets", "sync_secrets", as_json,
                           dict(inventory=str(inventory.absolute())))
    if as_json:
        _emit(report)
    else:
        for where in report["fixed"]:
            print(f"{where}: rewritten from Vault")
        print("no drift" if not report["fixed"] else f"fixed {len(report['fixed'])} env file(s)")
        print(f"Prefect UI: {ui}")
    _exit_after_flush(0 if report["result"] == "success" else 1)


@secrets_app.command("rotate")
def secrets_rotate(path: str, key: str, inventory: Inventory = Path(DEFAULT_INVENTORY),
                   lock_wait: LockWait = 90, as_json: Json = False) -> None:
    """Write a new random value for KEY at PATH (check-and-set), then redeploy only the stacks
    that use it, health-gated; if that fails they roll back (the old value stays in KV history)."""
    from tasks import audit
    from tasks.secrets import random_secret
    from tasks.vaultsync import open_reader

    try:
        desired = _load(inventory, None)
        users = [s.name for s in desired.stacks.values() if any(r.path == path and key in r.keys for r in s.secrets)]
        if not users:
            raise UsageError(f"no stack in {inventory} uses {key} at {path}")
        reader = open_reader(desired.inventory, users)
        data, version = reader.read(path)
        new_version = reader.write_cas(path, {**data, key: random_secret()}, cas=version)
        audit.append("secret.rotated", path=path, key=key, from_version=version, to_version=new_version, stacks=users)
        print(f"rotated {key} at {path}: version {version} -> {new_version}; redeploying {', '.join(users)}",
              file=sys.stderr)
        api_url = server.ensure_api()
    except HomelabError as exc:
        raise _fail(exc) from None
    report, ui = _run_flow(desired, api_url, "flows.deploy", "deploy_homelab", as_json, dict(
        inventory=str(inventory.absolute()), only=users, lock_wait_s=lock_wait))
    report["rotated"] = {"path": path, "key": key, "from_version": version, "to_version": new_version}
    if as_json:
        _emit(report)
    else:
        _print_report(report)
        print(f"Prefect UI: {ui}")
    _exit_after_flush(0 if report["result"] == "success" else 1)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 if any record was changed or removed."""
    from tasks import audit

    problems = audit.verify()
    for problem in problems:
        print(problem)
    print(f"{audit.audit_path()}: {'TAMPERED' if problems else 'ok'}")
    raise typer.Exit(1 if problems else 0)


@server_app.command("up")
def server_up() -> None:
    """Start the local Prefect server (or reuse the running one)."""
    try:
        url = server.up()
    except HomelabError as exc:
        raise _fail(exc) from None
    print(f"Prefect API {url}  UI {server.UI_URL}")


@server_app.command("down")
def server_down() -> None:
    """Stop the local Prefect server started by `homelab server up`."""
    print("stopped" if server.down() else "not running")


@lab_app.command("up")
def lab_up() -> None:
    """Create the simulated homelab; the last line printed is the lab inventory's path."""
    from lab import configrepo, manager

    manager.up()
    print(configrepo.ensure())


@lab_app.command("down")
def lab_down() -> None:
    """Remove every namespace, process, mount and rule the lab created."""
    from lab import manager

    manager.down()


@lab_app.command("status")
def lab_status(as_json: Json = False) -> None:
    from lab import manager

    result = manager.status()
    if as_json:
        _emit(result)
        return
    rows = [[h, s["address"], _yes(s["up"]), _yes(s["sshd"]), _yes(s["engine"])] for h, s in result.items()]
    print(table(rows, ["HOST", "ADDRESS", "UP", "SSHD", "ENGINE"]))


@lab_app.command("reset")
def lab_reset() -> None:
    """Remove every container and the deploy state on all lab hosts."""
    from lab import manager

    manager.reset()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
