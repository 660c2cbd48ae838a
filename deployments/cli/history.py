"""``homelab history``: the recent deploy runs (when, how started, what, how it ended)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from deployments.cli.app import app
from deployments.cli.common import JsonOption, prefect_api, run_command, table

HEADERS = ["RUN", "STARTED", "TRIGGER", "REF", "COMMIT", "ENVIRONMENT", "RESULT", "DURATION", "CHANGED"]


@app.command()
def history(limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200, help="how many runs")] = 20,
            as_json: JsonOption = False) -> None:
    """The last deploy-homelab runs, newest first: trigger, ref, commit, environment, result,
    duration and the stacks each changed."""
    prefect_api()  # as `homelab pending`: the local server, started if no API is configured
    from tasks.engine.run_history import read_history  # Prefect is imported only now, after its settings

    rows = run_command(read_history(limit))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no deploy runs yet")
        return
    print(table([_text(r) for r in rows], HEADERS))


def _text(row: dict) -> list[str]:
    changed = row["changed"]
    return [row["flow_run_id"][:8], (row["started"] or "-").replace("T", " ")[:19], row["trigger"],
            row["ref"] or "(working tree)", (row["commit"] or "-")[:12], row["environment"] or "-", row["result"],
            "-" if row["duration_s"] is None else f"{row['duration_s']:.1f}s",
            "-" if changed is None else ", ".join(changed) or "(none)"]
