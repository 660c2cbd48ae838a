"""``homelab lab up|down|status|reset``: the simulated homelab, a plugin of the ``homelab`` CLI
(entry point group ``homelab.cli``), so the house itself never imports the lab."""

from __future__ import annotations

import typer

from deployments.cli.common import JsonOption, emit, table

app = typer.Typer(no_args_is_help=True, help="The simulated homelab (network namespaces on this machine).")


@app.command("up")
def lab_up() -> None:
    """Create the simulated homelab; the last line printed is the lab inventory's path."""
    from lab import configrepo, manager

    manager.up()
    print(configrepo.ensure())


@app.command("down")
def lab_down() -> None:
    """Remove every namespace, process, mount and rule the lab created."""
    from lab import manager

    manager.down()


@app.command("status")
def lab_status(as_json: JsonOption = False) -> None:
    from lab import manager

    result = manager.status()
    if as_json:
        emit(result)
        return
    rows = [[h, s["address"], _yes(s["up"]), _yes(s["sshd"]), _yes(s["engine"])] for h, s in result.items()]
    print(table(rows, ["HOST", "ADDRESS", "UP", "SSHD", "ENGINE"]))


@app.command("reset")
def lab_reset() -> None:
    """Remove every container and the deploy state on all lab hosts."""
    from lab import manager

    manager.reset()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
