"""The pure parts of the SSH transport: address allow-list, secret masking, retry policy, logging."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

import tasks.engine.busy_clock as remote
from model.errors import (
    AddressNotAllowed,
    HomelabError,
    HostKeyRejected,
    HostUnreachable,
    RemoteCommandError,
    RemoteTimeout,
)
from model.inventory_loader import load_inventory
from model.masking import SecretMasker
from tasks.engine.busy_clock import BusyClock, current_phase
from tasks.engine.netpolicy import ALLOWED_NETWORKS_ENV, allowed_networks, check_allowed, resolve_allowed
from tasks.engine.transport import _short, is_transient
from tasks.host_commands.release_files import commit_release, upload_file
from tasks.host_commands.survey import survey

LAB = "10.203.0.0/24,127.0.0.0/8"

# ---------------------------------------------------------------------------------------------
# HOMELAB_ALLOWED_NETWORKS
# ---------------------------------------------------------------------------------------------

# The real homelab's addresses, from its inventory: the transport must refuse every one of them.
REAL = {name: host.address for name, host in
        load_inventory(Path(__file__).resolve().parents[2] / "deployments/homelab.yaml").hosts.items()}


@pytest.mark.parametrize(("raw", "expected"), [
    ("", []),  # set but empty: nothing is allowed (only an unset variable means no limit)
    ("10.203.0.0/24", ["10.203.0.0/24"]),
    (" 10.203.0.0/24 , 127.0.0.0/8 ,", ["10.203.0.0/24", "127.0.0.0/8"]),
    ("10.203.0.7/24", ["10.203.0.0/24"]),  # host bits are tolerated
    ("192.168.99.7", ["192.168.99.7/32"]),
    ("::1/128,fd00::/8", ["::1/128", "fd00::/8"]),
])
def test_allowed_networks_parsing(raw, expected):
    networks = allowed_networks(raw)
    assert (None if networks is None else [str(n) for n in networks]) == expected


def test_allowed_networks_reads_the_environment(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    assert allowed_networks() == [ipaddress.ip_network("10.203.0.0/24"), ipaddress.ip_network("127.0.0.0/8")]
    monkeypatch.delenv(ALLOWED_NETWORKS_ENV)
    assert allowed_networks() is None


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "lab", "10.203.0.0/24,nonsense", "300.1.1.1/8"])
def test_a_bad_cidr_refuses_everything(raw):
    with pytest.raises(AddressNotAllowed, match=ALLOWED_NETWORKS_ENV):
        allowed_networks(raw)


@pytest.mark.parametrize(("host", "address"), [*REAL.items(), ("lab", "10.203.1.12")])
def test_check_allowed_refuses_addresses_outside_the_lab(host, address):
    with pytest.raises(AddressNotAllowed) as caught:
        check_allowed(host, address, allowed_networks(LAB))
    assert f"{host}: address {address} is outside {ALLOWED_NETWORKS_ENV}" in str(caught.value)
    assert "10.203.0.0/24, 127.0.0.0/8" in str(caught.value)


@pytest.mark.parametrize("address", ["10.203.0.12", "10.203.0.11", "127.0.0.1"])
def test_check_allowed_accepts_lab_addresses(address):
    check_allowed("thinkpad", address, allowed_networks(LAB))


def test_check_allowed_without_a_list_allows_anything():
    check_allowed("vps", REAL["vps"], None)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a name or open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network I/O attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_resolve_allowed_refuses_a_disallowed_ip_without_network_io(monkeypatch, no_network):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    with pytest.raises(AddressNotAllowed, match=re.escape(f"vps: address {REAL['vps']} is outside")):
        asyncio.run(resolve_allowed("vps", REAL["vps"]))


def test_resolve_allowed_returns_an_allowed_ip_unchanged(monkeypatch, no_network):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    assert asyncio.run(resolve_allowed("thinkpad", "10.203.0.12")) == "10.203.0.12"


def test_resolve_allowed_without_a_list_does_not_resolve_names(monkeypatch, no_network):
    monkeypatch.delenv(ALLOWED_NETWORKS_ENV, raising=False)
    assert asyncio.run(resolve_allowed("vps", "vps.example.org")) == "vps.example.org"


def test_resolve_allowed_checks_every_address_a_name_resolves_to(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    answers = [(2, 1, 6, "", ("10.203.0.12", 22)), (2, 1, 6, "", ("192.168.99.7", 22))]

    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(AddressNotAllowed, match=re.escape("192.168.99.7")):
        asyncio.run(resolve_allowed("thinkpad", "thinkpad.home.arpa"))
    answers = answers[:1]
    assert asyncio.run(resolve_allowed("thinkpad", "thinkpad.home.arpa")) == "10.203.0.12"


# ---------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------


def test_masker_replaces_longest_secret_first():
    masker = SecretMasker()
    masker.add("abc", "abcdef")
    assert masker.mask("x=abcdef y=abc") == "x=*** y=***"


def test_masker_ignores_empty_and_very_short_values():
    masker = SecretMasker()
    masker.add("", "ab", "s3cret")
    assert masker.mask("ab s3cret ab") == "ab *** ab"


def test_masker_without_secrets_leaves_text_alone():
    assert SecretMasker().mask("nothing to hide") == "nothing to hide"


# ---------------------------------------------------------------------------------------------
# retry policy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "transient"), [
    (HostUnreachable("vps", "connection refused"), True),
    (HostKeyRejected("vps", "host key changed"), False),
    (RemoteCommandError("vps", "docker compose up", 1, "boom"), False),
    (RemoteTimeout("vps", "docker compose up", 300), False),
    (AddressNotAllowed("outside"), False),
    (HomelabError("generic"), False),
    (OSError("reset"), False),
    (None, False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


# ---------------------------------------------------------------------------------------------
# command logging
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (survey(".homelab", True), "sh -c <homelab-survey> .homelab 1"),
    (commit_release(".homelab", "media", "R1", 5, True), "sh -c <commit-release> .homelab/releases/media R1 5 1 ''"),
    (["docker", "compose", "-p", "media", "down"], "docker compose -p media down"),
    (upload_file("/a b/c"), "sh -c <upload> '/a b/c' 644"),
    (["sh", "-c", 'echo "$1"', "say", "a b"], "sh -c 'echo \"$1\"' say 'a b'"),  # short enough to log in full
])
def test_short_names_long_scripts_by_their_dollar_zero(argv, expected):
    assert _short(shlex.join(argv)) == expected


def test_short_truncates_other_long_commands():
    command = "docker image inspect " + " ".join(f"image{i}:1" for i in range(100))
    shown = _short(command)
    assert shown == command[:300] + "..."


# ---------------------------------------------------------------------------------------------
# busy clock
# ---------------------------------------------------------------------------------------------


def test_busy_clock_counts_overlapping_commands_once(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(remote, "time", SimpleNamespace(monotonic=lambda: now[0]))
    clock = BusyClock()
    token = current_phase.set("deploy")
    try:
        first, second = clock.running(), clock.running()
        first.__enter__()          # t=0: first command starts
        now[0] = 1.0
        second.__enter__()         # t=1: second overlaps
        now[0] = 3.0
        first.__exit__(None, None, None)
        now[0] = 4.0
        second.__exit__(None, None, None)  # t=4: idle again -> 4s busy, not 3+3
        now[0] = 10.0
        with clock.running():      # t=10..12 alone
            now[0] = 12.0
    finally:
        current_phase.reset(token)
    assert dict(clock.seconds) == {"deploy": 6.0}


def test_busy_clock_labels_by_phase(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(remote, "time", SimpleNamespace(monotonic=lambda: now[0]))
    clock = BusyClock()
    with clock.running():
        now[0] = 2.0
    token = current_phase.set("preflight")
    try:
        with clock.running():
            now[0] = 2.5
    finally:
        current_phase.reset(token)
    assert dict(clock.seconds) == {"-": 2.0, "preflight": 0.5}
