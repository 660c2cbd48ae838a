"""Which addresses the orchestrator may connect to: ``HOMELAB_ALLOWED_NETWORKS``.

Unset: no limit; set but empty: nothing allowed. It is checked before any packet is sent, so a
misconfigured test can never reach a real host. The rule itself (parse, check, the blocking
resolver of the HTTP clients) is in ``tasks/integrations/netpolicy.py``; this is the async
resolver of the SSH transport and the health probes.
"""

from __future__ import annotations

import asyncio
import socket

from model.errors import HostUnreachable
from tasks.integrations.netpolicy import (
    ALLOWED_NETWORKS_ENV,
    allowed_networks,
    check_allowed,
    check_resolved,
    without_lookup,
)

__all__ = ["ALLOWED_NETWORKS_ENV", "allowed_networks", "check_allowed", "resolve_allowed"]


async def resolve_allowed(host: str, address: str) -> str:
    """The IP to connect to (``address`` itself when there is no limit); raises AddressNotAllowed
    before any connection if it, or any address a name resolves to, is not allowed."""
    networks = allowed_networks()
    if (settled := without_lookup(host, address, networks)) is not None:
        return settled
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HostUnreachable(host, f"cannot resolve {address} (to check it against {ALLOWED_NETWORKS_ENV}): "
                                    f"{exc}") from None
    return check_resolved(host, address, (str(info[4][0]) for info in infos), networks)
