"""``homelab audit verify|show|anchor|init-key`` and ``homelab server up|down``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from deployments import server
from deployments.cli.app import audit_app, server_app
from deployments.cli.common import fail, prefect_api
from model.errors import HomelabError, UsageError

_SPAN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CHAIN_FIELDS = ("time", "actor", "event", "prev", "hash", "mac")
_WIDE = 60  # a field value longer than this is cut in the text view (--json has it whole)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: ISO-8601 (a time without a zone is local time) or a span back from now:
    30s, 30m, 6h, 2d, 1w."""
    now = now or datetime.now(UTC)
    if span := _SPAN.match(text):
        return now - timedelta(**{_UNITS[span[2]]: int(span[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: not a time; give ISO-8601 (2026-05-01, 2026-05-01T10:00Z) "
                         "or a span back from now (30m, 6h, 2d)") from None
    return when if when.tzinfo else when.astimezone()


def _printable(text: str) -> str:
    """No control characters reach the terminal: a record cannot fake a line of its own."""
    return text if text.isprintable() else json.dumps(text)[1:-1]


def _value(value: object) -> str:
    if isinstance(value, str) and value and " " not in value and "=" not in value:
        shown = _printable(value)
    else:
        shown = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return shown if len(shown) <= _WIDE else shown[:_WIDE - 1] + "…"


def format_record(record: dict) -> str:
    """One line: time, actor, event, then the other fields as key=value (compact JSON for lists,
    objects and strings with spaces)."""
    fields = " ".join(f"{_printable(str(k))}={_value(v)}" for k, v in sorted(record.items())
                      if k not in _CHAIN_FIELDS)
    head = [_printable(str(record.get(k, "-"))) for k in ("time", "actor", "event")]
    return "  ".join([*head, fields]).rstrip()


@audit_app.command("show")
def audit_show(
        since: Annotated[str | None, typer.Option("--since", help="ISO-8601 time, or a span back: 30m, 6h, 2d")]
        = None,
        event: Annotated[str | None, typer.Option("--event", help="only events matching this glob (deploy.*)")]
        = None,
        as_json: Annotated[bool, typer.Option("--json", help="a JSON list of the whole records")] = False,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the last N matching records")]
        = None,
) -> None:
    """The audit log's records, oldest first: one line each (time, actor, event, fields)."""
    from tasks.engine import audit

    try:
        records = audit.tail(since=parse_since(since) if since else None, event=event, limit=limit)
    except HomelabError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(records, indent=2, sort_keys=True))
        return
    for record in records:
        print(format_record(record))


def _prefect_for_verify() -> str | None:
    """Point at the Prefect API the anchor lives on, without starting a server; a note if none."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if server.healthy():
        prefect_api()  # the local server the flows use, with its auth string; it runs, so nothing starts
        return None
    return ("PREFECT_API_URL is not set and the local Prefect server is not running: the anchor was not checked "
            "(`homelab server up`, or --no-anchor)")


@audit_app.command("verify")
def audit_verify(no_anchor: Annotated[bool, typer.Option(
        "--no-anchor", help="skip the comparison with the head anchored in Prefect")] = False) -> None:
    """Check the audit log's hash chain, its head, the HMACs (with HOMELAB_AUDIT_KEY_FILE) and the
    head anchored in Prefect; exit 1 if a record was changed, removed or forged, the tail was
    cut off, or the log is missing. Repairs of torn lines and what was not checked are notes."""
    from tasks.engine import audit

    try:
        found = audit.check()
    except HomelabError as exc:
        raise fail(exc) from None
    if not no_anchor:
        if why := _prefect_for_verify():
            found.notes.append(why)
        else:
            anchored = asyncio.run(audit.check_anchor())
            found.problems.extend(anchored.problems)
            found.notes.extend(anchored.notes)
    for note in found.notes:
        print(f"note: {note}")
    for problem in found.problems:
        print(problem)
    print(f"{audit.audit_path()}: {'TAMPERED' if found.problems else 'ok'}")
    raise typer.Exit(1 if found.problems else 0)


@audit_app.command("anchor")
def audit_anchor(force: Annotated[bool, typer.Option(
        "--force", help="move the anchor even if the log no longer holds the anchored record")] = False) -> None:
    """Anchor the audit log's head in the Prefect variable homelab-audit-head (every flow run
    does this at its end). Exit 1 if the log lost the anchored record, 4 if Prefect is unreachable."""
    prefect_api()
    from tasks.engine import audit, audit_anchor

    found = asyncio.run(audit.anchor(force=force))
    for note in found.notes:
        print(f"note: {note}")
    for problem in found.problems:
        print(problem)
    if found.problems:
        raise typer.Exit(1)
    if not any(note.startswith(audit_anchor.ANCHORED) for note in found.notes):
        raise typer.Exit(4)


@audit_app.command("init-key")
def audit_init_key(path: Annotated[Path, typer.Argument(
        help="where to create the key: not in the log's directory (e.g. ~/.config/homelab/audit.key)")]) -> None:
    """Create a 32-byte random HMAC key (0600; never overwrites) and sign the audit log with it
    from now on; prints the export line to put in the environment of every homelab process."""
    from tasks.engine import audit

    path = path.expanduser().absolute()
    log = audit.audit_path()
    try:
        audit.refuse_beside(path, log)
        head = audit.read_head(log)
        if head is not None and head.key_id is not None:
            raise audit.AuditKeyError(f"{log}: already signed with key {head.key_id}; point "
                                      f"{audit.KEY_ENV} at that key file (a second key would fail every record)")
        key = audit.create_key(path)
        audit.append(audit.KEY_CREATED, log_path=log, hmac_key=key, key_file=str(path), key_id=audit.key_id(key))
    except (HomelabError, audit.HeadUnreadable) as exc:
        raise fail(exc) from None
    print(f"created {path} (key {audit.key_id(key)}); {log} is signed from now on. Put this in the "
          "environment of every homelab process (CLI, serve, webhook):", file=sys.stderr)
    print(f"export {audit.KEY_ENV}={shlex.quote(str(path))}")


@server_app.command("up")
def server_up(host: Annotated[str, typer.Option(help="listen address; beyond loopback an API auth string is set")]
              = server.HOST,
              port: Annotated[int, typer.Option(help="listen port")] = server.PORT,
              database: Annotated[str | None, typer.Option(
                  envvar="HOMELAB_SERVER_DATABASE", show_envvar=True,
                  help="postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB (default: SQLite in PREFECT_HOME)")] = None,
              ) -> None:
    """Start the local Prefect server (or reuse the running one)."""
    try:
        url = server.up(host=host, port=port, database=database)
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
