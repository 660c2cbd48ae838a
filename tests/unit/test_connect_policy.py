"""HOMELAB_ALLOWED_NETWORKS beyond SSH (Vault, the Proxmox API, health-probe targets), an empty
value, and the SSH connect options that pin trust to known_hosts. Nothing here may reach the
network: every refusal must come before any socket is opened."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from model.errors import AddressNotAllowed
from model.inventory import HealthCheck
from model.masking import SecretMasker
from tasks.engine import health, transport
from tasks.engine.netpolicy import ALLOWED_NETWORKS_ENV, allowed_networks, resolve_allowed
from tasks.engine.transport import SshTarget, SshTransport
from tasks.integrations.netpolicy import check_url_allowed, resolve_allowed_sync
from tasks.integrations.proxmox.client import ProxmoxSnapshots
from tasks.integrations.proxmox.errors import SnapshotError
from tasks.integrations.proxmox.settings import ProxmoxSettings
from tasks.integrations.proxmox.vm import VmRef
from tasks.integrations.vault.client import VaultReader
from tasks.integrations.vault.errors import SecretsError
from tasks.integrations.vault.settings import VaultSettings

LAB = "10.203.0.0/24,127.0.0.0/8"
OUTSIDE = "203.0.113.5"  # TEST-NET-3: must never be contacted


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a name or open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network I/O attempted: {args}")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)


# ---------------------------------------------------------------------------------------------
# an empty value allows nothing; only an unset one means no limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", " ", " , "])
def test_an_empty_value_allows_nothing(raw):
    assert allowed_networks(raw) == []


def test_unset_means_no_limit(monkeypatch):
    monkeypatch.delenv(ALLOWED_NETWORKS_ENV, raising=False)
    assert allowed_networks() is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.203.0.12", OUTSIDE, "::1", "lab-host.example"])
def test_an_empty_variable_refuses_everything(monkeypatch, no_network, address):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "")
    with pytest.raises(AddressNotAllowed, match="set but empty, so nothing is allowed"):
        asyncio.run(resolve_allowed("thinkpad", address))
    with pytest.raises(AddressNotAllowed, match="set but empty, so nothing is allowed"):
        resolve_allowed_sync("Vault", address)


def test_the_refusal_names_address_variable_and_what_to_do(monkeypatch, no_network):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    with pytest.raises(AddressNotAllowed) as caught:
        check_url_allowed("Vault", f"https://{OUTSIDE}:8200")
    text = str(caught.value)
    assert f"address {OUTSIDE} is outside {ALLOWED_NETWORKS_ENV} (10.203.0.0/24, 127.0.0.0/8)" in text
    assert f"add its network to {ALLOWED_NETWORKS_ENV}" in text


def test_every_address_of_a_name_is_checked(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    answers = [(2, 1, 6, "", ("127.0.0.1", 0)), (10, 1, 6, "", ("::1", 0, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(AddressNotAllowed, match=re.escape("address ::1 is outside")):
        check_url_allowed("Vault", "http://vault.lab.example:8200")
    answers.pop()
    assert check_url_allowed("Vault", "http://vault.lab.example:8200") == "127.0.0.1"


def test_a_name_that_does_not_resolve_is_refused_under_a_limit(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)

    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(AddressNotAllowed, match=re.escape("cannot resolve vault.invalid")):
        check_url_allowed("Vault", "https://vault.invalid:8200")


# ---------------------------------------------------------------------------------------------
# Vault
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [LAB, ""], ids=["outside the lab", "empty variable"])
def test_vault_outside_the_allowlist_is_refused_before_connecting(monkeypatch, no_network, env):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, env)
    addr = f"https://{OUTSIDE}:8200"
    reader = VaultReader(VaultSettings(addr, role_id="role-id-1", secret_id="S3CR3T-secret-id"))
    with pytest.raises(SecretsError) as caught:
        reader.read("homelab/postgres")
    exc = caught.value
    assert exc.exit_code == 6
    assert f"vault {addr}: AppRole login" in str(exc)
    assert f"refused before connecting: Vault {addr}: address {OUTSIDE} is outside {ALLOWED_NETWORKS_ENV}" \
        in str(exc)
    assert "point VAULT_ADDR" in str(exc)
    assert "S3CR3T" not in str(exc)


def test_vault_inside_the_allowlist_is_checked_once(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    reader = VaultReader(VaultSettings("http://127.0.0.1:1", token="dev-token-value"))
    sent = []
    reader._call(object(), lambda: sent.append(1))  # type: ignore[arg-type]
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "")  # a later change is not looked at again
    reader._call(object(), lambda: sent.append(2))  # type: ignore[arg-type]
    assert sent == [1, 2]


# ---------------------------------------------------------------------------------------------
# Proxmox
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [LAB, ""], ids=["outside the lab", "empty variable"])
def test_proxmox_outside_the_allowlist_is_refused_before_connecting(monkeypatch, no_network, env):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, env)
    url = f"https://{OUTSIDE}:8006"
    client = ProxmoxSnapshots(ProxmoxSettings(url=url, token_id="homelab@pve!deploy",
                                              token_secret="S3CR3T-token-secret", ca_file=None))
    with pytest.raises(SnapshotError) as caught:
        client.rollback(VmRef("pve1", 100), "homelab-20250101T0000-prod-abc")
    text = str(caught.value)
    assert f"refused before connecting: Proxmox {url}: address {OUTSIDE} is outside {ALLOWED_NETWORKS_ENV}" in text
    assert "nothing was sent; point PROXMOX_URL" in text
    assert "S3CR3T" not in text


# ---------------------------------------------------------------------------------------------
# health probes
# ---------------------------------------------------------------------------------------------


class _NoTransport:
    """Stands in for the SSH transport; any probe connection fails the test."""

    name = "thinkpad"
    masker = SecretMasker()

    async def open_tcp(self, host, port, timeout):
        raise AssertionError(f"probe connection attempted to {host}:{port}")


@pytest.mark.parametrize(("env", "check"), [
    (LAB, HealthCheck(http=f"http://{OUTSIDE}:8080/health")),
    (LAB, HealthCheck(tcp=f"{OUTSIDE}:5432")),
    ("", HealthCheck(tcp="127.0.0.1:5432")),
], ids=["http outside", "tcp outside", "empty variable"])
def test_a_probe_target_outside_the_allowlist_is_refused(monkeypatch, no_network, env, check):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, env)
    with pytest.raises(AddressNotAllowed, match=re.escape(f"thinkpad: health probe {check.describe()}")):
        asyncio.run(health.probe(_NoTransport(), check))  # type: ignore[arg-type]


def test_a_probe_goes_to_the_address_that_was_checked(monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [(2, 1, 6, "", ("127.0.0.1", 0))])
    opened = []

    class Transport(_NoTransport):
        async def open_tcp(self, host, port, timeout):
            opened.append((host, port))
            raise ConnectionRefusedError("refused")

    result = asyncio.run(health.probe(Transport(), HealthCheck(tcp="db.lab.example:5432")))  # type: ignore[arg-type]
    assert not result.ok
    assert opened == [("127.0.0.1", 5432)]


# ---------------------------------------------------------------------------------------------
# SSH: trust comes from known_hosts only
# ---------------------------------------------------------------------------------------------


def test_ssh_connect_pins_trust_to_known_hosts(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, LAB)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    seen = {}

    async def connect(*args, **kwargs):
        seen.update(kwargs, _args=args)
        return "connection"

    monkeypatch.setattr(transport.asyncssh, "connect", connect)
    target = SshTarget(name="thinkpad", address="10.203.0.12", port=22, user="root", known_hosts=known_hosts,
                       identity=tmp_path / "id_ed25519")
    assert asyncio.run(SshTransport(target)._connect()) == "connection"
    assert seen["_args"] == ("10.203.0.12", 22)
    assert seen["known_hosts"] == str(known_hosts)
    assert seen["x509_trusted_certs"] is None  # no CA bundle found on disk widens trust
    assert seen["agent_path"] is None and seen["config"] is None
