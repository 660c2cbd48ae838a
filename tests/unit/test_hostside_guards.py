"""Remote time limits, the per-stack lock, and the leftovers of secrets: the builders by their
exact argv, the scripts in a real sh against a temp dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from model.releases import ReleaseRecord
from tasks.engine.stack_lock import lock_wait_s
from tasks.host_commands.guards import STACK_BUSY, STACK_LOCK, timed_out, with_stack_lock, with_timeout
from tasks.host_commands.leftovers import Leftover, parse_scrub, retire_stack_files, scrub
from tasks.host_commands.release_files import upload_file


def run(argv: list[str], input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input.decode() if input else None, capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def test_with_timeout_is_a_timeout_prefix():
    assert with_timeout(["docker", "compose", "-p", "media", "down"], 300) == [
        "timeout", "-k", "5", "300", "docker", "compose", "-p", "media", "down"]
    assert with_timeout(["true"], 2.5, grace_s=1) == ["timeout", "-k", "1", "2.5", "true"]


def test_with_stack_lock_runs_the_command_under_flock():
    assert with_stack_lock(".homelab", "media", ["docker", "compose", "-p", "media", "down"], 60) == [
        "sh", "-c", STACK_LOCK, "stack-lock", ".homelab/locks", ".homelab/locks/media.lock", "60",
        "docker", "compose", "-p", "media", "down"]


@pytest.mark.parametrize(("status", "sig", "duration", "expected"), [
    (124, None, 2.1, True),  # TERM at the limit
    (137, None, 7.0, True),  # KILL after the grace, as a shell reports it
    (-1, "KILL", 7.0, True),  # KILL, with timeout itself the session's process
    (124, None, 0.3, False),  # the command exited 124 by itself (a hook's own timeout)
    (1, None, 2.5, False),
    (0, None, 9.0, False),
])
def test_timed_out(status: int, sig: str | None, duration: float, expected: bool):
    assert timed_out(status, sig, duration, 2) is expected


@pytest.mark.parametrize(("limit", "wait"), [(300, 60), (30, 15), (1, 1)])
def test_the_lock_wait_stays_inside_the_time_limit(limit: float, wait: float):
    assert lock_wait_s(limit) == wait


def test_a_remote_timeout_kills_the_children_of_a_script(tmp_path: Path):
    marker = f"sleep 3{os.getpid() % 10}.{time.monotonic_ns() % 1000}"  # a unique sleep to look for
    started = time.monotonic()
    done = subprocess.run(with_timeout(["sh", "-c", f"{marker} & {marker}; wait"], 1, grace_s=1), timeout=30,
                          check=False, start_new_session=True)  # sshd gives each command its own session
    assert done.returncode == 124 and time.monotonic() - started < 5
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False).returncode == 1


def test_the_stack_lock_serializes_two_commands(tmp_path: Path):
    log = tmp_path / "log"
    body = f'echo start $1 >> {log}; sleep 1; echo end $1 >> {log}'
    first = subprocess.Popen(with_stack_lock(str(tmp_path / "state"), "media", ["sh", "-c", body, "x", "a"], 10))
    time.sleep(0.3)
    second = run(with_stack_lock(str(tmp_path / "state"), "media", ["sh", "-c", body, "x", "b"], 10))
    assert first.wait(timeout=10) == 0 and second.returncode == 0
    assert log.read_text().split("\n")[:4] == ["start a", "end a", "start b", "end b"]
    assert (tmp_path / "state/locks/media.lock").exists()


def test_a_busy_stack_lock_fails_after_its_wait_and_other_stacks_are_free(tmp_path: Path):
    state = str(tmp_path)
    held = subprocess.Popen(with_stack_lock(state, "media", ["sleep", "3"], 10))
    time.sleep(0.3)
    started = time.monotonic()
    busy = run(with_stack_lock(state, "media", ["touch", str(tmp_path / "ran")], 0.5))
    assert busy.returncode == STACK_BUSY and not (tmp_path / "ran").exists()
    assert time.monotonic() - started < 2.5
    assert run(with_stack_lock(state, "redis", ["true"], 0.5)).returncode == 0
    held.kill()
    held.wait()


def test_an_upload_cut_off_by_a_signal_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "stacks/media/.env.secrets"
    upload = subprocess.Popen(upload_file(str(target), 0o600), stdin=subprocess.PIPE, start_new_session=True)
    assert upload.stdin is not None
    upload.stdin.write(b"KEY='half a sec")
    upload.stdin.flush()
    time.sleep(0.3)
    os.killpg(upload.pid, signal.SIGTERM)  # as timeout(1) ends a command: its whole process group
    upload.wait(timeout=10)
    assert upload.returncode != 0
    assert not target.exists() and list(target.parent.iterdir()) == []


def _release(root: Path, stack: str, release: str, *, record: bool = True, env: dict[str, str] | None = None) -> Path:
    where = root / "releases" / stack / release
    (where / "files").mkdir(parents=True)
    (where / "files/compose.yaml").write_text("services: {}\n")
    for name, value in (env or {}).items():
        (where / name).write_text(value)
    if record:
        (where / "release.json").write_bytes(ReleaseRecord(
            id=release, stack=stack, host="h", commit="c", config_hash="x", images={}, created_at="t",
            flow_run_id="r", env_files=sorted(env or {})).to_json())
    return where


def _old(path: Path, minutes: int = 10) -> Path:
    then = time.time() - minutes * 60
    os.utime(path, (then, then))
    return path


def test_retire_removes_every_env_file_and_keeps_the_records_and_the_data(tmp_path: Path):
    for release in ("20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"):
        _release(tmp_path, "media", release, env={".env.secrets": "K=v", "homelab.env": "A=1"})
    _release(tmp_path, "media", "20260103T000000Z-cccccc", record=False, env={".env.secrets": "K=cut off"})
    (tmp_path / "releases/media/current").write_text("20260102T000000Z-bbbbbb\n")
    project = tmp_path / "stacks/media"
    (project / "data").mkdir(parents=True)
    for name in (".env.secrets", ".env", "compose.yaml", "data/db"):
        (project / name).write_text("x")
    done = run(retire_stack_files(str(tmp_path), "media", str(project), ["sh", "-c", f"touch {tmp_path}/down"]))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "down").exists()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["down", "releases/media/20260101T000000Z-aaaaaa/release.json",
                    "releases/media/20260102T000000Z-bbbbbb/release.json", "stacks/media/compose.yaml",
                    "stacks/media/data/db"]
    record = json.loads((tmp_path / "releases/media/20260102T000000Z-bbbbbb/release.json").read_text())
    assert record["status"] == "removed"


def test_retire_stops_when_compose_down_fails(tmp_path: Path):
    _release(tmp_path, "media", "20260101T000000Z-aaaaaa", env={".env.secrets": "K=v"})
    (tmp_path / "releases/media/current").write_text("20260101T000000Z-aaaaaa\n")
    done = run(retire_stack_files(str(tmp_path), "media", str(tmp_path / "stacks/media"), ["false"]))
    assert done.returncode != 0
    assert (tmp_path / "releases/media/current").exists()
    assert (tmp_path / "releases/media/20260101T000000Z-aaaaaa/.env.secrets").exists()


def _plant(root: Path) -> dict[str, Path]:
    """A placed stack (media, two recorded releases, one cut-off stage), an unplaced retired one
    (redis, with an env file left in its project dir), an unplaced deployed one (jellyfin),
    and stale and fresh temp files."""
    _release(root, "media", "20260101T000000Z-aaaaaa", env={".env.secrets": "K=v1"})
    _release(root, "media", "20260102T000000Z-bbbbbb", env={".env.secrets": "K=v2"})
    cut = _release(root, "media", "20260103T000000Z-cccccc", record=False, env={".env.secrets": "K=v3"})
    (root / "releases/media/current").write_text("20260102T000000Z-bbbbbb\n")
    media = root / "stacks/media"
    media.mkdir(parents=True)
    (media / ".env.secrets").write_text("K=v2")
    stale = media / ".env.secrets.tmp.4242"
    stale.write_text("K=v")
    _old(stale)
    fresh = media / ".env.secrets.tmp.4343"
    fresh.write_text("K=v")
    _release(root, "redis", "20260101T000000Z-dddddd", env={".env.secrets": "K=r"})
    redis = root / "srv/redis"
    redis.mkdir(parents=True)
    (redis / ".env.secrets").write_text("K=r")
    _release(root, "jellyfin", "20260101T000000Z-eeeeee", env={".env.secrets": "K=j"})
    (root / "releases/jellyfin/current").write_text("20260101T000000Z-eeeeee\n")
    return {"cut": cut / ".env.secrets", "stale": stale, "fresh": fresh, "redis_release":
            root / "releases/redis/20260101T000000Z-dddddd/.env.secrets", "redis_project": redis / ".env.secrets"}


def test_scrub_lists_then_removes_only_the_leftovers(tmp_path: Path):
    planted = _plant(tmp_path)
    dirs = {"redis": str(tmp_path / "srv/redis")}
    listed = parse_scrub(run(scrub(str(tmp_path), ["media"], dirs)).stdout)
    expected = {Leftover("env", "media", str(planted["cut"])), Leftover("tmp", "media", str(planted["stale"])),
                Leftover("env", "redis", str(planted["redis_release"])),
                Leftover("env", "redis", str(planted["redis_project"]))}
    assert set(listed.found) == expected
    assert listed.deployed == ("jellyfin",) and not listed.busy
    assert all(p.exists() for p in planted.values())  # a listing removes nothing

    owner = json.dumps({"flow_run_id": "scrub-1"})
    done = run(scrub(str(tmp_path), ["media"], dirs, remove=True, owner_json=owner))
    removed = parse_scrub(done.stdout)
    assert done.returncode == 0 and set(removed.found) == expected and not removed.failed
    assert not any(planted[k].exists() for k in ("cut", "stale", "redis_release", "redis_project"))
    assert planted["fresh"].exists()  # may be an upload in progress
    for kept in ("releases/media/20260101T000000Z-aaaaaa/.env.secrets", "releases/media/20260102T000000Z-bbbbbb/"
                 ".env.secrets", "stacks/media/.env.secrets", "releases/jellyfin/20260101T000000Z-eeeeee/.env.secrets",
                 "releases/redis/20260101T000000Z-dddddd/release.json"):
        assert (tmp_path / kept).exists(), kept
    assert not (tmp_path / "lock").exists()  # the deploy lock was taken and given back
    assert parse_scrub(run(scrub(str(tmp_path), ["media"], dirs)).stdout).found == ()


def test_scrub_removes_nothing_while_a_deploy_holds_the_lock(tmp_path: Path):
    planted = _plant(tmp_path)
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock/owner.json").write_text(json.dumps({"flow_run_id": "deploy-1", "user": "u"}))
    done = run(scrub(str(tmp_path), ["media"], {}, remove=True, owner_json='{"flow_run_id": "s"}'))
    answer = parse_scrub(done.stdout)
    assert done.returncode == 75 and answer.busy and answer.found == ()
    assert all(p.exists() for p in planted.values())
    assert json.loads((tmp_path / "lock/owner.json").read_text())["flow_run_id"] == "deploy-1"


@pytest.mark.parametrize(("text", "found", "deployed", "busy"), [
    ("", (), (), False),
    ("garbled\n@@leftover env\n", (), (), False),
    ("@@removed tmp media /a b/.x.tmp\n@@deployed redis\n@@busy\n",
     (Leftover("tmp", "media", "/a b/.x.tmp"),), ("redis",), True),
])
def test_parse_scrub(text: str, found: tuple, deployed: tuple, busy: bool):
    answer = parse_scrub(text)
    assert (answer.found, answer.deployed, answer.busy) == (found, deployed, busy)
