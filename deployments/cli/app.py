"""The ``homelab`` Typer app and its command groups; commands register themselves on these."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Health-gated, phased Docker Compose deploys of the homelab.")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server (127.0.0.1:4200).")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
secrets_app = typer.Typer(no_args_is_help=True, help="Secrets from Vault: drift check, sync, rotation.")
trust_app = typer.Typer(no_args_is_help=True, help="The trust file: what no ref may change.")
webhook_app = typer.Typer(no_args_is_help=True, help="The GitHub webhook receiver (signed pushes start deploys).")
app.add_typer(server_app, name="server")
app.add_typer(audit_app, name="audit")
app.add_typer(secrets_app, name="secrets")
app.add_typer(webhook_app, name="webhook")
app.add_typer(trust_app, name="trust")
