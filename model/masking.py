"""Secret values must never reach a log, an error, a report or a Prefect result.

Every value read from Vault is registered here; ``MASKER.mask`` replaces each with ``***``.
Errors (``HomelabError``) and run reports mask themselves, so call sites cannot forget.

A value is masked not only as it is, but also in the forms it takes on its way out: escaped
for JSON (container logs, ``--json``), in a Python ``repr`` (a probe body), URL-encoded,
shell-quoted, and base64-encoded as a whole. Base64 of a value embedded in a longer encoded
string depends on its offset and is not caught. The forms are computed once in ``add``; ``mask``
is one pass of one pattern (a radix tree of the forms, longest match first), compiled again only
after new values were added.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 8
"""Secrets shorter than this are refused where they are read (Vault): masking a short value
would blank out ordinary text, and not masking it would leak it."""

_MIN_MASKED = 3  # shorter values are never masked (they would blank out ordinary text)


def encoded_forms(value: str) -> set[str]:
    """``value`` and the escaped or encoded forms it can take in text bound for the user."""
    raw = value.encode("utf-8", errors="surrogatepass")
    b64 = base64.b64encode(raw).decode()
    b64_url = base64.urlsafe_b64encode(raw).decode()
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        repr("\"'" + value)[4:-1],  # inside a repr that escapes ' (the text around it holds a ")
        ascii(value)[1:-1],
        repr(raw)[2:-1],  # in a bytes repr
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        shlex.quote(value),
        value.replace("'", "'\"'\"'"),  # inside a longer shell-quoted word
        b64, b64.rstrip("="), b64_url, b64_url.rstrip("="),
    }
    return {form for form in forms if len(form) >= _MIN_MASKED}


class SecretMasker:
    """Replaces every registered secret value, and its encoded forms, with ``***``."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False  # forms were added since the pattern was compiled
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= _MIN_MASKED and value not in self._values:
                    self._values.add(value)
                    self._forms |= encoded_forms(value)
                    self._stale = True

    def values(self) -> list[str]:
        """The registered values (to hand to a worker host's masker)."""
        with self._lock:
            return sorted(self._values)

    def mask(self, text: str) -> str:
        if self._stale:
            self._compile()
        pattern = self._pattern  # one read: another thread may swap it
        return text if pattern is None else pattern.sub("***", text)

    def mask_json(self, value: object) -> object:
        """Every string (keys too) in a JSON-able structure, masked."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_json(k): self.mask_json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_json(v) for v in value]
        return value

    def _compile(self) -> None:
        """Once after any number of adds, on the next mask."""
        with self._lock:
            if self._stale:
                self._pattern = re.compile(_alternation(sorted(self._forms)))
                self._stale = False


def _alternation(words: list[str]) -> str:
    """One regex matching any of ``words`` (sorted), longest first, as a radix tree: a plain
    ``a|b|c`` alternation is tried branch by branch at every position, this one char by char."""
    groups: dict[str, list[str]] = {}
    for word in words:
        if word:
            groups.setdefault(word[0], []).append(word)
    branches = []
    for group in groups.values():
        prefix = _common_prefix(group[0], group[-1])  # sorted: the first and last share the group's
        branches.append(re.escape(prefix) + _alternation([word[len(prefix):] for word in group]))
    if not branches:
        return ""
    optional = "" in words  # a word ends here; the greedy ? still prefers the longer ones
    if len(branches) == 1 and not optional:
        return branches[0]
    return "(?:" + "|".join(branches) + ")" + ("?" if optional else "")


def _common_prefix(first: str, last: str) -> str:
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


MASKER = SecretMasker()
