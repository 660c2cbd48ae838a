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


def network_cause(text: str) -> str | None:
    """A network failure's cause in a few words, read from its message; None if it names none."""
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if any(m in low for m in ("name or service not known", "nodename nor servname", "name resolution", "nodename")):
        return "the host name does not resolve"
    if "no route to host" in low:
        return "no route to host"
    if "unreachable" in low:
        return "network is unreachable"
    if "reset by peer" in low or "remotedisconnected" in low or "aborted" in low:
        return "the connection was dropped"
    return None
