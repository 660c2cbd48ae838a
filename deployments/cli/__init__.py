"""The ``homelab`` command: one module per command group, all on the app in ``app.py``.

Prefect is imported only by the commands that run flows, so ``plan`` and ``status`` stay fast.
Tools beside the house (the simulated lab) add their command groups as plugins: an entry point
in the ``homelab.cli`` group names a Typer app, mounted under the entry point's name.
"""

from __future__ import annotations

import sys

from deployments.cli import (  # noqa: F401 - they register the commands
    admin,
    adopt,
    approvals,
    deploy,
    history,
    releases,
    secrets,
    serve,
    trust,
    webhook,
    worker,
)
from deployments.cli.app import app


def add_plugins() -> None:
    from importlib.metadata import entry_points

    for plugin in entry_points(group="homelab.cli"):
        app.add_typer(plugin.load(), name=plugin.name)


def main() -> None:
    # Plugins cost an entry-point scan and their imports: load them only for a command that is
    # not the app's own (and for --help, which lists them).
    own = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    if len(sys.argv) < 2 or sys.argv[1] not in own:
        add_plugins()
    app()


if __name__ == "__main__":
    main()
