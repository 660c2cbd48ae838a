"""GitHub webhook deliveries as values: signatures, bodies, and what each delivery means."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from model.webhook_events import Decision, PayloadError, classify, parse_body, signature, verify_signature

# GitHub's documented test vector (docs: "Validating webhook deliveries").
VECTOR_SECRET = b"It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SHA = "7c3c0a1fa1b2c3d4e5f60718293a4b5c6d7e8f90"
ZERO = "0" * 40


def push(ref: str = "refs/heads/main", after: object = SHA, **extra: object) -> dict:
    """A push payload in GitHub's shape (trimmed to the fields that matter plus some noise)."""
    return {"ref": ref, "before": "1" * 40, "after": after, "created": False, "deleted": False, "forced": False,
            "base_ref": None, "compare": "https://github.com/me/homelab/compare/111...7c3",
            "commits": [{"id": after, "message": "bump", "author": {"name": "me"}}],
            "head_commit": {"id": after, "timestamp": "2024-05-01T10:00:00+02:00"},
            "repository": {"full_name": "me/homelab", "default_branch": "main"},
            "pusher": {"name": "me"}, "sender": {"login": "me"}, **extra}


PING = {"zen": "Design for failure.", "hook_id": 1, "hook": {"type": "Repository", "events": ["push"]},
        "repository": {"full_name": "me/homelab"}}


def test_github_documented_vector():
    assert signature(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, VECTOR_SIGNATURE.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=" + "0" * 40, VECTOR_SIGNATURE[:-1], VECTOR_SIGNATURE + "0",
    VECTOR_SIGNATURE.replace("7", "8", 1), "SHA256=" + VECTOR_SIGNATURE[7:], " " + VECTOR_SIGNATURE,
    "sha256=" + "é" * 64, "sha256=" + "g" * 64, "sha256=" + " 75" * 32, "sha256=" + "\x00" * 64, "x" * 10000,
    b"sha256=abc", 12345,
], ids=lambda h: repr(h)[:30])
def test_a_bad_or_missing_signature_is_false(header):
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, header) is False


def test_the_signature_covers_the_whole_body_and_the_secret():
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY + b" ", VECTOR_SIGNATURE)
    assert not verify_signature(b"another secret", VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verify_signature(b"", VECTOR_BODY, signature(b"", VECTOR_BODY))  # no secret: nothing passes


@pytest.mark.parametrize(("event", "payload", "expected"), [
    ("ping", PING, Decision("pong", "ping")),
    ("push", push(), Decision("deploy", "push to main", SHA)),
    ("push", push(created=True, before=ZERO), Decision("deploy", "push to main", SHA)),  # branch created
    ("push", push(after="a" * 64), Decision("deploy", "push to main", "a" * 64)),  # SHA-256 repository
    ("push", push("refs/tags/v1.2.0", base_ref="refs/heads/main"), Decision.ignore("tag push 'refs/tags/v1.2.0'")),
    ("push", push(after=ZERO, deleted=True), Decision.ignore("branch 'main' was deleted")),
    ("push", push(after=ZERO), Decision.ignore("branch 'main' was deleted")),
    ("push", push(deleted=True), Decision.ignore("branch 'main' was deleted")),
    ("push", push("refs/heads/feature/x"), Decision.ignore("push to branch 'feature/x', not 'main'")),
    ("push", push("refs/heads/main-old"), Decision.ignore("push to branch 'main-old', not 'main'")),
    ("push", push("refs/notes/commits"), Decision.ignore("push to 'refs/notes/commits', not a branch")),
    ("pull_request", {"action": "opened", "number": 1},
     Decision.ignore("event 'pull_request' is not handled (only push and ping)")),
    ("workflow_run", {}, Decision.ignore("event 'workflow_run' is not handled (only push and ping)")),
    ("push", {}, Decision.reject("the push payload has no string 'ref'")),
    ("push", push(ref=["refs/heads/main"]), Decision.reject("the push payload has no string 'ref'")),
    ("push", push(after=None), Decision.reject("the push payload's 'after' is not a commit id")),
    ("push", push(after=123), Decision.reject("the push payload's 'after' is not a commit id")),
    ("push", push(after="HEAD"), Decision.reject("the push payload's 'after' is not a commit id")),
    ("push", push(after=SHA.upper()), Decision.reject("the push payload's 'after' is not a commit id")),
    ("push", push(after="--upload-pack=x"), Decision.reject("the push payload's 'after' is not a commit id")),
    ("push", push(deleted="false"), Decision.reject("the push payload's 'deleted' is not a boolean")),
], ids=["ping", "push", "branch-created", "sha256-repo", "tag", "delete", "delete-zero-after", "delete-flag",
        "other-branch", "prefix-branch", "not-a-branch", "pull-request", "workflow-run", "empty", "ref-list",
        "after-null", "after-int", "after-name", "after-upper", "after-option", "deleted-str"])
def test_classify(event, payload, expected):
    assert classify(event, payload, "main") == expected


def test_classify_never_raises_and_keeps_reasons_short():
    weird = ["\x00", "x" * 5000, "ref\nwith newline"]
    for event in ["push", "issues", *weird]:
        for payload in [{}, {"ref": 1}, {"ref": None, "after": {}}, push(ref=weird[1]),
                        push(ref="refs/heads/" + weird[2]), [], None, "text"]:
            decision = classify(event, payload, "main")  # type: ignore[arg-type]
            assert decision.action in ("ignore", "reject")
            assert len(decision.reason) < 200 and decision.reason.isprintable()


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", json.dumps(push()).encode()),
    ("application/json; charset=utf-8", json.dumps(push()).encode()),
    ("Application/JSON", json.dumps(push()).encode()),
    ("application/x-www-form-urlencoded", urlencode({"payload": json.dumps(push())}).encode()),
])
def test_parse_body_reads_json_and_github_form_bodies(content_type, body):
    assert parse_body(content_type, body) == push()


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b""), ("application/json", b"{"), ("application/json", b"[1, 2]"),
    ("application/json", b"\xff\xfe\x00garbage"), ("application/json", b'"text"'), ("application/json", b"null"),
    ("application/json", b"[" * 100000 + b"]" * 100000), ("text/plain", b"{}"), (None, b"{}"),
    ("application/x-www-form-urlencoded", b""), ("application/x-www-form-urlencoded", b"other=1"),
    ("application/x-www-form-urlencoded", b"payload=%7B&payload=%7B"),
    ("application/x-www-form-urlencoded", b"payload=" + "é".encode()),
    ("application/x-www-form-urlencoded", b"payload=%5B%5D"),
    ("application/x-www-form-urlencoded", b"&".join(b"a=%d" % i for i in range(1000))),
], ids=lambda v: repr(v)[:25])
def test_parse_body_raises_only_payload_error(content_type, body):
    with pytest.raises(PayloadError):
        parse_body(content_type, body)
