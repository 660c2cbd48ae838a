"""Smoke tests' pure parts: the check's schema, the exec command, how an answer is judged, and
the tables and summary made from results."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from model.smoke import SmokeCheck
from tasks.engine.smoke import (
    SmokeResult,
    judge_exec,
    judge_http,
    smoke_summary,
    smoke_table_markdown,
    smoke_table_text,
    split_response,
)
from tasks.host_commands.compose import ComposeProject
from tasks.host_commands.smoke import smoke_exec_command

URL = "http://127.0.0.1:8080/"


def _mask(text: str) -> str:
    return text.replace("hunter22", "***")


# --- the schema ---

@pytest.mark.parametrize(("fields", "message"), [
    ({}, "exactly one of `http` or `exec`"),
    ({"http": URL, "exec": "true", "service": "web"}, "exactly one of `http` or `exec`"),
    ({"exec": "true"}, "an `exec` smoke test needs `service`"),
    ({"http": URL, "service": "web"}, "`service` only applies to `exec` smoke tests"),
    ({"http": URL, "expect_exit": 1}, "`expect_exit` only applies to `exec` smoke tests"),
    ({"exec": "true", "service": "web", "body_contains": "x"}, "`body_contains` only applies to `http`"),
    ({"exec": "true", "service": "web", "body_regex": "x", "max_latency_ms": 5},
     "`body_regex`, `max_latency_ms` only apply to `http`"),
    ({"exec": "true", "service": "web", "expect_status": 204}, "`expect_status` only applies to `http`"),
    ({"http": URL, "body_regex": "lab-web ("}, "`body_regex` 'lab-web (' is not a valid regular expression: missing )"),
    ({"http": "https://127.0.0.1:8443/"}, "`http` must look like http://127.0.0.1:8080/health"),
    ({"http": "http://127.0.0.1/"}, "explicit host and port"),
    ({"http": "http://:8080/"}, "explicit host and port"),
    ({"http": "http://127.0.0.1:99999/"}, "explicit host and port"),
    ({"http": "127.0.0.1:8080"}, "explicit host and port"),
    ({"http": URL, "expect_status": 600}, "less than or equal to 599"),
    ({"http": URL, "max_latency_ms": 0}, "greater than 0"),
    ({"http": URL, "timeout_s": 0}, "greater than 0"),
    ({"exec": "true", "service": "web", "expect_exit": 256}, "less than or equal to 255"),
    ({"exec": "", "service": "web"}, "at least 1 character"),
    ({"http": URL, "colour": "blue"}, "Extra inputs are not permitted"),
])
def test_invalid_checks_say_what_is_wrong(fields, message):
    with pytest.raises(ValidationError) as info:
        SmokeCheck(**fields)
    assert message in str(info.value)


@pytest.mark.parametrize(("fields", "described"), [
    ({"http": URL}, "http http://127.0.0.1:8080/"),
    ({"exec": 'test -n "$STACK"', "service": "web"}, 'exec web: test -n "$STACK"'),
    ({"name": "home page", "http": URL, "body_regex": r"^lab-web \S+ newsletter$"}, "home page"),
])
def test_describe_is_the_name_or_derived(fields, described):
    assert SmokeCheck(**fields).describe() == described


def test_defaults():
    check = SmokeCheck(http="http://localhost:9000/api/health")
    assert (check.expect_status, check.timeout_s, check.max_latency_ms) == (200, 30, None)
    assert check.endpoint() == ("localhost", 9000)
    assert SmokeCheck(exec="true", service="web").expect_exit == 0


# --- the exec command ---

PROJECT = ComposeProject(name="newsletter", directory=".homelab/stacks/newsletter",
                         files=(".homelab/stacks/newsletter/compose.yaml",), profiles=("extra",))


@pytest.mark.parametrize(("check", "argv"), [
    (SmokeCheck(exec='test -n "$STACK"', service="web"),
     ["timeout", "30", "docker", "compose", "-p", "newsletter", "--project-directory", ".homelab/stacks/newsletter",
      "-f", ".homelab/stacks/newsletter/compose.yaml", "--profile", "extra",
      "exec", "-T", "web", "sh", "-c", 'test -n "$STACK"']),
    (SmokeCheck(exec="sleep 5", service="db", timeout_s=0.2),  # timeout(1) gets whole seconds, at least 1
     ["timeout", "1", "docker", "compose", "-p", "newsletter", "--project-directory", ".homelab/stacks/newsletter",
      "-f", ".homelab/stacks/newsletter/compose.yaml", "--profile", "extra",
      "exec", "-T", "db", "sh", "-c", "sleep 5"]),
    (SmokeCheck(exec="x", service="web", timeout_s=89.6),
     ["timeout", "90", "docker", "compose", "-p", "newsletter", "--project-directory", ".homelab/stacks/newsletter",
      "-f", ".homelab/stacks/newsletter/compose.yaml", "--profile", "extra", "exec", "-T", "web", "sh", "-c", "x"]),
])
def test_smoke_exec_command(check, argv):
    assert smoke_exec_command(PROJECT, check) == argv


def test_smoke_exec_command_refuses_an_http_check():
    with pytest.raises(ValueError, match="not an exec smoke test"):
        smoke_exec_command(PROJECT, SmokeCheck(http=URL))


@pytest.mark.parametrize(("script", "exit_status"), [("exit 3", 3), ("sleep 5", 124), ('test "$0" = sh', 0)])
def test_smoke_exec_command_runs_under_timeout(fake_bin, script, exit_status):
    """The argv in a real shell, with a `docker` that runs what follows `exec -T <service>`."""
    env = fake_bin("docker", 'while [ "$1" != -T ]; do shift; done; shift 2; exec "$@"\n')
    argv = smoke_exec_command(PROJECT, SmokeCheck(exec=script, service="web", timeout_s=1))
    assert subprocess.run(argv, env=env, timeout=10).returncode == exit_status


# --- judging recorded answers ---

@pytest.mark.parametrize(("data", "status", "body"), [
    (b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nlab-web 2 newsletter", 200, "lab-web 2 newsletter"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, ""),
    (b"HTTP/1.1 500 Internal Server Error\r\nX: y", 500, ""),
    (b"HTTP/1.0 200 OK\r\n\r\nline\r\n\r\nmore", 200, "line\r\n\r\nmore"),
    (b"", None, ""),
    (b"SSH-2.0-OpenSSH_9.6\r\n", None, "SSH-2.0-OpenSSH_9.6\r\n"),
    (b"\xff\xfe garbage", None, "\ufffd\ufffd garbage"),
    (b"HTTP/1.0 200 OK\r\n\r\n\xffok", 200, "\ufffdok"),
])
def test_split_response(data, status, body):
    assert split_response(data) == (status, body)


WEB = SmokeCheck(http=URL, body_contains="lab-web 2", body_regex=r"^lab-web \S+ newsletter$", max_latency_ms=500)


@pytest.mark.parametrize(("check", "status", "body", "latency_ms", "ok", "detail"), [
    (WEB, 200, "lab-web 2 newsletter", 12.4, True, "200 in 12 ms"),
    (WEB, 200, "lab-web 2 newsletter", 0.42, True, "200 in 0.42 ms"),
    (SmokeCheck(http=URL, expect_status=204), 204, "", None, True, "204"),
    (WEB, 500, "lab-web 2 newsletter", 3, False, "got 500, expected 200; body: 'lab-web 2 newsletter'"),
    (WEB, 200, "lab-web 1 newsletter", 3, False, "body does not contain 'lab-web 2'; body: 'lab-web 1 newsletter'"),
    (WEB, 200, "lab-web 2 redis", 3, False,
     r"body does not match /^lab-web \S+ newsletter$/; body: 'lab-web 2 redis'"),
    (WEB, 200, "lab-web 2 newsletter", 812, False, "took 812 ms > 500 ms"),
    (SmokeCheck(http=URL, max_latency_ms=0.001), 200, "", 2.5, False, "took 2.5 ms > 0.001 ms"),
    (WEB, None, "", 3, False, "got no HTTP answer, expected 200; body does not contain 'lab-web 2'; "
                              r"body does not match /^lab-web \S+ newsletter$/; body: ''"),
    (SmokeCheck(http=URL), None, "SSH-2.0-OpenSSH_9.6\r\n", 1, False,
     r"got no HTTP answer, expected 200; body: 'SSH-2.0-OpenSSH_9.6\r\n'"),
    (SmokeCheck(http=URL, body_contains="welcome"), 200, "token=hunter22", 1, False,
     "body does not contain 'welcome'; body: 'token=***'"),
])
def test_judge_http(check, status, body, latency_ms, ok, detail):
    assert judge_http(check, status, body, latency_ms, _mask) == (ok, detail)


def test_judge_http_regex_searches_the_whole_body():
    check = SmokeCheck(http=URL, body_regex="ok [0-9]+")
    assert judge_http(check, 200, "status:\nok 42\n", 1)[0]


def test_a_detail_is_cut_to_300_characters():
    ok, detail = judge_http(WEB, 503, "x" * 1000, 900)
    assert not ok and len(detail) == 300
    assert detail.startswith("got 503, expected 200; body does not contain 'lab-web 2'; body does not match "
                             "/^lab-web \\S+ newsletter$/; took 900 ms > 500 ms; body: 'xxx")
    assert detail.endswith("xxx...")


def test_a_long_body_is_quoted_only_in_part():
    ok, detail = judge_http(SmokeCheck(http=URL, body_contains="needle"), 200, "y" * 5000, 1)
    assert not ok and detail == "body does not contain 'needle'; body: '" + "y" * 200 + "'"


EXEC = SmokeCheck(exec="exit 3", service="web", timeout_s=1)


@pytest.mark.parametrize(("check", "exit_status", "output", "ok", "detail"), [
    (EXEC, 0, "", True, "exit 0"),
    (EXEC, 3, "", False, "exit 3, expected 0"),
    (EXEC, 3, "migrations pending\nrun it with --apply\n", False,
     "exit 3, expected 0: migrations pending run it with --apply"),
    (SmokeCheck(exec="exit 3", service="web", expect_exit=3), 3, "", True, "exit 3"),
    (EXEC, 124, "", False, "timed out after 1 s"),
    (EXEC, None, "", False, "ended without an exit status (killed by a signal?), expected exit 0"),
    (EXEC, 1, "password=hunter22", False, "exit 1, expected 0: password=***"),
    (EXEC, 1, "a" * 100 + "b" * 400, False, "exit 1, expected 0: " + "b" * 280),
])
def test_judge_exec(check, exit_status, output, ok, detail):
    assert judge_exec(check, exit_status, output, _mask) == (ok, detail)


# --- tables and summary ---

RESULTS = [
    SmokeResult("newsletter-staging", "thinkpad", "home page", True, "200 in 3 ms", 3.2),
    SmokeResult("newsletter-staging", "thinkpad", 'exec web: test "$STACK" = newsletter', True, "exit 0", 412.0),
    SmokeResult("redis-staging", "thinkpad", "http http://127.0.0.1:9102/", False, "got 500, expected 200", 8.0),
    SmokeResult("redis-staging", "thinkpad", "exec web: a|b", False, "ConnectionError: gone", None),
]


def test_smoke_table_markdown():
    assert smoke_table_markdown(RESULTS) == "\n".join([
        "| stack | host | check | result | ms | detail |",
        "|---|---|---|---|---|---|",
        "| newsletter-staging | thinkpad | home page | pass | 3.2 | 200 in 3 ms |",
        '| newsletter-staging | thinkpad | exec web: test "$STACK" = newsletter | pass | 412 | exit 0 |',
        "| redis-staging | thinkpad | http http://127.0.0.1:9102/ | FAIL | 8 | got 500, expected 200 |",
        "| redis-staging | thinkpad | exec web: a\\|b | FAIL | - | ConnectionError: gone |",
    ])


def test_smoke_table_text():
    assert smoke_table_text(RESULTS).splitlines() == [
        "stack               host      check                                 result  ms   detail",
        "newsletter-staging  thinkpad  home page                             pass    3.2  200 in 3 ms",
        'newsletter-staging  thinkpad  exec web: test "$STACK" = newsletter  pass    412  exit 0',
        "redis-staging       thinkpad  http http://127.0.0.1:9102/           FAIL    8    got 500, expected 200",
        "redis-staging       thinkpad  exec web: a|b                         FAIL    -    ConnectionError: gone",
    ]
    assert smoke_table_text([]) == "no smoke tests"


def test_smoke_table_text_keeps_one_line_per_result():
    long = SmokeResult("s", "h", "c" * 100, False, "line one\nline two", None)
    [_, row] = smoke_table_text([long]).splitlines()
    assert row == "s      h     " + "c" * 57 + "...  FAIL    -   line one line two"


@pytest.mark.parametrize(("results", "summary"), [
    (RESULTS, "2 of 4 smoke tests passed; failed: redis-staging: http http://127.0.0.1:9102/: got 500, expected "
              "200; redis-staging: exec web: a|b: ConnectionError: gone"),
    (RESULTS[:2], "2 of 2 smoke tests passed"),
    (RESULTS[:1], "1 of 1 smoke test passed"),
    ([], "no smoke tests"),
])
def test_smoke_summary(results, summary):
    assert smoke_summary(results) == summary


def test_a_result_survives_json():
    for result in RESULTS:
        assert SmokeResult(**result.to_json()) == result
