"""Tampering with the audit log, caught by ``homelab audit verify`` as a user runs it: the hash
chain, the head file, the HMAC key (kept in another directory) and the head anchored in a real
Prefect server. The attacker can write the log and its head file, but has neither the key nor
the Prefect API."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.engine import audit, audit_anchor

RECORDS = 20


@dataclass(frozen=True)
class Log:
    path: Path
    env: dict[str, str]  # the CLI's environment: this log, maybe a key, this test's anchor variable


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def _write(log: Path, lines: list[str]) -> None:
    log.write_text("".join(f"{line}\n" for line in lines))


def edit_field(log: Path) -> None:
    lines = _lines(log)
    assert '"n": 5,' in lines[5]
    _write(log, [*lines[:5], lines[5].replace('"n": 5,', '"n": 55,'), *lines[6:]])


def delete_middle(log: Path) -> None:
    lines = _lines(log)
    _write(log, [*lines[:9], *lines[10:]])


def swap_two(log: Path) -> None:
    lines = _lines(log)
    _write(log, [*lines[:6], lines[7], lines[6], *lines[8:]])


def _head_for(log: Path, records: list[dict], keep: audit.Head | None) -> None:
    """The best head an attacker can write: right count, hash and length; the key id and
    keyed_from copied; the old mac kept (a new one needs the key)."""
    fields = {"count": len(records), "hash": records[-1]["hash"], "length": log.stat().st_size}
    if keep is not None and keep.mac:
        fields |= {"keyed_from": keep.keyed_from, "key_id": keep.key_id, "mac": keep.mac}
    audit.head_path(log).write_text(json.dumps(fields, sort_keys=True) + "\n")


def truncate_tail(log: Path) -> None:
    """Cut the last 3 records AND rewrite the head file to match the cut log."""
    old = audit.read_head(log)
    lines = _lines(log)[:-3]
    _write(log, lines)
    _head_for(log, [json.loads(line) for line in lines], old)


def rewrite_all(log: Path) -> None:
    """Change one record, recompute every sha256 from there on, write a consistent head. The
    macs cannot be recomputed without the key: drop them."""
    prev, lines = audit.GENESIS, []
    for line in _lines(log):
        record = {k: v for k, v in json.loads(line).items() if k not in ("prev", "hash", "mac")}
        if record.get("n") == 3:
            record["reason"] = "nothing to see"
        lines.append(json.dumps(audit.seal(record, prev), sort_keys=True))
        prev = json.loads(lines[-1])["hash"]
    _write(log, lines)
    _head_for(log, [json.loads(line) for line in lines], None)


Tamper = Callable[[Path], None]

# Each tampering, and what verify says about it: (with the key, with the anchor)
CASES: list[tuple[str, Tamper, str | None, str | None]] = [
    ("edit a field", edit_field, ":6: record was modified", None),
    ("delete a middle record", delete_middle, ":10: chain broken", None),
    ("swap two records", swap_two, ":7: chain broken", None),
    ("truncate the tail and the head", truncate_tail, "mac does not match its fields", "truncated below the anchor"),
    ("rewrite everything", rewrite_all, "no mac, though", f":{RECORDS}: rewritten: record {RECORDS} is not the"),
]


@pytest.fixture
def make_log(tmp_path_factory: pytest.TempPathFactory, prefect_api: str, monkeypatch: pytest.MonkeyPatch):
    def make(*, keyed: bool, anchored: bool, records: int = RECORDS) -> Log:
        home = tmp_path_factory.mktemp("audit-home")
        variable = f"homelab-audit-test-{uuid.uuid4().hex[:12]}"  # this test's own anchor, never shared
        env = {"HOMELAB_HOME": str(home), "HOMELAB_AUDIT_LOG": str(home / "audit.jsonl"),
               "PREFECT_API_URL": prefect_api, audit_anchor.NAME_ENV: variable}
        if keyed:
            key = tmp_path_factory.mktemp("audit-key") / "audit.key"  # another directory than the log's
            audit.create_key(key)
            env[audit.KEY_ENV] = str(key)
        else:
            monkeypatch.delenv(audit.KEY_ENV, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        log = home / "audit.jsonl"
        for n in range(records):
            audit.append("test.event", log_path=log, actor="cli:tester", n=n)
        if anchored:
            found = asyncio.run(audit.anchor(log))
            assert found.problems == [] and found.notes[0].startswith(audit_anchor.ANCHORED), found
        return Log(log, {**os.environ, **env})
    return make


def homelab(log: Log, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (``python -m deployments.cli`` is ``homelab``), on this log."""
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], env=log.env,
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])


def verify(log: Log, *args: str) -> subprocess.CompletedProcess:
    return homelab(log, "audit", "verify", *args)


def assert_caught(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if not line.startswith("note: ")]
    for text in expected:
        assert any(text in line for line in problems), (text, result.stdout)
    assert "TAMPERED" in result.stdout


@pytest.mark.parametrize("keyed", [True, False], ids=["key", "no-key"])
def test_an_intact_log_verifies(make_log, keyed: bool) -> None:
    log = make_log(keyed=keyed, anchored=True)
    result = verify(log)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"note: anchor {log.env[audit_anchor.NAME_ENV]}" in result.stdout and "ok" in result.stdout
    assert ("no HMAC key" in result.stdout) is not keyed


@pytest.mark.parametrize(("name", "tamper", "by_key", "by_anchor"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_caught_with_key_and_anchor(make_log, name: str, tamper: Tamper, by_key: str,
                                                 by_anchor: str | None) -> None:
    log = make_log(keyed=True, anchored=True)
    tamper(log.path)
    assert_caught(verify(log), by_key, *([by_anchor] if by_anchor else []))


@pytest.mark.parametrize(("name", "tamper", "by_anchor"), [(c[0], c[1], c[3]) for c in CASES if c[3]],
                         ids=[c[0] for c in CASES if c[3]])
def test_the_anchor_alone_catches_a_cut_tail_and_a_full_rewrite(make_log, name: str, tamper: Tamper,
                                                                 by_anchor: str) -> None:
    log = make_log(keyed=False, anchored=True)
    assert verify(log).returncode == 0
    tamper(log.path)
    result = verify(log)
    assert_caught(result, by_anchor)
    assert verify(log, "--no-anchor").returncode == 0  # the chain and the head alone are fooled


@pytest.mark.parametrize(("name", "tamper", "by_key"), [(c[0], c[1], c[2]) for c in CASES if c[3]],
                         ids=[c[0] for c in CASES if c[3]])
def test_the_key_alone_catches_a_forged_head_and_a_full_rewrite(make_log, name: str, tamper: Tamper,
                                                                by_key: str) -> None:
    log = make_log(keyed=True, anchored=False)
    tamper(log.path)
    result = verify(log)
    assert_caught(result, by_key)
    assert "note: no anchor yet" in result.stdout


@pytest.mark.parametrize("anchored", [True, False], ids=["anchor", "no-anchor"])
def test_a_cut_tail_with_an_old_valid_head_is_caught_only_by_the_anchor(make_log, anchored: bool) -> None:
    """The attacker kept a copy of the (signed) head from when the log had 17 records: the
    chain, the head and every mac are genuine. Only the anchor knows the log went further."""
    log = make_log(keyed=True, anchored=False, records=RECORDS - 3)
    old_head, cut = audit.head_path(log.path).read_text(), _lines(log.path)
    for n in range(RECORDS - 3, RECORDS):
        audit.append("test.event", log_path=log.path, actor="cli:tester", n=n)
    if anchored:
        assert asyncio.run(audit.anchor(log.path)).problems == []
    _write(log.path, cut)
    audit.head_path(log.path).write_text(old_head)
    result = verify(log)
    if anchored:
        assert_caught(result, f"says {RECORDS} records, the log has {RECORDS - 3}")
    else:
        assert result.returncode == 0 and "note: no anchor yet" in result.stdout, result.stdout
    assert verify(log, "--no-anchor").returncode == 0


async def _anchored_value(name: str) -> dict | None:
    async with audit_anchor._client() as client:
        return await audit_anchor._read(client, name)


@pytest.mark.parametrize("tamper", [truncate_tail, rewrite_all], ids=["truncated", "rewritten"])
def test_the_anchor_never_moves_back_over_tampering_unless_forced(make_log, tamper: Tamper) -> None:
    """Every flow run anchors the head: after tampering, that must not wipe out the evidence."""
    log = make_log(keyed=False, anchored=False)
    anchored = homelab(log, "audit", "anchor")
    assert anchored.returncode == 0, anchored.stdout + anchored.stderr
    assert f"note: anchored {log.env[audit_anchor.NAME_ENV]}: {RECORDS} records" in anchored.stdout
    before = asyncio.run(_anchored_value(log.env[audit_anchor.NAME_ENV]))
    assert (before["count"], before["log"]) == (RECORDS, str(log.path.resolve()))
    tamper(log.path)
    refused = homelab(log, "audit", "anchor")
    assert refused.returncode == 1 and "is no longer in the log" in refused.stdout, refused.stdout
    assert asyncio.run(_anchored_value(log.env[audit_anchor.NAME_ENV])) == before
    assert_caught(verify(log), "the anchor")
    assert homelab(log, "audit", "anchor", "--force").returncode == 0
    assert verify(log).returncode == 0  # a deliberate reset: the tampered log is the new truth


# --- many writers ----------------------------------------------------------------------------------

def _append_many(worker: int, count: int) -> None:
    for n in range(count):
        audit.append("test.concurrent", actor=f"cli:worker{worker}", worker=worker, n=n)


def test_concurrent_keyed_appenders_leave_one_valid_chain(make_log) -> None:
    log = make_log(keyed=True, anchored=False, records=0)
    context = multiprocessing.get_context("spawn")  # real processes: each opens the log and reads the key
    workers = [context.Process(target=_append_many, args=(w, 40)) for w in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [w.exitcode for w in workers] == [0] * 6
    assert audit.check(log.path).problems == []
    head = audit.read_head(log.path)
    assert head.count == 240 and head.keyed_from == 1 and audit.head_is_signed_by(head, audit.load_key(log.path))
    records = [json.loads(line) for line in _lines(log.path)]
    assert {(r["worker"], r["n"]) for r in records} == {(w, n) for w in range(6) for n in range(40)}
    assert all(r["actor"] == f"cli:worker{r['worker']}" and "mac" in r for r in records)
    assert verify(log, "--no-anchor").returncode == 0
