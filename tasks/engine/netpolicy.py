"""Which addresses the orchestrator may connect to: ``HOMELAB_ALLOWED_NETWORKS``.

When set (comma-separated CIDRs), it is checked before any packet is sent, so a misconfigured
test can never reach a real host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence

from model.errors import AddressNotAllowed

ALLOWED_NETWORKS_ENV = "HOMELAB_ALLOWED_NETWORKS"


def allowed_networks(env: str | None = None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    raw = os.environ.get(ALLOWED_NETWORKS_ENV) if env is None else env
    if not raw:
        return None
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise AddressNotAllowed(f"{ALLOWED_NETWORKS_ENV} is not a list of CIDRs: {exc}") from exc


def check_allowed(host: str, address: str, networks: Sequence | None) -> None:
    if networks is None:
        return
    ip = ipaddress.ip_address(address)
    if not any(ip in net for net in networks):
        shown = ", ".join(str(n) for n in networks)
        raise AddressNotAllowed(f"{host}: address {address} is outside {ALLOWED_NETWORKS_ENV} ({shown}); "
                                "refusing to connect")


async def resolve_allowed(host: str, address: str) -> str:
    """The IP to connect to; raises before any connection if it is not allowed."""
    networks = allowed_networks()
    try:
        ipaddress.ip_address(address)
        candidates = [address]
    except ValueError:
        if networks is None:
            return address
        infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=socket.SOCK_STREAM)
        candidates = list(dict.fromkeys(info[4][0] for info in infos))
    for candidate in candidates:
        check_allowed(host, candidate, networks)
    return candidates[0]
