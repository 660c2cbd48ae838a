"""The lock, listing and survey-lock scripts and the shared sh pieces, run in a real sh against
a temp dir; and the one parser of tagged blocks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from model.releases import ReleaseRecord
from tasks.host_commands.lock import break_lock, parse_owner, read_lock_owner, release_lock, take_lock
from tasks.host_commands.release_list import list_releases, parse_releases_listing
from tasks.host_commands.sections import split_blocks
from tasks.host_commands.shell import PIECES, script, sh
from tasks.host_commands.survey import parse_survey, survey

OWNER = json.dumps({"flow_run_id": "run-a", "user": "root", "host": "orch", "pid": 1})
OTHER = json.dumps({"flow_run_id": "run-b", "user": "root", "host": "orch", "pid": 2})


def run(argv: list[str], input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input.decode() if input else None, capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def test_take_lock_takes_a_free_lock_and_records_its_owner(tmp_path: Path):
    state = tmp_path / "state"  # does not exist yet: the script makes it
    done = run(take_lock(str(state), OWNER))
    assert (done.returncode, done.stdout.strip()) == (0, "@@acquired")
    assert json.loads((state / "lock/owner.json").read_text())["flow_run_id"] == "run-a"


def test_take_lock_on_a_held_lock_prints_the_owner_and_changes_nothing(tmp_path: Path):
    assert run(take_lock(str(tmp_path), OWNER)).returncode == 0
    done = run(take_lock(str(tmp_path), OTHER))
    assert done.returncode == 0
    assert "@@acquired" not in done.stdout
    assert parse_owner(done.stdout)["flow_run_id"] == "run-a"
    assert json.loads((tmp_path / "lock/owner.json").read_text())["flow_run_id"] == "run-a"


def test_take_lock_on_a_half_made_lock_fails_without_taking_it(tmp_path: Path):
    (tmp_path / "lock").mkdir()  # a lock dir without owner.json: someone is mid-way or crashed
    done = run(take_lock(str(tmp_path), OWNER))
    assert done.returncode != 0
    assert not (tmp_path / "lock/owner.json").exists()


def test_take_lock_removes_the_lock_when_the_owner_file_cannot_be_written(tmp_path: Path):
    argv = take_lock(str(tmp_path), OWNER)
    # the same script, with printf failing: the half-made lock must not stay behind
    failing = ["sh", "-c", "printf() { return 1; }\n" + argv[2], *argv[3:]]
    done = run(failing)
    assert "@@acquired" not in done.stdout
    assert not (tmp_path / "lock").exists()


@pytest.mark.parametrize(("releasing", "gone"), [("run-a", True), ("run-b", False)])
def test_release_lock_removes_only_its_own_lock(tmp_path: Path, releasing: str, gone: bool):
    run(take_lock(str(tmp_path), OWNER))
    done = run(release_lock(str(tmp_path), releasing))
    assert done.returncode == 0
    assert (not (tmp_path / "lock").exists()) is gone


def test_release_lock_of_a_free_host_succeeds(tmp_path: Path):
    assert run(release_lock(str(tmp_path), "run-a")).returncode == 0


def test_read_lock_owner_and_break_lock(tmp_path: Path):
    assert run(read_lock_owner(str(tmp_path))).returncode != 0  # free: no owner
    run(take_lock(str(tmp_path), OWNER))
    assert parse_owner(run(read_lock_owner(str(tmp_path))).stdout)["pid"] == 1
    assert run(break_lock(str(tmp_path))).returncode == 0
    assert not (tmp_path / "lock").exists()


def test_the_survey_takes_the_same_lock_as_take_lock(tmp_path: Path, fake_bin):
    env = fake_bin("docker", "exit 0\n")
    facts = parse_survey(run(survey(str(tmp_path), False, OWNER), env=env).stdout)
    assert facts.lock_acquired and facts.lock["flow_run_id"] == "run-a"
    again = parse_survey(run(survey(str(tmp_path), False, OTHER), env=env).stdout)
    assert not again.lock_acquired and again.lock["flow_run_id"] == "run-a"
    assert "@@acquired" in run(take_lock(str(tmp_path / "elsewhere"), OTHER)).stdout


def _record(stack: str, release: str, status: str = "active") -> bytes:
    return ReleaseRecord(id=release, stack=stack, host="h", commit="c", config_hash="sha256:x", images={},
                         created_at="t", flow_run_id="r", status=status).to_json()


def test_list_releases_lists_every_record_and_the_current_one(tmp_path: Path):
    for stack, releases, current in [("media", ["20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"],
                                      "20260102T000000Z-bbbbbb"), ("redis", ["20260103T000000Z-cccccc"], None)]:
        for release in releases:
            (tmp_path / "releases" / stack / release).mkdir(parents=True)
            (tmp_path / "releases" / stack / release / "release.json").write_bytes(_record(stack, release))
        if current:
            (tmp_path / "releases" / stack / "current").write_text(current + "\n")
    current, records = parse_releases_listing(run(list_releases(str(tmp_path))).stdout)
    assert current == {"media": "20260102T000000Z-bbbbbb", "redis": None}
    assert [r.id for r in records["media"]] == ["20260102T000000Z-bbbbbb", "20260101T000000Z-aaaaaa"]
    only, _ = parse_releases_listing(run(list_releases(str(tmp_path), ["redis"])).stdout)
    assert only == {"redis": None}


def test_list_releases_of_an_empty_host(tmp_path: Path):
    assert parse_releases_listing(run(list_releases(str(tmp_path))).stdout) == ({}, {})


def test_a_script_carries_exactly_the_pieces_it_uses(tmp_path: Path):
    text = script('write_atomic "$1" "$2"', "write_atomic")
    assert text.startswith(PIECES["write_atomic"])
    assert "take_lock()" not in text
    done = run(sh(text, "t", str(tmp_path / "no-such-dir" / "current"), "x"))
    assert done.returncode != 0  # a failed write is an error, not a silent success


def test_write_atomic_replaces_the_file_by_rename(tmp_path: Path):
    target = tmp_path / "current"
    target.write_text("old\n")
    assert run(sh(script('write_atomic "$1" "$2"', "write_atomic"), "t", str(target), "new")).returncode == 0
    assert target.read_text() == "new\n"
    assert not (tmp_path / "current.tmp").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("no tags here\n", []),
    ("@@release media R1\n{}\n@@release redis R2\n{\"a\": 1}\n",
     [("release", "media R1", "{}"), ("release", "redis R2", '{"a": 1}')]),
    ("@@pending media\n{}\n@@unknown x\nignored\n@@pending redis\n",
     [("pending", "media", "{}"), ("pending", "redis", "")]),
    ("before\n@@current media \n@@record media\n{}\n",
     [("current", "media", ""), ("record", "media", "{}")]),
])
def test_split_blocks(text: str, expected: list):
    assert split_blocks(text, "release", "pending", "current", "record") == expected
