"""The SMTP client against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS and
implicit TLS with verification on (a CA made here), login, refused recipients, hangs.

No lab and no root: every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from model.masking import MASKER
from tasks.engine.notify import METRICS, Channels, notify
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.format import email_text
from tasks.integrations.notify.notice import Notice
from tasks.integrations.notify.settings import Security, SmtpSettings
from tasks.integrations.notify.smtp import SmtpSender

SECRET = "smtp-integration-S3CR3T-value"
MASKER.add(SECRET)
USER, PASSWORD = "homelab-bot", "right-smtp-password-8f3k"
NOTICE = Notice(kind="failed", title="deploy-homelab production", summary="health gate failed on rtx1080",
                details=f"jellyfin | starting\njellyfin | DB_PASSWORD={SECRET}\njellyfin | exit 1 <oops>",
                link="http://127.0.0.1:4200/runs/flow-run/1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the server
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, and an unrelated CA."""
    root = tmp_path_factory.mktemp("smtp-pki")
    ca_key, ca_cert = _ca("homelab test mail CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(ca_file=root / "ca.pem", other_ca_file=root / "other-ca.pem", cert_file=root / "server.pem",
              key_file=root / "server.key")
    pki.ca_file.write_bytes(_pem(ca_cert))
    pki.other_ca_file.write_bytes(_pem(other_cert))
    pki.cert_file.write_bytes(_pem(cert))
    pki.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return pki


# ------------------------------------------------------------------ the server


@dataclass
class Mailbox:
    """aiosmtpd handler: refuses recipients at refused.test, keeps every accepted mail."""

    mails: list[dict[str, Any]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.test"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.mails.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                           "tls": server.transport.get_extra_info("ssl_object") is not None,
                           "user": session.authenticated and session.auth_data.login.decode(),
                           "message": email.message_from_bytes(envelope.content, policy=email.policy.default)})
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    """Accepts one user; a wrong password is refused (handled=False: aiosmtpd answers 535)."""
    if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (USER.encode(),
                                                                                           PASSWORD.encode()):
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


@contextmanager
def smtp_server(**kwargs: Any) -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def settings(port: int, **changes: Any) -> SmtpSettings:
    base = SmtpSettings(host="127.0.0.1", port=port, security=Security.NONE, from_addr="homelab@example.test",
                        to_addrs=("ops@example.test",), timeout_s=5)
    return replace(base, **changes)


async def send(s: SmtpSettings, notice: Notice = NOTICE) -> tuple[str, ...]:
    return await SmtpSender(s).send(email_text(notice))


def assert_the_notice_arrived(mail: dict[str, Any]) -> None:
    message = mail["message"]
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    assert message["Subject"] == "[homelab] Deploy failed: deploy-homelab production"
    assert message["From"] == "homelab@example.test"
    assert "jellyfin | exit 1 <oops>" in plain.get_content()
    assert "jellyfin | exit 1 &lt;oops&gt;" in rich.get_content()
    assert "DB_PASSWORD=***" in plain.get_content()
    assert SECRET not in message.as_string()


# ------------------------------------------------------------------ tests


async def test_plain_delivers_plain_text_and_html_masked():
    with smtp_server() as (box, port):
        assert await send(settings(port, to_addrs=("ops@example.test", "me@example.test"))) == (
            "ops@example.test", "me@example.test")
    [mail] = box.mails
    assert mail["to"] == ["ops@example.test", "me@example.test"] and not mail["tls"]
    assert_the_notice_arrived(mail)


async def test_starttls_verifies_the_server_against_the_given_ca(pki: Pki):
    with smtp_server(tls_context=pki.server_context(), require_starttls=True) as (box, port):
        await send(settings(port, security=Security.STARTTLS, ca_file=str(pki.ca_file)))
    [mail] = box.mails
    assert mail["tls"]
    assert_the_notice_arrived(mail)


async def test_implicit_tls(pki: Pki):
    with smtp_server(ssl_context=pki.server_context()) as (box, port):
        await send(settings(port, security=Security.TLS, ca_file=str(pki.ca_file)))
    [mail] = box.mails
    assert mail["tls"]
    assert_the_notice_arrived(mail)


async def test_login_over_starttls(pki: Pki):
    with smtp_server(tls_context=pki.server_context(), require_starttls=True, authenticator=authenticator,
                     auth_required=True) as (box, port):
        await send(settings(port, security=Security.STARTTLS, ca_file=str(pki.ca_file), username=USER,
                            password=PASSWORD))
    [mail] = box.mails
    assert mail["user"] == USER
    assert_the_notice_arrived(mail)


async def test_a_wrong_password_is_a_clear_error_without_the_password(pki: Pki):
    wrong = "wrong-smtp-password-x9q2"
    with smtp_server(tls_context=pki.server_context(), require_starttls=True, authenticator=authenticator,
                     auth_required=True) as (box, port), pytest.raises(NotifyError) as caught:
        await send(settings(port, security=Security.STARTTLS, ca_file=str(pki.ca_file), username=USER,
                            password=wrong))
    text = str(caught.value)
    assert f"smtp 127.0.0.1:{port}: sending mail failed: login refused (535" in text
    assert f"the server refused user '{USER}'" in text and "SMTP_PASSWORD" in text
    assert wrong not in text and wrong not in repr(caught.value)
    assert box.mails == []


async def test_an_untrusted_certificate_is_refused_and_names_the_ca_setting(pki: Pki):
    with smtp_server(tls_context=pki.server_context(), require_starttls=True) as (box, port), \
            pytest.raises(NotifyError) as caught:
        await send(settings(port, security=Security.STARTTLS, ca_file=str(pki.other_ca_file)))
    text = str(caught.value)
    assert "TLS verification failed (unable to get local issuer certificate)" in text
    assert "SMTP_CA_FILE" in text and "never turn verification off" in text
    assert box.mails == []


async def test_implicit_tls_against_a_plain_port_names_the_mode():
    with smtp_server() as (_box, port), pytest.raises(NotifyError) as caught:
        await send(settings(port, security=Security.TLS, timeout_s=3))
    assert "the TLS handshake failed (WRONG_VERSION_NUMBER)" in str(caught.value)
    assert "may not speak TLS from the first byte: use SMTP_SECURITY=starttls" in str(caught.value)


async def test_starttls_against_a_server_without_it():
    with smtp_server() as (_box, port), pytest.raises(NotifyError, match="does not offer STARTTLS"):
        await send(settings(port, security=Security.STARTTLS))


async def test_a_refused_recipient_is_named(pki: Pki):
    with smtp_server() as (box, port):
        with pytest.raises(NotifyError) as caught:
            await send(settings(port, to_addrs=("ops@example.test", "gone@refused.test")))
        text = str(caught.value)
        assert "recipient(s) refused: gone@refused.test (550 5.1.1 mailbox unavailable)" in text
        assert "delivered to ops@example.test" in text and "SMTP_TO" in text
        assert [m["to"] for m in box.mails] == [["ops@example.test"]]
        with pytest.raises(NotifyError, match=r"refused: gone@refused\.test \(550"):
            await send(settings(port, to_addrs=("gone@refused.test",)))


async def test_nothing_listening_is_connection_refused():
    with pytest.raises(NotifyError, match=r"cannot connect: connection refused\n  next: check that the mail server"):
        await send(settings(free_port()))


async def test_a_server_outside_the_allowed_networks_is_never_contacted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMELAB_ALLOWED_NETWORKS", "10.203.0.0/24")
    with smtp_server() as (box, port), pytest.raises(NotifyError, match="refused before connecting"):
        await send(settings(port))
    assert box.mails == []


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections (the kernel's backlog) but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_a_silent_server_times_out():
    with silent_server() as port, pytest.raises(NotifyError, match=r"no answer within 0\.5s"):
        await send(settings(port, timeout_s=0.5))


async def test_the_fan_out_reports_a_hanging_mail_server_without_raising():
    before = METRICS.get_sample_value("homelab_notification_failures_total", {"channel": "smtp"}) or 0
    with silent_server() as port:
        started = time.monotonic()
        outcome = await notify(NOTICE, Channels(smtp=settings(port, timeout_s=30)), timeout_s=1)
        took = time.monotonic() - started
    assert took < 2.5
    assert not outcome.ok and outcome.off == ("telegram",)
    assert "no delivery within 1s" in outcome.failed["smtp"] or "no answer within" in outcome.failed["smtp"]
    assert METRICS.get_sample_value("homelab_notification_failures_total", {"channel": "smtp"}) == before + 1


async def test_the_fan_out_delivers_by_mail(pki: Pki):
    with smtp_server(tls_context=pki.server_context(), require_starttls=True) as (box, port):
        outcome = await notify(NOTICE, Channels(smtp=settings(port, security=Security.STARTTLS,
                                                              ca_file=str(pki.ca_file))))
    assert outcome.ok and outcome.sent == {"smtp": "mail to ops@example.test"}
    assert_the_notice_arrived(box.mails[0])
