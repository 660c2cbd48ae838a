"""The SMTP client: one multipart/alternative mail (plain text + HTML) to the configured
recipients, over STARTTLS, implicit TLS, or (a relay on loopback) no TLS.

The stdlib ``smtplib``, run in a thread. TLS is always verified, against ``ca_file`` when given,
else the system CAs. The password is registered with ``MASKER`` and never shown; the server's
replies are shown masked. The server's address is checked against HOMELAB_ALLOWED_NETWORKS
before the first packet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from model.errors import AddressNotAllowed
from model.masking import MASKER
from tasks.integrations.netpolicy import ALLOWED_NETWORKS_ENV, resolve_allowed_sync
from tasks.integrations.notify.errors import NotifyError
from tasks.integrations.notify.format import EmailText
from tasks.integrations.notify.hints import (
    smtp_login_hint,
    smtp_reach_hint,
    smtp_security_hint,
    smtp_tls_hint,
)
from tasks.integrations.notify.settings import SMTP_BLOCK, Security, SmtpSettings, check_smtp

log = logging.getLogger("homelab.notify")


def build_message(settings: SmtpSettings, mail: EmailText) -> EmailMessage:
    """The mail as sent: From, To, Subject, Date, Message-ID; a text/plain part and a text/html
    alternative. Every text is masked."""
    message = EmailMessage()
    message["From"] = settings.from_addr
    message["To"] = ", ".join(settings.to_addrs)
    message["Subject"] = " ".join(MASKER.mask(mail.subject).split())
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.from_addr.rpartition("@")[2] or None)
    message.set_content(MASKER.mask(mail.plain))
    message.add_alternative(MASKER.mask(mail.html), subtype="html")
    return message


def _reply(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(said.split())}"


class SmtpSender:
    """Sends one mail per call; a new connection each time (notices are rare)."""

    def __init__(self, settings: SmtpSettings) -> None:
        check_smtp(settings)
        if settings.password:
            MASKER.add(settings.password)
        if settings.ca_file and not os.path.isfile(settings.ca_file):
            raise NotifyError(f"smtp {settings.host}: CA file {settings.ca_file} does not exist; point SMTP_CA_FILE "
                              f"(or ca_file in the '{SMTP_BLOCK}' block) at the CA of the mail server, or unset it "
                              "for the system CAs", channel="smtp")
        self.settings = settings
        self.server = f"{settings.host}:{settings.effective_port}"

    def __repr__(self) -> str:
        s = self.settings
        return f"SmtpSender(server={self.server!r}, security={s.security.value!r}, user={s.username!r})"

    async def send(self, mail: EmailText, *, deadline: float | None = None) -> tuple[str, ...]:
        """Send ``mail``; the recipients that accepted it (all of them, or NotifyError)."""
        timeout = self.settings.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise self._fail("no time left before the deadline", hint=smtp_reach_hint(self.server))
        message = build_message(self.settings, mail)
        return await asyncio.to_thread(self.send_sync, message, timeout)

    def send_sync(self, message: EmailMessage, timeout: float) -> tuple[str, ...]:
        """Blocking: connect, secure, log in, send. Every failure is a NotifyError."""
        s = self.settings
        try:
            resolve_allowed_sync(f"SMTP server {self.server}", s.host)
        except AddressNotAllowed as exc:
            raise self._fail(f"refused before connecting: {exc}",
                             hint=f"point SMTP_HOST (or the '{SMTP_BLOCK}' block) at a server inside "
                                  f"{ALLOWED_NETWORKS_ENV}, or add its network there") from None
        try:
            refused = self._deliver(message, timeout)
        except NotifyError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail(f"login refused ({_reply(exc.smtp_code, exc.smtp_error)})",
                             hint=smtp_login_hint(s.username or "")) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc.recipients, delivered=()) from None
        except smtplib.SMTPSenderRefused as exc:
            raise self._fail(f"sender {s.from_addr} refused ({_reply(exc.smtp_code, exc.smtp_error)})",
                             hint="set SMTP_FROM to an address this account may send as") from None
        except smtplib.SMTPDataError as exc:
            raise self._fail(f"the server refused the message ({_reply(exc.smtp_code, exc.smtp_error)})",
                             hint="read the mail server's log for why (size limit, spam filter, policy)") from None
        except smtplib.SMTPServerDisconnected as exc:
            if "timed out" in str(exc):  # smtplib turns a read timeout into a disconnect
                raise self._fail(f"no answer within {timeout:.3g}s", hint=smtp_reach_hint(self.server)) from None
            raise self._fail("the server closed the connection", hint=smtp_reach_hint(self.server)) from None
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as exc:
            raise self._fail(f"the server dropped or refused the session ({type(exc).__name__})",
                             hint=smtp_reach_hint(self.server)) from None
        except smtplib.SMTPException as exc:
            raise self._fail(f"SMTP failed ({type(exc).__name__})", hint=smtp_reach_hint(self.server)) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._fail(f"TLS verification failed ({exc.verify_message})",
                             hint=smtp_tls_hint(self.server, s.ca_file)) from None
        except ssl.SSLError as exc:
            raise self._fail(f"the TLS handshake failed ({exc.reason or type(exc).__name__})",
                             hint=smtp_security_hint(s.security.value, s.effective_port)) from None
        except TimeoutError:
            raise self._fail(f"no answer within {timeout:.3g}s", hint=smtp_reach_hint(self.server)) from None
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise self._fail(f"cannot connect: {reason}", hint=smtp_reach_hint(self.server)) from None
        delivered = tuple(a for a in s.to_addrs if a not in refused)
        if refused:
            raise self._refused(refused, delivered=delivered)
        log.info("smtp %s: sent %r to %s", self.server, str(message["Subject"]), ", ".join(delivered))
        return delivered

    def _deliver(self, message: EmailMessage, timeout: float) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file or None)
        local = socket.gethostname() or "localhost"  # not getfqdn(): a DNS lookup that can hang
        if s.security is Security.TLS:
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.effective_port, local_hostname=local,
                                                    timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(s.host, s.effective_port, local_hostname=local, timeout=timeout)
        with client:
            client.ehlo()
            if s.security is Security.STARTTLS:
                if not client.has_extn("starttls"):
                    raise self._fail("the server does not offer STARTTLS",
                                     hint=f"use SMTP_SECURITY=tls if {self.server} speaks TLS from the first byte "
                                          "(port 465); use none only for a relay on loopback")
                client.starttls(context=context)
                client.ehlo()
            if s.username and s.password:
                if not client.has_extn("auth"):
                    raise self._fail("the server offers no login (AUTH) on this connection",
                                     hint="unset SMTP_USERNAME and SMTP_PASSWORD for a relay without login, or "
                                          "check SMTP_SECURITY (servers offer AUTH only after TLS)")
                client.login(s.username, s.password)
            return client.send_message(message, from_addr=s.from_addr, to_addrs=list(s.to_addrs))

    def _refused(self, refused: dict[str, tuple[int, bytes]], *, delivered: tuple[str, ...]) -> NotifyError:
        which = "; ".join(f"{addr} ({_reply(code, text)})" for addr, (code, text) in refused.items())
        got = f"; delivered to {', '.join(delivered)}" if delivered else ""
        return self._fail(f"recipient(s) refused: {which}{got}",
                          hint="fix the address in SMTP_TO (or to_addrs in the block), or allow this sender to "
                               "relay to it")

    def _fail(self, cause: str, *, hint: str) -> NotifyError:
        return NotifyError(f"smtp {self.server}: sending mail failed: {cause}\n  next: {hint}", channel="smtp",
                           cause=cause)
