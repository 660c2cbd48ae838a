"""The audit log's hash chain detects edits, removals and reordering; its head file detects a
deleted log and a cut-off tail; a torn last line is repaired by the next append."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
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


def _append_cost(path: Path, n: int) -> int:
    before = _bytes_read()
    audit.append("test.event", log_path=path, n=n)
    return _bytes_read() - before


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize("keyed", [False, True])
def test_an_append_reads_the_head_not_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyed: bool) -> None:
    """O(1): an append to a 50,000-record log reads no more bytes than one to a 10-record log."""
    if keyed:
        monkeypatch.setenv(audit.KEY_ENV, str(_key(tmp_path / "keys")))
    small, big = tmp_path / "small" / "audit.jsonl", tmp_path / "big" / "audit.jsonl"
    for path, count in ((small, 10), (big, 50_000)):
        path.parent.mkdir()
        _big_log(path, count)
        _append_cost(path, -1)  # the first keyed append signs the head; count the ones after
    size = big.stat().st_size
    assert size > 5_000_000
    cost_small, cost_big = _append_cost(small, 11), _append_cost(big, 50_001)
    assert cost_big < 16_384, f"one append read {cost_big} bytes of a {size}-byte log"
    assert cost_big <= cost_small + 64, (cost_small, cost_big)  # only the key and head files, the same sizes
    assert audit.verify(big) == [] and audit.read_head(big).count == 50_002


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


# --- the HMAC key ----------------------------------------------------------------------------------

def _key(folder: Path) -> Path:
    path = folder / "audit.key"
    audit.create_key(path)
    return path


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A log of 4 records signed with a key kept in another directory."""
    monkeypatch.setenv(audit.KEY_ENV, str(_key(tmp_path / "keys")))
    path = tmp_path / "log" / "audit.jsonl"
    for n in range(4):
        audit.append("test.event", log_path=path, n=n)
    return path


def test_a_keyed_log_signs_every_record_and_the_head(keyed: Path) -> None:
    key = audit.load_key(keyed)
    records = [json.loads(line) for line in keyed.read_text().splitlines()]
    assert all(r["mac"] == audit.record_mac(key, r["hash"]) for r in records)
    head = audit.read_head(keyed)
    assert head.keyed_from == 1 and head.key_id == audit.key_id(key) and audit.head_is_signed_by(head, key)
    assert audit.check(keyed) == audit.Findings()
    assert key.hex() not in keyed.read_text() + audit.head_path(keyed).read_text()


def _forge(log: Path, change) -> None:
    """What an attacker without the key can do: change records, recompute every hash, drop the
    macs they cannot compute, and write a head that matches."""
    records, prev, lines = [json.loads(line) for line in log.read_text().splitlines()], audit.GENESIS, []
    for record in change(records):
        sealed = audit.seal({k: v for k, v in record.items() if k not in ("prev", "hash", "mac")}, prev)
        lines.append(json.dumps(sealed, sort_keys=True))
        prev = sealed["hash"]
    log.write_text("\n".join(lines) + "\n")
    audit.write_head(log, audit.Head(len(lines), prev, log.stat().st_size))


@pytest.mark.parametrize(("name", "change", "expected"), [
    ("rewritten record", lambda rs: [*rs[:2], rs[2] | {"n": 9}, *rs[3:]], "no mac, though"),
    ("cut tail", lambda rs: rs[:2], "no mac, though"),
])
def test_a_forged_log_with_recomputed_hashes_fails_the_hmac(keyed: Path, name: str, change, expected: str) -> None:
    _forge(keyed, change)
    assert audit.verify(keyed) != [] and expected in _problems(keyed), name
    assert "no HMAC key" not in " ".join(audit.check(keyed).notes)


def test_a_record_rehashed_in_place_keeps_a_stale_mac(keyed: Path) -> None:
    lines = keyed.read_text().splitlines()
    record = json.loads(lines[1]) | {"n": 7}
    record["hash"] = audit.seal({k: v for k, v in record.items() if k not in ("prev", "hash", "mac")},
                                record["prev"])["hash"]
    keyed.write_text("\n".join([lines[0], json.dumps(record, sort_keys=True), *lines[2:]]) + "\n")
    assert f"{keyed}:2: no valid mac" in _problems(keyed)


def test_a_head_rewritten_to_a_cut_log_fails_its_mac(keyed: Path) -> None:
    head = audit.read_head(keyed)
    lines = keyed.read_text().splitlines()[:-1]
    keyed.write_text("\n".join(lines) + "\n")
    audit.write_head(keyed, replace(head, count=3, hash=json.loads(lines[-1])["hash"], length=keyed.stat().st_size))
    assert "mac does not match its fields" in _problems(keyed)
    audit.append("test.event", log_path=keyed, n=9)  # deploys go on; the evidence stays in the chain
    assert "found the head untrusted" in _problems(keyed)


def test_records_before_the_key_are_a_note_and_after_it_must_be_signed(tmp_path: Path, log: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(audit.KEY_ENV, str(_key(tmp_path / "keys")))
    audit.append("test.event", log_path=log, n=4)
    found = audit.check(log)
    assert found.problems == [] and "4 record(s) written before the key existed" in found.notes[-1]
    assert audit.read_head(log).keyed_from == 5
    lines = log.read_text().splitlines()
    unsigned = {k: v for k, v in json.loads(lines[-1]).items() if k != "mac"}
    log.write_text("\n".join([*lines[:-1], json.dumps(unsigned, sort_keys=True)]) + "\n")
    assert f"{log}:5: no valid mac" in _problems(log)


def test_without_a_key_verify_says_what_it_cannot_catch(log: Path) -> None:
    assert "no HMAC key" in audit.check(log).notes[-1]


def test_a_keyed_log_refuses_unsigned_appends_and_another_key(keyed: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(audit.KEY_ENV)
    with pytest.raises(audit.AuditKeyError, match=r"is signed .* but HOMELAB_AUDIT_KEY_FILE is not set"):
        audit.append("test.event", log_path=keyed)
    monkeypatch.setenv(audit.KEY_ENV, str(_key(tmp_path / "other")))
    with pytest.raises(audit.AuditKeyError, match="signed with key"):
        audit.append("test.event", log_path=keyed)
    assert "signed with key" in _problems(keyed)
    assert len(keyed.read_text().splitlines()) == 4


def _short_key(path: Path) -> Path:
    path.parent.mkdir()
    path.write_bytes(b"x" * 8)
    return path


@pytest.mark.parametrize(("setup", "match"), [
    (lambda d: d / "log" / "k", "must not be in the audit log's directory"),
    (lambda d: d / "keys" / "missing", "cannot read the audit key"),
    (lambda d: _short_key(d / "keys" / "short"), "has 8 bytes, needs at least 32"),
])
def test_a_bad_key_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup, match: str) -> None:
    (tmp_path / "log").mkdir()
    monkeypatch.setenv(audit.KEY_ENV, str(setup(tmp_path)))
    with pytest.raises(audit.AuditKeyError, match=match):
        audit.append("test.event", log_path=tmp_path / "log" / "audit.jsonl")
    with pytest.raises(audit.AuditKeyError, match=match):
        audit.check(tmp_path / "log" / "audit.jsonl")


def test_the_chain_fields_are_not_a_callers(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        audit.append("test.event", log_path=tmp_path / "a.jsonl", mac="x")


# --- reading: audit show -------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", NOW - timedelta(minutes=30)),
    ("6h", NOW - timedelta(hours=6)),
    ("2d", NOW - timedelta(days=2)),
    (" 45s ", NOW - timedelta(seconds=45)),
    ("1w", NOW - timedelta(weeks=1)),
    ("2026-04-30T08:00:00+00:00", datetime(2026, 4, 30, 8, tzinfo=UTC)),
    ("2026-04-30T08:00Z", datetime(2026, 4, 30, 8, tzinfo=UTC)),
    ("2026-04-30T10:00+02:00", datetime(2026, 4, 30, 8, tzinfo=UTC)),
])
def test_since_is_iso_or_a_span_back(text: str, expected: datetime) -> None:
    from deployments.cli.admin import parse_since

    assert parse_since(text, NOW) == expected


def test_since_without_a_zone_is_local_time() -> None:
    from deployments.cli.admin import parse_since

    assert parse_since("2026-04-30", NOW) == datetime(2026, 4, 30).astimezone()


@pytest.mark.parametrize("text", ["yesterday", "30", "5y", "-2d", ""])
def test_a_bad_since_is_a_usage_error(text: str) -> None:
    from deployments.cli.admin import parse_since
    from model.errors import UsageError

    with pytest.raises(UsageError, match="--since"):
        parse_since(text, NOW)


def _dated_log(path: Path, times: list[datetime]) -> None:
    prev, lines = audit.GENESIS, []
    for n, when in enumerate(times):
        record = audit.seal({"time": when.isoformat(timespec="milliseconds"), "actor": f"cli:u{n % 2}",
                             "event": "deploy.locked" if n % 2 else "secret.rotated", "n": n, "pad": "x" * 200},
                            prev)
        lines.append(json.dumps(record, sort_keys=True))
        prev = record["hash"]
    path.write_text("\n".join(lines) + "\n")


def test_tail_reads_back_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _dated_log(path, [NOW - timedelta(minutes=1000 - n) for n in range(1000)])  # > 4 read chunks
    assert [r["n"] for r in audit.tail(path)] == list(range(1000))
    assert [r["n"] for r in audit.tail(path, limit=3)] == [997, 998, 999]
    assert [r["n"] for r in audit.tail(path, since=NOW - timedelta(minutes=5))] == [995, 996, 997, 998, 999]
    assert [r["n"] for r in audit.tail(path, event="deploy.*", limit=2)] == [997, 999]
    assert [r["n"] for r in audit.tail(path, event="secret.*", since=NOW - timedelta(minutes=4))] == [996, 998]
    with path.open("ab") as out:
        out.write(b'{"torn')
    assert len(audit.tail(path)) == 1000 and audit.tail(tmp_path / "none.jsonl") == []


def test_format_record_is_one_compact_line() -> None:
    from deployments.cli.admin import format_record

    record = {"time": "2026-05-01T12:00:00.000+00:00", "actor": "webhook:d1", "event": "deploy.locked",
              "hosts": ["a", "b"], "flow_run_id": "r1", "why": "two words", "long": "y" * 100, "evil": "a\nb",
              "prev": "p", "hash": "h", "mac": "m"}
    assert format_record(record) == (
        '2026-05-01T12:00:00.000+00:00  webhook:d1  deploy.locked  evil=a\\nb flow_run_id=r1 hosts=["a","b"] '
        f'long={"y" * 59}… why="two words"')


def test_audit_show_prints_lines_or_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(path))
    now = datetime.now(UTC)
    _dated_log(path, [now - timedelta(hours=5), now - timedelta(hours=3), now - timedelta(minutes=20),
                      now - timedelta(minutes=10)])
    text = CliRunner().invoke(app, ["audit", "show", "--since", "1h"])
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert [line.split("  ")[1:3] for line in lines] == [["cli:u0", "secret.rotated"], ["cli:u1", "deploy.locked"]]
    assert "n=2 pad=" in lines[0] and "hash" not in text.output
    shown = CliRunner().invoke(app, ["audit", "show", "--json", "--event", "deploy.*", "--limit", "1"])
    assert shown.exit_code == 0
    records = json.loads(shown.output)
    assert [r["n"] for r in records] == [3] and records[0]["hash"]
    assert CliRunner().invoke(app, ["audit", "show", "--since", "soon"]).exit_code == 2


# --- init-key ------------------------------------------------------------------------------------

def test_init_key_makes_a_private_key_signs_the_log_and_prints_the_export(tmp_path: Path, log: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(log))
    key = tmp_path / "keys" / "audit.key"
    result = CliRunner().invoke(app, ["audit", "init-key", str(key)])
    assert result.exit_code == 0, result.output
    assert f"export HOMELAB_AUDIT_KEY_FILE={key}" in result.output
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    assert [p.name for p in key.parent.iterdir()] == ["audit.key"]  # no temp file left
    monkeypatch.setenv(audit.KEY_ENV, str(key))
    found = audit.check(log)
    assert found.problems == [] and json.loads(log.read_text().splitlines()[-1])["event"] == audit.KEY_CREATED
    assert audit.head_is_signed_by(audit.read_head(log), key.read_bytes())


@pytest.mark.parametrize(("where", "expected"), [
    ("existing", "refusing to overwrite"),
    ("beside", "must not be in the audit log's directory"),
])
def test_init_key_refuses(tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                          expected: str) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    monkeypatch.setenv("HOMELAB_AUDIT_LOG", str(log))
    key = tmp_path / "keys" / "audit.key" if where == "existing" else log.with_name("audit.key")
    if where == "existing":
        key.parent.mkdir()
        key.write_bytes(b"k" * 32)
    result = CliRunner().invoke(app, ["audit", "init-key", str(key)])
    assert result.exit_code == 2 and expected in result.output
    assert where != "existing" or key.read_bytes() == b"k" * 32
    assert where != "beside" or not key.exists()


# --- the anchor, when Prefect cannot be reached --------------------------------------------------

async def test_an_unreachable_prefect_is_a_note_not_a_problem(log: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.conftest import _free_port

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{_free_port()}/api"}):
        checked, anchored = await audit.check_anchor(log), await audit.anchor(log)
    for found in (checked, anchored):
        assert found.problems == [] and "Prefect API unreachable" in found.notes[0]
