"""The audit log's hash chain detects edits, removals and reordering."""

from __future__ import annotations

import json
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


def test_a_missing_log_is_empty_not_an_error(tmp_path: Path) -> None:
    assert audit.verify(tmp_path / "nothing.jsonl") == []
