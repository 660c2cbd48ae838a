"""Whose is a deploy lock, and is its owner gone? A pid is judged only on its own machine, boot
and pid namespace, with its start time; ``homelab unlock`` removes only the lock it showed.
The lock scripts run in a real sh against a temp dir."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tasks.engine import locks
from tasks.engine.locks import CHANGED, Unlocked, _unlock_one, process_gone, stale_reason
from tasks.engine.transport import CommandResult
from tasks.host_commands.lock import (
    LockOwner,
    Machine,
    parse_lock_snapshot,
    parse_start_ticks,
    parse_unlock,
    pid_exists,
    process_start,
    release_lock,
    show_lock,
    take_lock,
    this_machine,
    unlock_if,
)

HERE = Machine(machine_id="0123456789abcdef0123456789abcdef", boot_id="b00t-1", pid_ns="pid:[4026531836]")


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists() or pid_exists(pid) is not False:
        pid += 1
    return pid


def owner(machine: Machine = HERE, **changes: object) -> dict:
    """An owner file as ``LockOwner.for_run`` writes it, on ``machine``, for this test's process."""
    pid = os.getpid()
    return {"flow_run_id": "run-a", "user": "root", "host": socket.gethostname(), "pid": pid,
            "started_at": "2026-11-26T22:00:00+00:00", "commit": None, "machine_id": machine.machine_id,
            "boot_id": machine.boot_id, "pid_ns": machine.pid_ns, "pid_start": process_start(pid)} | changes


# --- the facts: /proc/<pid>/stat and this machine ------------------------------------------------

STAT = ("1234 (homelab) S 1 1234 1234 0 -1 4194560 900 0 0 0 12 3 0 0 20 0 4 0 987654 123456789 5000 "
        "18446744073709551615")


@pytest.mark.parametrize(("text", "expected"), [
    (STAT, 987654),
    (STAT.replace("(homelab)", "(a b) c)"), 987654),  # the command name may hold spaces and ")"
    ("", None),
    ("1234 (homelab) S 1 2 3", None),  # cut off
    ("garbage without parens", None),
    (STAT.replace("987654", "x"), None),
])
def test_the_start_time_is_field_22_of_proc_stat(text: str, expected: int | None) -> None:
    assert parse_start_ticks(text) == expected


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_this_process_has_a_start_time_and_a_dead_pid_has_none() -> None:
    assert isinstance(process_start(os.getpid()), int)
    assert process_start(os.getpid()) == process_start(os.getpid())
    assert process_start(dead_pid()) is None


def test_the_owner_records_where_its_process_runs() -> None:
    recorded = json.loads(LockOwner.for_run("run-a", "abc").to_json())
    here = this_machine()
    assert (recorded["machine_id"], recorded["boot_id"], recorded["pid_ns"]) == (
        here.machine_id, here.boot_id, here.pid_ns)
    assert recorded["pid"] == os.getpid() and recorded["pid_start"] == process_start(os.getpid())


def test_release_lock_still_finds_an_owner_with_the_new_fields(tmp_path: Path) -> None:
    assert "@@acquired" in run(take_lock(str(tmp_path), LockOwner.for_run("run-a", None).to_json())).stdout
    run(release_lock(str(tmp_path), "run-a"))
    assert not (tmp_path / "lock").exists()


# --- stale or not --------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "lock_owner", "here", "stale"), [
    ("a live pid of ours, same hostname", owner(), HERE, False),
    ("this machine, process gone", owner(pid=dead_pid()), HERE, True),
    ("this machine, pid reused by a later process", owner(pid_start=1), HERE, True),
    # a clone or a host-network container: same hostname, a pid that means nothing here
    ("another machine id, dead-looking pid", owner(pid=dead_pid(), machine_id="f" * 32), HERE, False),
    ("same machine id, another boot", owner(pid=dead_pid(), boot_id="b00t-0"), HERE, False),
    ("same machine, another pid namespace", owner(pid=dead_pid(), pid_ns="pid:[4026532000]"), HERE, False),
    ("an older owner file, our hostname, dead pid",
     {"flow_run_id": "run-a", "host": socket.gethostname(), "pid": dead_pid()}, HERE, False),
    ("an owner without a start time", owner(pid=dead_pid(), pid_start=None), HERE, False),
    ("this machine has no machine id", owner(Machine(None, HERE.boot_id, HERE.pid_ns), pid=dead_pid()),
     Machine(None, HERE.boot_id, HERE.pid_ns), False),
])
def test_only_a_pid_of_this_machine_boot_and_namespace_is_judged(case: str, lock_owner: dict, here: Machine,
                                                                 stale: bool) -> None:
    reason = process_gone(lock_owner, here)
    assert (reason is not None) is stale, (case, reason)
    if stale:
        assert "is gone" in reason


def test_a_pid_hidden_from_us_is_not_taken_for_gone() -> None:
    hidden = owner(pid=12345, pid_start=99)
    assert process_gone(hidden, HERE, start_of=lambda pid: None, exists=lambda pid: True) is None
    assert process_gone(hidden, HERE, start_of=lambda pid: None, exists=lambda pid: None) is None
    assert "is gone" in process_gone(hidden, HERE, start_of=lambda pid: None, exists=lambda pid: False)


@pytest.mark.parametrize(("lock_owner", "stale"), [
    (owner(), False),
    ({"flow_run_id": "run-a", "user": "bob", "host": socket.gethostname(), "pid": dead_pid()}, False),
    (owner(pid=dead_pid()), True),
])
def test_stale_reason_uses_the_machine_not_the_hostname(monkeypatch: pytest.MonkeyPatch, lock_owner: dict,
                                                        stale: bool) -> None:
    async def prefect_knows_nothing(flow_run_id: str | None) -> None:
        return None

    monkeypatch.setattr(locks, "_flow_run_finished", prefect_knows_nothing)
    reason = asyncio.run(stale_reason(lock_owner, HERE))
    assert (reason is not None) is stale, reason


# --- homelab unlock: show, then remove only what was shown ---------------------------------------

A = json.dumps(owner())
B = json.dumps(owner(flow_run_id="run-b"))


def show(state: Path):
    return parse_lock_snapshot(run(show_lock(str(state))).stdout)


def test_a_free_lock_shows_nothing(tmp_path: Path) -> None:
    done = run(show_lock(str(tmp_path)))
    assert done.returncode != 0 and parse_lock_snapshot(done.stdout) is None
    assert parse_unlock(run(unlock_if(str(tmp_path), "none")).stdout) == ("free", None)


def test_the_shown_owner_carries_its_file_digest(tmp_path: Path) -> None:
    run(take_lock(str(tmp_path), A))
    shown = show(tmp_path)
    assert shown.owner["flow_run_id"] == "run-a"
    assert shown.digest == hashlib.sha256((tmp_path / "lock/owner.json").read_bytes()).hexdigest()


def test_unlock_removes_the_lock_it_showed(tmp_path: Path) -> None:
    run(take_lock(str(tmp_path), A))
    done = run(unlock_if(str(tmp_path), show(tmp_path).digest))
    assert (done.returncode, parse_unlock(done.stdout)[0]) == (0, "removed")
    assert not (tmp_path / "lock").exists()


def test_unlock_refuses_when_the_lock_changed_owner_since_it_was_shown(tmp_path: Path) -> None:
    run(take_lock(str(tmp_path), A))
    shown = show(tmp_path)
    run(release_lock(str(tmp_path), "run-a"))  # run-a finished, and run-b took the host meanwhile
    run(take_lock(str(tmp_path), B))
    now = (tmp_path / "lock/owner.json").read_bytes()

    done = run(unlock_if(str(tmp_path), shown.digest))

    assert done.returncode == 3
    assert parse_unlock(done.stdout) == ("changed", hashlib.sha256(now).hexdigest())
    assert (tmp_path / "lock/owner.json").read_bytes() == now  # put back, untouched
    assert sorted(p.name for p in (tmp_path / "lock").iterdir()) == ["owner.json"]  # nothing held aside


def test_a_lock_without_an_owner_file_is_removed_only_while_it_has_none(tmp_path: Path) -> None:
    (tmp_path / "lock").mkdir()  # half made: its taker crashed between mkdir and the owner file
    shown = show(tmp_path)
    assert (shown.digest, shown.owner) == ("none", None)
    (tmp_path / "lock/owner.json").write_text(A + "\n")  # ... or it was only slow
    assert parse_unlock(run(unlock_if(str(tmp_path), shown.digest)).stdout)[0] == "changed"
    assert (tmp_path / "lock/owner.json").read_text() == A + "\n"
    (tmp_path / "lock/owner.json").unlink()
    assert parse_unlock(run(unlock_if(str(tmp_path), "none")).stdout)[0] == "removed"
    assert not (tmp_path / "lock").exists()


def test_a_lock_released_since_it_was_shown_is_free(tmp_path: Path) -> None:
    run(take_lock(str(tmp_path), A))
    shown = show(tmp_path)
    run(release_lock(str(tmp_path), "run-a"))
    assert parse_unlock(run(unlock_if(str(tmp_path), shown.digest)).stdout)[0] == "free"


@pytest.mark.parametrize(("text", "expected"), [
    ("@@removed\n", ("removed", None)),
    ("@@changed abc\n", ("changed", "abc")),
    ("@@free\n", ("free", None)),
    ("", ("unknown", None)),
    ("sh: mv: not found\n", ("unknown", None)),
])
def test_parse_unlock(text: str, expected: tuple[str, str | None]) -> None:
    assert parse_unlock(text) == expected


class LocalHost:
    """The engine's view of a host, running each command in a local sh (no SSH)."""

    async def run(self, argv: list[str], check: bool = True, **_: object) -> CommandResult:
        done = run(argv)
        return CommandResult(host="h", command=argv[3], exit_status=done.returncode, stdout=done.stdout,
                             stderr=done.stderr, duration_s=0.0)


@pytest.fixture
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(path))
    return path


def test_unlock_shows_the_owner_then_removes_that_lock(tmp_path: Path, audit_log: Path) -> None:
    state = tmp_path / "state"
    run(take_lock(str(state), A))
    seen = []
    result = asyncio.run(_unlock_one({"h": LocalHost()}, str(state), "h",
                                     lambda host, shown: seen.append(shown.owner["flow_run_id"]) or True))
    assert seen == ["run-a"]
    assert result.outcome == "removed" and "lock removed" in result.message
    assert not (state / "lock").exists()
    forced = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [(r["event"], r["owner"]["flow_run_id"]) for r in forced] == [("lock.forced", "run-a")]


def test_unlock_keeps_a_lock_that_changed_owner_while_it_was_shown(tmp_path: Path, audit_log: Path) -> None:
    state = tmp_path / "state"
    run(take_lock(str(state), A))

    def another_run_takes_over(host: str, shown) -> bool:
        run(release_lock(str(state), "run-a"))
        run(take_lock(str(state), B))
        return True

    result = asyncio.run(_unlock_one({"h": LocalHost()}, str(state), "h", another_run_takes_over))
    assert result.outcome == "changed" and CHANGED in result.message
    assert json.loads((state / "lock/owner.json").read_text())["flow_run_id"] == "run-b"
    assert not audit_log.exists()


def test_unlock_of_a_free_lock_or_a_declined_one_removes_nothing(tmp_path: Path, audit_log: Path) -> None:
    assert asyncio.run(_unlock_one({"h": LocalHost()}, str(tmp_path), "h", lambda h, s: True)) == Unlocked("h", "free")
    run(take_lock(str(tmp_path), A))
    result = asyncio.run(_unlock_one({"h": LocalHost()}, str(tmp_path), "h", lambda h, s: False))
    assert result.outcome == "kept" and (tmp_path / "lock/owner.json").exists()
