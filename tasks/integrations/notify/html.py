"""Telegram HTML (pure): escape our text, and fit markup under a length cap without cutting
inside a tag or an entity. Lengths are counted in UTF-16 code units, as Telegram counts them, so
an emoji counts two."""

from __future__ import annotations

import html
import re

TELEGRAM_LIMIT = 4096  # sendMessage text, 1-4096 characters
MARKER = "…"

_TOKEN = re.compile(r"<[^<>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);|[^<&]+|[<&]")
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)")


def escape(text: str) -> str:
    """``<``, ``>`` and ``&`` as entities: the only characters Telegram's HTML mode needs escaped
    in text (quotes matter only inside an attribute; use ``attribute`` there)."""
    return html.escape(text, quote=False)


def attribute(text: str) -> str:
    return html.escape(text, quote=True)


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _take(text: str, room: int) -> str:
    """The longest start of ``text`` of at most ``room`` units."""
    kept, size = [], 0
    for char in text:
        size += units(char)
        if size > room:
            break
        kept.append(char)
    return "".join(kept)


def _opened(stack: tuple[str, ...], token: str) -> tuple[str, ...]:
    match = _TAG.match(token)
    if not match:
        return stack
    closing, name = match.group(1), match.group(2).lower()
    if not closing:
        return (*stack, name)
    if name in stack:
        at = len(stack) - 1 - stack[::-1].index(name)
        return stack[:at]
    return stack


def _closing(stack: tuple[str, ...]) -> str:
    return "".join(f"</{name}>" for name in reversed(stack))


def fit_html(markup: str, limit: int = TELEGRAM_LIMIT) -> str:
    """``markup`` unchanged when it fits in ``limit``; otherwise its start, cut between tags and
    entities (a text run is cut at its last line break when one is near), then ``…`` and the
    closing tags of every tag still open. The result is at most ``limit`` units long."""
    if units(markup) <= limit:
        return markup
    out: list[str] = []
    size = 0
    stack: tuple[str, ...] = ()
    for match in _TOKEN.finditer(markup):
        token = match.group()
        after = _opened(stack, token)
        if size + units(token) + units(MARKER) + units(_closing(after)) <= limit:
            out.append(token)
            size += units(token)
            stack = after
            continue
        if token[0] not in "<&":  # text: keep what fits
            part = _take(token, limit - size - units(MARKER) - units(_closing(stack)))
            newline = part.rfind("\n")
            if newline >= 0 and len(part) - newline < 200:
                part = part[:newline + 1]
            out.append(part)
        break
    return "".join(out) + MARKER + _closing(stack)


def tail(text: str, limit: int) -> str:
    """The end of ``text`` in at most ``limit`` units, starting at a line when one starts near the
    cut, behind a line saying how much was left out. The end of a log tail or a traceback is
    what matters."""
    if units(text) <= limit:
        return text
    note_room = 48
    kept = _take(text[::-1], max(limit - note_room, 0))[::-1]
    newline = kept.find("\n")
    if 0 <= newline < 200:
        kept = kept[newline + 1:]
    dropped = len(text) - len(kept)
    return f"{MARKER} ({dropped} earlier characters trimmed)\n{kept}"
