"""The pure parts of worker mode's latency work: the adaptive poll interval, the reply
inbox's routing (one poller for every host), and the claim's validation. The claim itself,
against a real server, is in tests/integration/test_workers.py."""

from __future__ import annotations

import pytest

from model.errors import HomelabError
from tasks.engine.worker_session import POLL_MAX_S, POLL_MIN_S, ReplyInbox, WorkerSession, poll_interval
from tasks.engine.worker_standby import _parent_of, ack_key
from tasks.engine.worker_wire import reply_prefix


def test_the_poll_is_quick_after_a_message_and_slows_as_the_wait_goes_on() -> None:
    assert poll_interval(0) == POLL_MIN_S
    assert poll_interval(0.5) == pytest.approx(0.05)
    assert poll_interval(1.0) > poll_interval(0.5)  # a long step is looked at less often
    assert poll_interval(3600) == POLL_MAX_S  # but never late by more than this


def _session(inbox: ReplyInbox, host: str) -> WorkerSession:
    return WorkerSession(host, host, "parent", b"k" * 32, inbox=inbox)


def test_the_inbox_routes_a_reply_to_the_host_with_the_longest_matching_prefix() -> None:
    inbox = ReplyInbox("parent")
    vps, vps_b = _session(inbox, "vps"), _session(inbox, "vps-b")
    assert inbox._session_of(f"{reply_prefix('vps-b')}7") == (vps_b, "7")
    assert inbox._session_of(f"{reply_prefix('vps')}7") == (vps, "7")
    assert inbox._session_of("r-thinkpad-7") is None  # not a host of this deploy: ignored
    assert ack_key("vps", "abc").startswith(reply_prefix("vps"))


def test_a_session_waits_only_while_an_order_is_out_and_it_is_not_broken() -> None:
    session = _session(ReplyInbox("parent"), "vps")
    assert not session.waiting
    session._waiting["1"] = object()  # an order out
    assert session.waiting
    session._broken = RuntimeError("gone")
    assert not session.waiting


@pytest.mark.parametrize("claim", [None, "", 42, ["run"], {"id": "x"}])
def test_a_claim_that_does_not_name_a_run_is_refused(claim: object) -> None:
    with pytest.raises(HomelabError, match="a claim names the deploy's run id"):
        _parent_of(claim)


def test_a_claim_names_the_deploys_run() -> None:
    assert _parent_of("0d6c2f0e-run") == "0d6c2f0e-run"
