"""Every audit record names who did it: the actor from a run's tags, the context, or the shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from model.actors import actor_for_run, current_user, default_actor
from tasks.engine import audit


@pytest.mark.parametrize(("tags", "deployment", "expected"), [
    (["nightly"], "nightly", "schedule:nightly"),
    (["nightly", "homelab"], "deploy-homelab/nightly-main", "schedule:deploy-homelab/nightly-main"),
    (["nightly"], None, "schedule:nightly"),
    (["webhook", "github-delivery:72d3162e-cc78-11e3-81ab-4c9367dc0958"], "deploy",
     "webhook:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    (["github-delivery:d1", "webhook"], None, "webhook:d1"),
    (["webhook"], "deploy", "webhook:unknown"),  # a webhook run is never mistaken for a person's
    (["github-delivery:d1"], "deploy", "ui:deploy"),  # the delivery tag alone is not a webhook run
    ([], "deploy", "ui:deploy"),
    (["homelab"], "rollback", "ui:rollback"),
    ([], None, "cli:alice"),
    (["homelab", "manual"], None, "cli:alice"),
    (["homelab", "agent"], "deploy", "agent:deploy"),  # a run the DeploymentOrchestratorAgent created

])
def test_actor_for_run_maps_tags(tags: list[str], deployment: str | None, expected: str) -> None:
    assert actor_for_run(tags, deployment, "alice") == expected


def test_default_actor_is_homelab_actor_else_the_cli_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMELAB_ACTOR", raising=False)
    assert default_actor() == f"cli:{current_user()}"
    monkeypatch.setenv("HOMELAB_ACTOR", "schedule:nightly")
    assert default_actor() == "schedule:nightly"


def _actors(path: Path) -> list[str]:
    return [json.loads(line)["actor"] for line in path.read_text().splitlines()]


def test_explicit_actor_beats_the_context_which_beats_the_default(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("HOMELAB_ACTOR", "cli:svc")
    audit.append("a", log_path=log)
    with audit.acting_as("webhook:d1"):
        audit.append("b", log_path=log)
        audit.append("c", log_path=log, actor="approver:bob")
        with audit.acting_as("schedule:nightly"):
            audit.append("d", log_path=log)
        audit.append("e", log_path=log)
    audit.append("f", log_path=log)
    assert _actors(log) == ["cli:svc", "webhook:d1", "approver:bob", "schedule:nightly", "webhook:d1", "cli:svc"]
    assert audit.verify(log) == []


def test_the_actor_stays_with_its_task(tmp_path: Path) -> None:
    """Concurrent flows in one process (the control process) do not see each other's actor."""
    log = tmp_path / "audit.jsonl"

    async def run(actor: str) -> None:
        with audit.acting_as(actor):
            for n in range(3):
                await asyncio.sleep(0)
                audit.append("t", log_path=log, by=actor, n=n)

    async def both() -> None:
        await asyncio.gather(run("webhook:1"), run("schedule:nightly"))

    asyncio.run(both())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 6 and all(r["actor"] == r["by"] for r in records)


def test_repair_notes_name_the_actor_too(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit.append("a", log_path=log)
    with log.open("ab") as out:
        out.write(b'{"torn')
    audit.append("b", log_path=log, actor="ui:deploy")
    assert _actors(log)[1:] == ["ui:deploy", "ui:deploy"]
