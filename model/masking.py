"""Secret values must never reach a log, an error, a report or a Prefect result.

Every value read from Vault is registered here; ``MASKER.mask`` replaces each with ``***``.
Errors (``HomelabError``) and run reports mask themselves, so call sites cannot forget.
"""

from __future__ import annotations


class SecretMasker:
    """Replaces every registered secret value with ``***`` in text bound for logs or errors."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str) -> None:
        self._values.update(v for v in values if v and len(v) >= 3)

    def mask(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


MASKER = SecretMasker()
