"""Which addresses the orchestrator may connect to: ``HOMELAB_ALLOWED_NETWORKS``.

Comma-separated CIDRs. Unset: no limit. Set but empty: nothing is allowed. Every address a
name resolves to is checked before any packet is sent to it: SSH hosts (``tasks/engine``),
Vault, the Proxmox API and the health-probe targets. A misconfigured test can then never reach
a real host, nor a real Vault or a real Proxmox (a rollback reverts real VMs).

The pure part (parse, check) and a blocking resolver for the synchronous HTTP clients; the
async resolver for the engine is in ``tasks/engine/netpolicy.py``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from model.errors import AddressNotAllowed

ALLOWED_NETWORKS_ENV = "HOMELAB_ALLOWED_NETWORKS"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(env: str | None = None) -> list[Network] | None:
    """The allowed networks: None when the variable is unset (no limit), [] when it is set but
    empty (nothing allowed). ``env`` is the raw value; by default the environment's."""
    raw = os.environ.get(ALLOWED_NETWORKS_ENV) if env is None else env
    if raw is None:
        return None
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise AddressNotAllowed(f"{ALLOWED_NETWORKS_ENV} is not a list of CIDRs: {exc}; fix it (e.g. "
                                "10.0.0.0/24,127.0.0.0/8), or unset it for no limit") from exc


def _shown(networks: Sequence[Network]) -> str:
    return ", ".join(str(n) for n in networks) if networks else "set but empty, so nothing is allowed"


def check_allowed(host: str, address: str, networks: Sequence[Network] | None) -> None:
    """Raise AddressNotAllowed if the IP ``address`` of ``host`` lies outside ``networks``."""
    if networks is None:
        return
    ip = ipaddress.ip_address(address)
    if not any(ip in net for net in networks):
        raise AddressNotAllowed(f"{host}: address {address} is outside {ALLOWED_NETWORKS_ENV} "
                                f"({_shown(networks)}); refusing to connect. If it is meant to be reached, add "
                                f"its network to {ALLOWED_NETWORKS_ENV}; otherwise fix the address")


def ip_literal(address: str) -> str | None:
    """``address`` as an IP (brackets of an IPv6 URL host removed), or None for a name."""
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return None


def nothing_allowed(host: str, address: str) -> AddressNotAllowed:
    """The refusal of a name while the variable is set but empty (no need to resolve it)."""
    return AddressNotAllowed(f"{host}: {address} is not allowed: {ALLOWED_NETWORKS_ENV} is {_shown([])}. Add the "
                             f"network of {address} to it, or unset it for no limit")


def without_lookup(host: str, address: str, networks: Sequence[Network] | None) -> str | None:
    """The address to connect to when no name lookup is needed (an IP, or no limit); None when
    ``address`` is a name to resolve and check. Raises AddressNotAllowed for what is refused."""
    literal = ip_literal(address)
    if literal is not None:
        check_allowed(host, literal, networks)
        return literal
    if networks is None:
        return address
    if not networks:  # nothing is allowed: no need to ask the resolver
        raise nothing_allowed(host, address)
    return None


def check_resolved(host: str, address: str, candidates: Iterable[str], networks: Sequence[Network] | None) -> str:
    """Check every address ``address`` resolved to; the first one, to connect to."""
    found = list(dict.fromkeys(candidates))
    if not found:
        raise AddressNotAllowed(f"{host}: {address} resolved to no address; fix the name")
    for candidate in found:
        check_allowed(host, candidate, networks)
    return found[0]


def resolve_allowed_sync(host: str, address: str) -> str:
    """Blocking twin of the engine's ``resolve_allowed``: the IP to connect to (``address`` itself
    when there is no limit); raises AddressNotAllowed before any connection when a name or an
    address is not allowed, or when a name cannot be resolved to check it."""
    networks = allowed_networks()
    if (settled := without_lookup(host, address, networks)) is not None:
        return settled
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressNotAllowed(f"{host}: cannot resolve {address} to check it against {ALLOWED_NETWORKS_ENV}: "
                                f"{exc}; fix the name or use an IP address") from None
    return check_resolved(host, address, (str(info[4][0]) for info in infos), networks)


def check_url_allowed(what: str, url: str) -> str:
    """Check the host of ``url`` (every address it resolves to); the address to connect to."""
    host = urlsplit(url).hostname or ""
    return resolve_allowed_sync(f"{what} {url}", host)
