"""``homelab audit verify`` and ``homelab server up|down``."""

from __future__ import annotations

import typer

from deployments import server
from deployments.cli.app import audit_app, server_app
from deployments.cli.common import fail
from model.errors import HomelabError


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 if any record was changed or removed."""
    from tasks.engine import audit

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
        raise fail(exc) from None
    print(f"Prefect API {url}  UI {server.UI_URL}")


@server_app.command("down")
def server_down() -> None:
    """Stop the local Prefect server started by `homelab server up`."""
    print("stopped" if server.down() else "not running")
