"""A notice as a Telegram message (HTML) and as an e-mail (subject, plain text, HTML): pure.

Every field is masked (``MASKER.mask``) before it is escaped, so a registered secret in a log
tail never reaches a chat or a mailbox, and escaping cannot hide it from the masker. Details
(a stack, probe output, a log tail) are trimmed to their end, which is where the cause is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model.masking import MASKER
from tasks.integrations.notify.html import TELEGRAM_LIMIT, attribute, escape, fit_html, tail, units
from tasks.integrations.notify.notice import Kind, Notice

LABELS = {
    Kind.STARTED: ("🚀", "Deploy started"),
    Kind.APPROVAL_NEEDED: ("⏸️", "Approval needed"),
    Kind.SUCCEEDED: ("✅", "Deploy succeeded"),
    Kind.FAILED: ("❌", "Deploy failed"),
    Kind.ROLLED_BACK: ("↩️", "Rolled back"),
    Kind.NOT_APPROVED: ("🛑", "Not approved"),
}
TITLE_MAX = 200
SUMMARY_MAX = 1500
EMAIL_DETAILS_MAX = 20_000
SUBJECT_MAX = 160


@dataclass(frozen=True)
class EmailText:
    subject: str
    plain: str
    html: str


@dataclass(frozen=True)
class _Fields:
    icon: str
    label: str
    title: str
    summary: str
    details: str
    link: str | None


def _head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _fields(notice: Notice) -> _Fields:
    """The notice's text, masked and bounded; the link only if it is http(s)."""
    icon, label = LABELS[notice.kind]
    link = MASKER.mask(notice.link.strip()) if notice.link else None
    return _Fields(icon=icon, label=label,
                   title=_head(" ".join(MASKER.mask(notice.title).split()), TITLE_MAX),
                   summary=_head(MASKER.mask(notice.summary).strip(), SUMMARY_MAX),
                   details=MASKER.mask(notice.details).strip("\n"),
                   link=link if link and re.match(r"https?://", link) else None)


def telegram_html(notice: Notice, limit: int = TELEGRAM_LIMIT) -> str:
    """One message of at most ``limit`` units, for ``parse_mode=HTML``: the kind and title in bold,
    the summary, the details' end in ``<pre>``, and a link to the run."""
    f = _fields(notice)
    parts = [f"{f.icon} <b>{escape(f.label)}: {escape(f.title)}</b>"]
    if f.summary:
        parts.append(escape(f.summary))
    link = f'<a href="{attribute(f.link)}">Open the run in Prefect</a>' if f.link else ""
    if f.details:
        frame = "\n\n<pre></pre>"
        budget = limit - units("\n\n".join([*parts, link])) - units(frame)
        if (pre := _escaped_tail(f.details, budget)) is not None:
            parts.append(f"<pre>{pre}</pre>")
    if link:
        parts.append(link)
    return fit_html("\n\n".join(parts), limit)


def _escaped_tail(details: str, budget: int) -> str | None:
    """The escaped end of ``details`` in at most ``budget`` units (escaping makes text longer, so
    the raw cut shrinks until the escaped text fits); None when too little room is left."""
    room = budget
    while room >= 80:
        text = escape(tail(details, room))
        if units(text) <= budget:
            return text
        room -= units(text) - budget
    return None


def email_text(notice: Notice) -> EmailText:
    """A subject on one line, a plain-text body and the same as HTML (multipart/alternative)."""
    f = _fields(notice)
    details = tail(f.details, EMAIL_DETAILS_MAX) if f.details else ""
    subject = _head(f"[homelab] {f.label}: {f.title}", SUBJECT_MAX)
    plain = [f"{f.label}: {f.title}"]
    rich = [f"<h2>{escape(f.icon)} {escape(f.label)}: {escape(f.title)}</h2>"]
    if f.summary:
        plain.append(f.summary)
        rich.append(f"<p>{escape(f.summary)}</p>".replace("\n", "<br>\n"))
    if details:
        plain.append(f"Details:\n{details}")
        rich.append(f"<h3>Details</h3>\n<pre>{escape(details)}</pre>")
    if f.link:
        plain.append(f"Open the run in Prefect: {f.link}")
        rich.append(f'<p><a href="{attribute(f.link)}">Open the run in Prefect</a></p>')
    body = "\n".join(rich)
    return EmailText(subject=subject, plain="\n\n".join(plain) + "\n",
                     html=f'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n{body}\n</body></html>\n')
