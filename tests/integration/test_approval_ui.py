"""The approval gate answered in a real browser: a run paused by ``flows.approval.ask_approval``
shows its plan (the markdown description) in the Prefect UI's Resume modal, and the form a
person fills there (Approve, Your name, Reason) is the Decision the flow gets. Needs only the
test Prefect server (no simulated lab) and Debian's chromium."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")

from tests.integration.prefect_ui import CHROMIUM, approve_in_ui, open_browser, screenshot

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"the browser tests need Debian's chromium ({CHROMIUM})")

PLAN = "## Approve the production deploy\n\n| host | stack |\n|---|---|\n| vps | newsletter |"
ARTIFACTS = Path(os.environ.get("HOMELAB_TEST_ARTIFACTS", "/tmp/homelab-test-artifacts"))

_started: queue.Queue[uuid.UUID] = queue.Queue()


def _gate_flow():
    from prefect import flow

    @flow(name="approval-ui-gate")
    async def approval_ui_gate() -> dict:
        from prefect.runtime import flow_run

        from flows.approval import ask_approval

        _started.put(uuid.UUID(str(flow_run.id)))
        return (await ask_approval(PLAN, 120)).to_json()

    return approval_ui_gate


def _start_in_background() -> tuple[uuid.UUID, threading.Thread, dict]:
    """Run the gate flow in its own thread (its own event loop); the run's id once it exists."""
    gate = _gate_flow()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(gate())
        except BaseException as exc:  # reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="approval-ui-gate", daemon=True)
    thread.start()
    try:
        return _started.get(timeout=30), thread, outcome
    except queue.Empty:
        raise AssertionError(f"the gate flow did not start: {outcome}") from None


def _wait_state(run_id: uuid.UUID, *, paused: bool, timeout_s: float = 30) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_paused() == paused and (paused or state.is_final()):
                return state.name
            assert time.monotonic() < deadline, f"flow run {run_id}: still {state and state.name}"
            time.sleep(0.3)


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_the_approval_form_in_the_prefect_ui_resumes_the_run(prefect_api: str, monkeypatch: pytest.MonkeyPatch,
                                                             approve: bool) -> None:
    monkeypatch.setenv("HOMELAB_APPROVAL_POLL_S", "1")
    run_id, thread, outcome = _start_in_background()
    assert _wait_state(run_id, paused=True) == "Paused"

    ui = prefect_api.removesuffix("/api")
    reason = "release notes reviewed" if approve else "not during the newsletter send"
    with open_browser() as page:
        try:
            shown = approve_in_ui(ui, str(run_id), approve=approve, approver="Ada Lovelace", reason=reason,
                                  page=page)
        except BaseException:
            screenshot(page, ARTIFACTS / f"prefect-ui-approval-{'approve' if approve else 'reject'}-failed.png")
            raise

    # The plan was rendered from markdown, not shown raw.
    assert "Approve the production deploy" in shown and "newsletter" in shown, shown
    assert "##" not in shown and "|---|" not in shown, shown
    assert "Your name" in shown and "Reason" in shown, shown

    thread.join(timeout=30)
    assert not thread.is_alive(), "the gate flow did not finish after the UI's answer"
    assert "error" not in outcome, outcome
    assert outcome["result"] == {"approved": approve, "reason": reason, "approver": "Ada Lovelace",
                                 "phases": None, "timed_out": False}
    assert _wait_state(run_id, paused=False) == "Completed"
