"""Notices as Telegram HTML and as e-mail (pure): escaping, trimming to the cap, masking."""

from __future__ import annotations

import email
import email.policy

import pytest

from model.masking import MASKER
from tasks.integrations.notify.format import email_text, telegram_html
from tasks.integrations.notify.html import MARKER, escape, fit_html, tail, units
from tasks.integrations.notify.notice import Kind, Notice
from tasks.integrations.notify.settings import Security, SmtpSettings
from tasks.integrations.notify.smtp import build_message
from tests.telegram_fake import parse_html

SECRET = "notify-unit-S3CR3T&<pw>"  # holds characters that escaping changes
MASKER.add(SECRET)

LOG_TAIL = "\n".join(f"2024-05-01 line {i}: worker ok" for i in range(2000)) + "\nTraceback: boom <EOF> & done"


def test_escape_turns_the_three_html_characters_into_entities():
    assert escape('a < b > c & "d"') == 'a &lt; b &gt; c &amp; "d"'


@pytest.mark.parametrize(("markup", "limit", "expected"), [
    ("short", 10, "short"),
    ("<b>bold text here</b>", 15, "<b>bold te…</b>"),
    ("a &amp; b &amp; c", 8, "a &amp;…"),  # never "a &am…"
    ("a &amp; b &amp; c", 7, "a …"),
    ("<pre>x<b>y z w</b></pre>", 23, "<pre>x<b>y z…</b></pre>"),
    ("<a href=\"http://x\">link</a> more", 24, "<a href=\"http://x\">…</a>"),
    ("<a href=\"http://x\">link</a> more", 23, "…"),  # the tag with its closing would not fit
], ids=["fits", "closes-the-open-tag", "not-inside-an-entity", "entity-dropped", "closes-nested", "tag-just-fits",
        "tag-too-long"])
def test_fit_html_cuts_between_tags_and_entities(markup: str, limit: int, expected: str):
    fitted = fit_html(markup, limit)
    assert fitted == expected
    assert units(fitted) <= limit
    parse_html(fitted)  # still well-formed Telegram HTML


def test_fit_html_counts_emoji_as_two_units():
    text = "🙂" * 10
    fitted = fit_html(text, 9)
    assert fitted == "🙂" * 4 + MARKER
    assert units(fitted) == 9


def test_fit_html_of_a_long_escaped_log_is_well_formed_and_capped():
    markup = f"<b>title</b>\n<pre>{escape(LOG_TAIL * 3)}</pre>"
    fitted = fit_html(markup)
    assert units(fitted) <= 4096
    assert fitted.endswith(f"{MARKER}</pre>")
    parse_html(fitted)


def test_tail_keeps_the_end_from_a_line_start_and_says_what_was_cut():
    kept = tail(LOG_TAIL, 500)
    assert units(kept) <= 500
    assert kept.endswith("Traceback: boom <EOF> & done")
    first, rest = kept.split("\n", 1)
    assert first.startswith(f"{MARKER} (") and first.endswith("earlier characters trimmed)")
    assert rest.startswith("2024-05-01 line ")
    assert tail("short", 500) == "short"


@pytest.mark.parametrize(("kind", "head"), [
    ("started", "🚀 <b>Deploy started: "),
    ("approval-needed", "⏸️ <b>Approval needed: "),
    ("succeeded", "✅ <b>Deploy succeeded: "),
    ("failed", "❌ <b>Deploy failed: "),
    ("rolled-back", "↩️ <b>Rolled back: "),
])
def test_each_kind_has_its_head_line(kind: str, head: str):
    assert telegram_html(Notice(kind=Kind(kind), title="run 1")).startswith(head + "run 1</b>")


def test_telegram_html_escapes_our_text_and_links_the_run():
    notice = Notice(kind="failed", title="deploy <prod> & co", summary="x < y",
                    details="<script>alert(1)</script>", link='http://127.0.0.1:4200/runs/flow-run/1?a="b"&c=d')
    text = telegram_html(notice)
    assert "deploy &lt;prod&gt; &amp; co" in text
    assert "<pre>&lt;script&gt;alert(1)&lt;/script&gt;</pre>" in text
    assert '<a href="http://127.0.0.1:4200/runs/flow-run/1?a=&quot;b&quot;&amp;c=d">' in text
    assert parse_html(text).startswith("❌ Deploy failed: deploy <prod> & co")


def test_a_link_that_is_not_http_is_left_out():
    assert "<a " not in telegram_html(Notice(kind="failed", title="t", link="javascript:alert(1)"))


def test_long_details_keep_their_end_and_the_message_fits():
    notice = Notice(kind="failed", title="deploy-homelab production", summary="health gate failed on rtx1080",
                    details=LOG_TAIL, link="http://127.0.0.1:4200/runs/flow-run/abc")
    text = telegram_html(notice)
    assert units(text) <= 4096
    assert "Traceback: boom &lt;EOF&gt; &amp; done</pre>" in text
    assert "earlier characters trimmed" in text
    assert text.endswith('<a href="http://127.0.0.1:4200/runs/flow-run/abc">Open the run in Prefect</a>')
    parse_html(text)


def test_an_oversized_title_and_summary_are_bounded():
    text = telegram_html(Notice(kind="failed", title="T" * 5000, summary="S" * 9000, details="d" * 9000))
    assert units(text) <= 4096
    parse_html(text)


def test_a_registered_secret_is_masked_everywhere_before_escaping():
    notice = Notice(kind="failed", title=f"token {SECRET}", summary=f"env says {SECRET}",
                    details=f"{LOG_TAIL}\nDB_PASSWORD={SECRET}\n", link=f"http://127.0.0.1/x?k={SECRET}")
    mail = email_text(notice)
    for text in (telegram_html(notice), mail.subject, mail.plain, mail.html):
        assert SECRET not in text and escape(SECRET) not in text
        assert "S3CR3T" not in text
        assert "***" in text


def test_email_text_has_a_one_line_subject_and_both_bodies():
    notice = Notice(kind="rolled-back", title="deploy\nprod <x>", summary="rolled back to r41",
                    details="probe: 503 <html>", link="http://127.0.0.1:4200/runs/flow-run/1")
    mail = email_text(notice)
    assert mail.subject == "[homelab] Rolled back: deploy prod <x>"
    assert "rolled back to r41" in mail.plain and "probe: 503 <html>" in mail.plain
    assert "Open the run in Prefect: http://127.0.0.1:4200/runs/flow-run/1" in mail.plain
    assert "<pre>probe: 503 &lt;html&gt;</pre>" in mail.html
    assert "deploy prod &lt;x&gt;" in mail.html


def test_email_details_are_trimmed_to_their_end():
    mail = email_text(Notice(kind="failed", title="t", details=LOG_TAIL * 2))
    assert len(mail.plain) < 21_000
    assert mail.plain.rstrip().endswith("Traceback: boom <EOF> & done")


def test_the_mail_is_multipart_alternative_with_plain_and_html():
    settings = SmtpSettings(host="127.0.0.1", from_addr="homelab@example.test",
                            to_addrs=("ops@example.test", "me@example.test"), security=Security.NONE)
    message = build_message(settings, email_text(Notice(kind="succeeded", title="deploy", details=SECRET)))
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["To"] == "ops@example.test, me@example.test"
    assert parsed["Subject"] == "[homelab] Deploy succeeded: deploy"
    assert "S3CR3T" not in message.as_string()
