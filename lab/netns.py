"""Lab network: a bridge in the root namespace and one veth-connected netns per host.

The namespaces get no default route, so a lab host can reach only 10.203.0.0/24.
"""

from __future__ import annotations

from pathlib import Path

from lab.osutil import is_mountpoint, ok, run
from lab.topology import BRIDGE, GATEWAY, PREFIX_LEN, netns_name, veth_name

NETNS_DIR = Path("/run/netns")
# bridge-nf-call-iptables=1 sends bridged frames through FORWARD; keep them allowed.
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def mac_for(address: str) -> str:
    """A fixed, locally administered MAC per lab address: a rebuilt host or bridge keeps its
    MAC, so the neighbours' ARP caches stay right (a new random MAC strands them for ~30 s)."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def netns_path(host: str) -> Path:
    return NETNS_DIR / netns_name(host)


def netns_exists(host: str) -> bool:
    """True when the named netns is a live nsfs mount (a stale file after a reboot is not)."""
    return is_mountpoint(netns_path(host))


def ensure_bridge() -> None:
    if not _link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "address", mac_for(GATEWAY), "type", "bridge"])
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout.decode()
    if f" {GATEWAY}/{PREFIX_LEN} " not in addrs:
        run(["ip", "addr", "add", f"{GATEWAY}/{PREFIX_LEN}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    if not ok(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-I", *FORWARD_RULE])


def remove_bridge() -> None:
    while ok(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-D", *FORWARD_RULE])
    if _link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE])


def ensure_host_netns(host: str, address: str) -> None:
    """Create (or complete) the host's netns, its veth pair and its address."""
    ns, veth = netns_name(host), veth_name(host)
    if not netns_exists(host):
        if netns_path(host).exists():  # stale file left by a reboot or a crash
            netns_path(host).unlink()
        run(["ip", "netns", "add", ns])
    if not _link_exists(veth):
        peer = ["peer", "name", "eth0", "address", mac_for(address), "netns", ns]
        run(["ip", "link", "add", veth, "type", "veth", *peer])
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    inside = ["ip", "-n", ns]
    addrs = run([*inside, "-o", "-4", "addr", "show", "dev", "eth0"]).stdout.decode()
    if f" {address}/{PREFIX_LEN} " not in addrs:
        run([*inside, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0"])
    run([*inside, "link", "set", "lo", "up"])
    run([*inside, "link", "set", "eth0", "up"])


def remove_host_netns(host: str) -> None:
    """Delete the netns; its veth pair goes with it. Processes must already be gone."""
    if _link_exists(veth_name(host)):
        run(["ip", "link", "del", veth_name(host)])
    if netns_exists(host):
        run(["ip", "netns", "del", netns_name(host)])
    elif netns_path(host).exists():
        netns_path(host).unlink()


def set_link(host: str, up: bool) -> None:
    """Cut or restore the host's cable (the root-side veth end)."""
    run(["ip", "link", "set", veth_name(host), "up" if up else "down"])
