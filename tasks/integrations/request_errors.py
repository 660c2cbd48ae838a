"""The reason inside a requests/urllib3 exception, for messages that never echo request data."""

from __future__ import annotations


def innermost(exc: BaseException) -> BaseException:
    """The innermost exception a requests error wraps (requests nests urllib3's in ``args[0]``)."""
    inner = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    return inner


def reason_text(exc: BaseException) -> str:
    """The innermost useful reason (urllib3's ``reason`` where it has one), as raw text."""
    inner = innermost(exc)
    reason = getattr(inner, "reason", None)
    return str(reason if isinstance(reason, BaseException) else inner)
