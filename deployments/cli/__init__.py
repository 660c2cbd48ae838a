"""The ``homelab`` command: one module per command group, all on the app in ``app.py``.

Prefect is imported only by the commands that run flows, so ``plan`` and ``status`` stay fast.
Tools beside the house (the simulated lab) add their command groups as plugins: an entry point
in the ``homelab.cli`` group names a Typer app, mounted under the entry point's name.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from deployments.cli import admin, adopt, deploy, releases, secrets, serve, webhook  # noqa: F401 - they register the commands
from deployments.cli.app import app


def add_plugins() -> None:
    for plugin in entry_points(group="homelab.cli"):
        app.add_typer(plugin.load(), name=plugin.name)


def main() -> None:
    add_plugins()
    app()


if __name__ == "__main__":
    main()
