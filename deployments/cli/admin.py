"""``homelab audit verify`` and ``homelab server up|down``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from deployments import server
from deployments.cli.app import audit_app, server_app
from deployments.cli.common import fail
from model.errors import HomelabError


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain and its head; exit 1 if a record was changed or removed,
    the tail was cut off, or the log is missing. Repairs of torn lines are listed as notes."""
    from tasks.engine import audit

    found = audit.check()
    for note in found.notes:
        print(f"note: {note}")
    for problem in found.problems:
        print(problem)
    print(f"{audit.audit_path()}: {'TAMPERED' if found.problems else 'ok'}")
    raise typer.Exit(1 if found.problems else 0)


@server_app.command("up")
def server_up(host: Annotated[str, typer.Option(help="listen address; beyond loopback an API auth string is set")]
              = server.HOST,
              port: Annotated[int, typer.Option(help="listen port")] = server.PORT) -> None:
    """Start the local Prefect server (or reuse the running one)."""
    try:
        url = server.up(host=host, port=port)
    except HomelabError as exc:
        raise fail(exc) from None
    print(f"Prefect API {url}  UI {url.removesuffix('/api')}")
    if not server.is_loopback(host):
        print(f"API auth: on (clients set {server.CLIENT_AUTH_ENV}; this tool reads it from {server.auth_file()})",
              file=sys.stderr)


@server_app.command("down")
def server_down() -> None:
    """Stop the local Prefect server started by `homelab server up`."""
    print("stopped" if server.down() else "not running")
