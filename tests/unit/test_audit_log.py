"""The audit log's hash chain detects edits, removals and reordering; its head file detects a
deleted log and a cut-off tail; a torn last line is repaired by the next append."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from tasks.engine import audit


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    for n in range(4):
        audit.append("test.event", log_path=path, n=n)
    return path


def test_an_intact_log_verifies(log: Path) -> None:
    assert audit.verify(log) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0]["prev"] == audit.GENESIS
    assert [r["prev"] for r in records[1:]] == [r["hash"] for r in records[:-1]]


def _rewrite(log: Path, change) -> None:
    lines = log.read_text().splitlines()
    log.write_text("\n".join(change(lines)) + "\n")


@pytest.mark.parametrize(("name", "change", "line"), [
    ("edited field", lambda ls: [ls[0], ls[1].replace('"n": 1', '"n": 7'), *ls[2:]], 2),
    ("removed record", lambda ls: [ls[0], *ls[2:]], 2),
    ("swapped records", lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2),
    ("garbage line", lambda ls: [*ls[:3], "{not json"], 4),
])
def test_tampering_is_detected_at_its_line(log: Path, name: str, change, line: int) -> None:
    _rewrite(log, change)
    problems = audit.verify(log)
    assert problems, name
    assert problems[0].startswith(f"{log}:{line}:")


def test_a_field_named_path_is_just_a_field(tmp_path: Path) -> None:
    record = audit.append("secret.rotated", log_path=tmp_path / "a.jsonl", path="homelab/x", key="K")
    assert record["path"] == "homelab/x"
    assert audit.verify(tmp_path / "a.jsonl") == []


# --- the head file: a deleted log or a cut-off tail shows --------------------------------------

def _problems(path: Path) -> str:
    return "\n".join(audit.verify(path))


def test_a_deleted_log_is_reported_missing(log: Path) -> None:
    log.unlink()
    assert f"{log}: missing log" in _problems(log)


def test_an_append_after_the_log_was_deleted_keeps_the_evidence(log: Path) -> None:
    """Deploys go on (append never fails on it), and verify still tells."""
    log.unlink()
    audit.append("test.event", log_path=log, n=4)
    problems = _problems(log)
    assert f"{log}:1: chain broken" in problems and "truncated: head says 5 records, log has 1" in problems


def test_a_removed_last_record_is_reported_truncated(log: Path) -> None:
    _rewrite(log, lambda ls: ls[:-1])  # the chain of the 3 left is intact: only the head can tell
    assert f"{log}: truncated: head says 4 records, log has 3" in _problems(log)


def test_an_emptied_log_is_reported_truncated(log: Path) -> None:
    log.write_bytes(b"")
    assert "truncated: head says 4 records, log has 0" in _problems(log)


def test_a_rewritten_last_record_with_a_valid_hash_differs_from_the_head(log: Path) -> None:
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    forged = audit.seal({k: v for k, v in last.items() if k not in ("prev", "hash")} | {"n": 9}, last["prev"])
    log.write_text("\n".join([*lines[:-1], json.dumps(forged, sort_keys=True)]) + "\n")
    assert f"{log}:4: not the record the head names" in _problems(log)


def test_a_log_never_written_is_empty_not_an_error(tmp_path: Path) -> None:
    assert audit.check(tmp_path / "nothing.jsonl") == audit.Findings()


def test_a_missing_head_is_rebuilt_once_with_a_note(log: Path) -> None:
    audit.head_path(log).unlink()
    before = audit.check(log)
    assert before.problems == [] and "no head file yet" in before.notes[0]
    audit.append("test.event", log_path=log, n=4)
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[4:] == [audit.HEAD_REBUILT, "test.event"]
    found = audit.check(log)
    assert found.problems == [] and any("head rebuilt" in note for note in found.notes)
    assert audit.read_head(log).count == 6


def test_records_an_interrupted_append_left_after_the_head_are_taken_in(log: Path) -> None:
    head = audit.read_head(log)
    audit.append("test.event", log_path=log, n=4)
    audit.write_head(log, head)  # as if the process died between the log's fsync and the head's rename
    found = audit.check(log)
    assert found.problems == [] and "1 record(s) after the head" in found.notes[0]
    audit.append("test.event", log_path=log, n=5)
    assert audit.verify(log) == [] and audit.read_head(log).count == 6


# --- a torn last line ---------------------------------------------------------------------------

@pytest.mark.parametrize("torn", [b'{"event": "deploy.lock', b"\x00" * 300, b"x"])
def test_a_torn_last_line_is_repaired_by_the_next_append(log: Path, torn: bytes) -> None:
    good = log.stat().st_size
    with log.open("ab") as out:
        out.write(torn)  # a crash mid-write: no newline
    assert audit.verify(log) == []  # a crash is not tampering
    assert "torn last line" in audit.check(log).notes[0]

    audit.append("deploy.locked", log_path=log, flow_run_id="r")

    records = [json.loads(line) for line in log.read_text().splitlines()]
    repair = records[4]
    assert (repair["event"], repair["cut_at"], repair["cut_bytes"]) == (audit.REPAIRED, good, len(torn))
    assert repair["cut_sha256"] == hashlib.sha256(torn).hexdigest()
    assert "deploy.lock" not in json.dumps(repair)  # never the raw bytes
    assert records[5]["event"] == "deploy.locked"
    assert audit.torn_path(log).read_bytes() == torn
    found = audit.check(log)
    assert found.problems == []
    assert any("repaired" in note and hashlib.sha256(torn).hexdigest() in note for note in found.notes)


def test_a_torn_line_in_a_log_without_a_head_is_repaired_too(tmp_path: Path) -> None:
    """A log an older version wrote (no head), torn by a crash: the next append must not fail."""
    path = tmp_path / "audit.jsonl"
    first = audit.seal({"time": "t", "event": "old"}, audit.GENESIS)
    path.write_bytes(json.dumps(first, sort_keys=True).encode() + b'\n{"time": "t", "ev')
    audit.append("test.event", log_path=path)
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == [
        "old", audit.REPAIRED, audit.HEAD_REBUILT, "test.event"]
    assert audit.verify(path) == []


# --- concurrent writers and the cost of one append -----------------------------------------------

def _append_many(path: str, worker: int, count: int) -> None:
    for n in range(count):
        audit.append("test.concurrent", log_path=Path(path), worker=worker, n=n)


def test_concurrent_processes_leave_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")  # real processes, each with its own file handles
    workers = [context.Process(target=_append_many, args=(str(path), w, 50)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 200
    assert {(r["worker"], r["n"]) for r in records} == {(w, n) for w in range(4) for n in range(50)}
    assert audit.verify(path) == []
    assert audit.read_head(path) == audit.Head(200, records[-1]["hash"], path.stat().st_size)


def _big_log(path: Path, count: int) -> None:
    """``count`` chained records and their head, written directly (appending each would fsync each)."""
    prev, lines = audit.GENESIS, []
    for n in range(count):
        record = audit.seal({"time": "2026-01-01T00:00:00.000+00:00", "event": "test.event", "n": n}, prev)
        lines.append(json.dumps(record, sort_keys=True))
        prev = record["hash"]
    path.write_text("\n".join(lines) + "\n")
    audit.write_head(path, audit.Head(count, prev, path.stat().st_size))


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and friends so far (Linux)."""
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["rchar"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_an_append_reads_the_head_not_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _big_log(path, 50_000)
    size = path.stat().st_size
    assert size > 5_000_000
    before = _bytes_read()
    audit.append("test.event", log_path=path, n=50_000)
    read = _bytes_read() - before
    assert read < 16_384, f"one append read {read} bytes of a {size}-byte log"
    assert audit.verify(path) == [] and audit.read_head(path).count == 50_001


# --- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("damage", "expected"), [
    (lambda log: log.unlink(), "missing log"),
    (lambda log: _rewrite(log, lambda ls: ls[:-1]), "truncated: head says 4 records, log has 3"),
])
def test_audit_verify_exits_nonzero_listing_the_problems(log: Path, monkeypatch: pytest.MonkeyPatch,
                                                          damage, expected: str) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(log))
    assert CliRunner().invoke(app, ["audit", "verify"]).exit_code == 0
    damage(log)
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert expected in result.output and "TAMPERED" in result.output
