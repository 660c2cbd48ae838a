"""``homelab lab up|down|status|reset``: the simulated homelab, a plugin of the ``homelab`` CLI
(entry point group ``homelab.cli``), so the house itself never imports the lab."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import JsonOption, emit, table

app = typer.Typer(no_args_is_help=True, help="The simulated homelab (network namespaces on this machine).")


@app.command("up")
def lab_up(
    hosts: Annotated[int, typer.Option("--hosts", min=3, max=200,
                                       help="lab size: vps, thinkpad, rtx1080, then node04 ..")] = 3,
    generated: Annotated[bool, typer.Option("--generated",
                                            help="print the generated inventory even for 3 hosts")] = False,
) -> None:
    """Create the simulated homelab; the last line printed is the inventory's path: the lab's
    own for 3 hosts, else a generated one (about 3 stacks per host over the five phases)."""
    from lab import configrepo, manager, scalerepo

    manager.up(hosts)
    lab_inventory = configrepo.ensure()
    print(scalerepo.ensure(hosts) if generated or hosts > 3 else lab_inventory)


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
