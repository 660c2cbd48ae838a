"""The control process's small parts, without the lab: the live view, progress notes, the
default branch, and the local socket (its permissions, its peer check, its refusals)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from deployments import control_socket
from deployments.live_view import LiveView
from model.source import default_branch
from tasks.engine import progress


def event(host: str, stack: str, step: str, at: float, phase: str = "core") -> dict:
    return {"phase": phase, "host": host, "stack": stack, "step": step, "at": at}


def test_live_view_shows_each_stack_latest_step_and_elapsed_time_per_phase() -> None:
    view = LiveView(io.StringIO())
    view.update(event("rtx1080", "postgres", "staging", 100.0, phase="foundation"))
    view.update(event("rtx1080", "postgres", "health", 101.0, phase="foundation"))
    view.update(event("rtx1080", "postgres", "healthy", 103.5, phase="foundation"))
    view.update(event("thinkpad", "traefik", "starting", 104.0))
    assert view.lines(now=106.0) == [
        "foundation",
        "  rtx1080/postgres  healthy       3.5s  ok",
        "core",
        "  thinkpad/traefik  starting      2.0s  ..",
    ]


def test_live_view_erases_its_frame_before_the_result_table() -> None:
    out = io.StringIO()
    view = LiveView(out)
    view.update(event("vps", "newsletter", "failed", 1.0))
    assert "FAILED" in out.getvalue()
    view.clear()
    assert out.getvalue().endswith("\x1b[1A\x1b[2K" * 2)
    assert view.drawn == 0


def test_no_live_view_off_a_terminal_or_with_json() -> None:
    assert LiveView.for_terminal(True, io.StringIO()) is None  # not a TTY
    assert LiveView.for_terminal(False, io.StringIO()) is None


def test_progress_goes_to_the_listener_of_the_context_and_a_bad_listener_is_harmless() -> None:
    seen: list[progress.Progress] = []
    progress.note("core", "vps", "x", "staging")  # nobody listens: nothing happens
    with progress.listening(seen.append):
        progress.note("core", "vps", "x", "staging")
    progress.note("core", "vps", "x", "health")
    assert [(p.stack, p.step) for p in seen] == [("x", "staging")]

    def broken(_: progress.Progress) -> None:
        raise RuntimeError("a closed terminal")

    with progress.listening(broken):
        progress.note("core", "vps", "x", "health")  # must not raise into the deploy


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_default_branch_is_origins_head_else_the_checked_out_branch(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "trunk")
    (origin / "homelab.yaml").write_text("hosts: {}\n")
    git(origin, "add", ".")
    git(origin, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "one")
    assert default_branch(origin / "homelab.yaml") == "trunk"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "feature")
    assert default_branch(clone / "homelab.yaml") == "trunk"  # origin's HEAD, not the feature branch
    assert default_branch(tmp_path / "nowhere" / "homelab.yaml") is None


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real ControlSocket on a unix socket in a private HOMELAB_HOME, serving a malformed
    inventory (so plan and status answer with the inventory's error, with no lab)."""
    from deployments.control import ControlSocket, listen

    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path / "home"))
    inventory = tmp_path / "homelab.yaml"
    inventory.write_text("hosts: [not, a, mapping]\n")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(listen(ControlSocket(inventory, "http://127.0.0.1:9/api"),
                                            control_socket.socket_path()))
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield inventory

    async def shut() -> None:  # end every open handler, so none outlives its loop
        server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_socket_is_private_to_its_user(served: Path) -> None:
    path = control_socket.socket_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_client_for_another_inventory_is_not_handed_over(served: Path, tmp_path: Path) -> None:
    assert control_socket.connect(tmp_path / "other.yaml") is None
    client = control_socket.connect(served)
    assert client is not None and client.hello["pid"] == os.getpid()
    client.close()


def test_the_control_process_answers_with_the_inventory_error_and_its_exit_code(served: Path) -> None:
    client = control_socket.connect(served)
    assert client is not None
    try:
        planned = client.call("plan", served, {"ref": None, "only": None, "refresh_images": False})
        assert planned["exit_code"] == 2 and planned["result"] is None
        assert f"{served}" in planned["error"] and "hosts" in planned["error"]
        unknown = client.call("deploy", served, {"inventory": "/etc/elsewhere.yaml"})
        assert unknown["exit_code"] == 2 and "inventory" in unknown["error"]
        assert client.call("reboot", served, {})["exit_code"] == 2
    finally:
        client.close()


def test_no_socket_or_a_stale_one_means_the_cli_works_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path))
    assert control_socket.connect(tmp_path / "homelab.yaml") is None
    stale = control_socket.socket_path()
    stale.write_text("")  # a file left by a killed control process
    assert control_socket.connect(tmp_path / "homelab.yaml") is None


def test_wire_messages_are_json_lines() -> None:
    assert json.loads(control_socket.encode({"done": {"exit_code": 0}})) == {"done": {"exit_code": 0}}
    assert control_socket.encode({"a": 1}).endswith(b"\n")
