"""The secret masker: a value is masked as it is and in every form it takes on its way out."""

from __future__ import annotations

import base64
import json
import shlex
import threading
from urllib.parse import quote, quote_plus

import pytest

from model.masking import SecretMasker, encoded_forms

TRICKY = 'S3CR3T-q"uo\\te-\'ü€🙂-x'  # a double quote, a backslash, a single quote, non-ASCII
NEWLINE = "S3CR3T-line1\nline2\ttab"

ENCODINGS = {
    "as is": lambda v: v,
    "json.dumps": lambda v: json.dumps({"env": [f"KEY={v}"]}),
    "json.dumps ensure_ascii=False": lambda v: json.dumps({"log": v}, ensure_ascii=False),
    "repr": repr,
    "repr in a dict": lambda v: repr({"body": v, "other": 'a "quote"'}),
    "repr of bytes": lambda v: repr(v.encode()),
    "ascii": ascii,
    "quote": quote,
    "quote safe=''": lambda v: "https://x/?p=" + quote(v, safe=""),
    "quote_plus": lambda v: "a=1&p=" + quote_plus(v),
    "base64": lambda v: "Authorization: Basic " + base64.b64encode(v.encode()).decode(),
    "base64 urlsafe": lambda v: base64.urlsafe_b64encode(v.encode()).decode(),
    "base64 unpadded": lambda v: base64.b64encode(v.encode()).decode().rstrip("="),
    "shlex.join": lambda v: shlex.join(["env", f"KEY={v}", v]),
}


@pytest.mark.parametrize("value", [TRICKY, NEWLINE, "plain-secret-value"], ids=["quotes", "newline", "plain"])
@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_encoded_form_is_masked(value, encode):
    masker = SecretMasker()
    masker.add(value)
    text = f"before {encode(value)} after"
    shown = masker.mask(text)
    assert "***" in shown
    for form in encoded_forms(value):
        assert form not in shown, f"{form!r} survived in {shown!r}"


def test_a_quote_and_backslash_secret_in_json_output_is_masked():
    masker = SecretMasker()
    masker.add('pa"ss\\word')
    assert masker.mask(json.dumps({"error": 'pw=pa"ss\\word'})) == '{"error": "pw=***"}'
    assert masker.mask(repr('pw=pa"ss\\word')) == "'pw=***'"


def test_the_longest_match_wins_and_text_around_is_kept():
    masker = SecretMasker()
    masker.add("abc", "abcdef")
    assert masker.mask("x=abcdef y=abc z=ab") == "x=*** y=*** z=ab"


def test_values_sharing_a_prefix_are_each_masked():
    masker = SecretMasker()
    masker.add("secret-one-1234", "secret-two-5678", "secret-")
    assert masker.mask("secret-one-1234 secret-two-5678 secret-x secre") == "*** *** ***x secre"


def test_a_long_value_is_masked():
    value = "k" * 5000 + "-tail"  # e.g. a PEM key: deep prefixes must not exhaust the regex or recursion
    masker = SecretMasker()
    masker.add(value, value[:4000] + "other")
    assert masker.mask(f"a{value}b") == "a***b"


def test_without_secrets_text_is_left_alone():
    assert SecretMasker().mask("nothing to hide") == "nothing to hide"


def test_regex_metacharacters_are_literal():
    masker = SecretMasker()
    masker.add("a.b*c(d)[e]|f?+{2}^$")
    assert masker.mask("x a.b*c(d)[e]|f?+{2}^$ y aXbbc") == "x *** y aXbbc"


def test_adding_from_threads_while_masking():
    masker = SecretMasker()
    values = [f"value-{i:04d}-secret" for i in range(200)]

    def add(chunk: list[str]) -> None:
        for v in chunk:
            masker.add(v)

    threads = [threading.Thread(target=add, args=(values[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert masker.mask(" ".join(values)) == " ".join(["***"] * len(values))
