"""GitHub webhook deliveries, as values: is the signature right, what does the body say, and
what should the receiver do about it. Pure: no network, no Prefect; the receiver is in
``deployments/webhook.py``.

Every function here takes bytes or a parsed payload straight from the internet, so none of
them raises anything but ``PayloadError`` (a ValueError), whatever the input.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

SIGNATURE_PREFIX = "sha256="
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 and SHA-256 repositories
ZERO_COMMIT = re.compile(r"0{40}|0{64}")

Action = Literal["deploy", "pong", "ignore", "reject"]


class PayloadError(ValueError):
    """The body is not a GitHub webhook payload (wrong encoding, not JSON, not an object)."""


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for this body."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True only for a well-formed ``sha256=<64 hex>`` header that matches the body's HMAC."""
    if not secret or not isinstance(header, str) or not header.startswith(SIGNATURE_PREFIX):
        return False
    digest = header[len(SIGNATURE_PREFIX):]
    # The regex also keeps non-ASCII text away from compare_digest, which raises on it.
    if not _HEX64.fullmatch(digest):
        return False
    return hmac.compare_digest(digest.lower(), signature(secret, body)[len(SIGNATURE_PREFIX):])


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(content_type: str | None, body: bytes) -> dict:
    """The payload of a JSON body, or of the ``payload=`` field of a form-encoded one."""
    kind = media_type(content_type)
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError("the form body is not valid application/x-www-form-urlencoded") from exc
        values = fields.get("payload")
        if not values or len(values) != 1:
            raise PayloadError("the form body has no single 'payload' field")
        text: str | bytes = values[0]
    elif kind == "application/json":
        text = body
    else:
        raise PayloadError(f"unsupported content type {kind or '(none)'!r}")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError("the body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise PayloadError("the JSON body is not an object")
    return payload


@dataclass(frozen=True)
class Decision:
    """What to do with one delivery: deploy ``ref``, answer a ping, ignore it or reject it (400)."""

    action: Action
    reason: str
    ref: str | None = None

    @classmethod
    def deploy(cls, ref: str, branch: str) -> Decision:
        return cls("deploy", f"push to {branch}", ref)

    @classmethod
    def ignore(cls, reason: str) -> Decision:
        return cls("ignore", reason)

    @classmethod
    def reject(cls, reason: str) -> Decision:
        return cls("reject", reason)


def classify(event: str, payload: dict, branch: str) -> Decision:
    """Decide on one (already authenticated) delivery. Never raises."""
    if event == "ping":
        return Decision("pong", "ping")
    if event != "push":
        return Decision.ignore(f"event {_shown(event)!r} is not handled (only push and ping)")
    if not isinstance(payload, dict):
        return Decision.reject("the push payload is not an object")
    ref, after, deleted = payload.get("ref"), payload.get("after"), payload.get("deleted", False)
    if not isinstance(ref, str):
        return Decision.reject("the push payload has no string 'ref'")
    if ref.startswith("refs/tags/"):
        return Decision.ignore(f"tag push {_shown(ref)!r}")
    if not ref.startswith("refs/heads/"):
        return Decision.ignore(f"push to {_shown(ref)!r}, not a branch")
    if ref != f"refs/heads/{branch}":
        return Decision.ignore(f"push to branch {_shown(ref.removeprefix('refs/heads/'))!r}, not {branch!r}")
    if deleted is True or (isinstance(after, str) and ZERO_COMMIT.fullmatch(after)):
        return Decision.ignore(f"branch {branch!r} was deleted")
    if not isinstance(deleted, bool):
        return Decision.reject("the push payload's 'deleted' is not a boolean")
    if not isinstance(after, str) or not _COMMIT.fullmatch(after):
        return Decision.reject("the push payload's 'after' is not a commit id")
    return Decision.deploy(after, branch)


def _shown(text: object, limit: int = 80) -> str:
    """Payload text fit for an answer or the audit log: printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."
