"""The connections of one flow run: one per host, opened on first use (or ahead of the run by
``prewarm``), reopened after a drop so a retried task gets a fresh one, closed together."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from model.desired import DesiredState
from model.masking import MASKER, SecretMasker
from tasks.engine.busy_clock import BusyClock
from tasks.engine.results import gather_hosts
from tasks.engine.transport import SshTarget, SshTransport

# Connections opened ahead of a flow run (see ``prewarm``) or kept from an earlier run (see
# ``keep_warm``), waiting to be adopted by the next pool.
_PREWARMED: dict[SshTarget, SshTransport] = {}
_keep_warm = False
# SSH handshakes one pool (or prewarm) runs at once: 30 hosts connect in a few waves instead of
# 30 key exchanges competing for the CPU, each at risk of its connect timeout.
MAX_HANDSHAKES = 10


def _bounded(transports: Iterable[SshTransport]) -> None:
    handshakes = asyncio.Semaphore(MAX_HANDSHAKES)
    for transport in transports:
        transport.handshakes = handshakes


def keep_warm(enabled: bool = True) -> None:
    """In a long-lived process (``homelab serve``): a closed pool hands its live connections to
    the next run instead of closing them, so a run costs no new SSH handshake."""
    global _keep_warm
    _keep_warm = enabled


async def prewarm(targets: Iterable[SshTarget]) -> None:
    """Open connections before the flow starts (e.g. while Prefect is still importing), so the
    handshakes overlap with work that does not need the network. Failures are left for the
    flow's own pre-flight to report."""
    transports = {t.name: SshTransport(t) for t in targets}
    _bounded(transports.values())
    opened = await gather_hosts(transports, lambda name: transports[name].connection())
    for name in opened.succeeded:
        _PREWARMED[transports[name].target] = transports[name]


def _adopt(target: SshTarget) -> SshTransport | None:
    transport = _PREWARMED.pop(target, None)
    if transport is not None:
        transport.busy = BusyClock()  # each run reports its own remote time
    return transport


class HostPool:
    """The connections of one flow run, opened on first use and closed together."""

    def __init__(self, targets: Iterable[SshTarget], masker: SecretMasker = MASKER, others: Mapping | None = None):
        """``others``: transports that are not SSH (a worker host's, this host's own), by host."""
        self.transports = {t.name: _adopt(t) or SshTransport(t, masker) for t in targets}
        _bounded(self.transports.values())
        self.transports.update(others or {})

    def __getitem__(self, name: str) -> SshTransport:
        return self.transports[name]

    def remote_seconds(self) -> dict[str, dict[str, float]]:
        """phase -> host -> busy seconds."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for name, transport in self.transports.items():
            for phase, seconds in transport.busy.seconds.items():
                out[phase][name] = round(seconds, 4)
        return dict(out)

    async def close(self) -> None:
        closing = []
        for transport in self.transports.values():
            if _keep_warm and isinstance(transport, SshTransport) and transport.connected \
                    and transport.target not in _PREWARMED:
                _PREWARMED[transport.target] = transport
            else:
                closing.append(transport.close())
        await asyncio.gather(*closing)

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def ssh_targets(desired: DesiredState, all_hosts: bool = False, worker_hosts: Iterable[str] = ()) -> list[SshTarget]:
    """The SSH connections a run needs: every targeted host (or every host) but those whose
    worker runs their steps (``worker_hosts``)."""
    inv = desired.inventory
    targeted = set(desired.targeted_hosts())
    skip = set(worker_hosts)

    def local(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (desired.inventory_dir / p).absolute()

    return [SshTarget(name=name, address=host.address, port=host.port, user=host.user,
                      known_hosts=local(inv.ssh.known_hosts), identity=local(inv.ssh.identity),
                      connect_timeout_s=inv.ssh.connect_timeout_s, command_timeout_s=inv.ssh.command_timeout_s)
            for name, host in inv.hosts.items() if (all_hosts or name in targeted) and name not in skip]
