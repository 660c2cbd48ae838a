"""The plan is a value: desired state + host facts -> one action per (phase, host, stack).

``homelab plan`` prints it and ``homelab deploy`` applies it; the apply step never
re-decides. Stacks a host still runs but the inventory no longer places there are listed
as ``remove`` in the pseudo-phase ``ORPHANS`` (applied only with ``--prune``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

from model.desired import DesiredState
from model.releases import ReleaseRecord
from tasks.host_commands.containers import judge_project
from tasks.host_commands.survey import HostSurvey

Action = Literal["create", "update", "unchanged", "remove"]
ORPHANS = "orphans"


@dataclass(frozen=True, kw_only=True)
class Change:
    phase: str
    host: str
    stack: str
    action: Action
    reason: str
    current_release: str | None = None
    current_images: tuple[str, ...] = ()  # image references of the current release

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("current_release", "current_images")}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    phases: tuple[str, ...]

    def phase(self, name: str) -> list[Change]:
        return [c for c in self.changes if c.phase == name]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def to_json(self) -> dict:
        return {"changes": [c.to_dict() for c in self.changes]}


class Prepared(NamedTuple):
    """What work under the locks hands the plan: the desired state, and placements to
    redeploy even if they look current ((host, stack) -> why)."""
    desired: DesiredState
    redeploy: dict[tuple[str, str], str]


def make_plan(desired: DesiredState, surveys: dict[str, HostSurvey], *, full: bool = True,
              fresh_images: dict[str, dict[str, str]] | None = None,
              redeploy: dict[tuple[str, str], str] | None = None) -> Plan:
    """``full`` is False for ``--only`` runs, which never propose removals. ``fresh_images``
    (host -> reference -> id after a pull) makes a stack whose tag moved an update, and so does
    an entry in ``redeploy`` ((host, stack) -> why)."""
    changes: list[Change] = []
    for stack in desired.stacks.values():
        for host in stack.hosts:
            variant = stack.for_host(host)
            moved = _moved_images(variant.images, surveys[host].releases.get(stack.name),
                                  (fresh_images or {}).get(host, {}))
            why = ", ".join(w for w in (moved, (redeploy or {}).get((host, stack.name))) if w) or None
            changes.append(_decide(stack.phase, host, stack.name, variant.services, variant.config_hash,
                                   surveys[host], why))
    phases = tuple(dict.fromkeys(stack.phase for stack in desired.stacks.values()))
    if full:
        placed = desired.placements()
        for host, facts in surveys.items():
            for name, record in sorted(facts.releases.items()):
                if (host, name) not in placed and record.status != "removed":
                    changes.append(Change(phase=ORPHANS, host=host, stack=name, action="remove",
                                          reason="running on this host but no longer placed here by the inventory",
                                          current_release=record.id))
        if any(c.phase == ORPHANS for c in changes):
            phases += (ORPHANS,)
    return Plan(tuple(changes), phases)


def _moved_images(images: dict[str, str], record: ReleaseRecord | None, fresh: dict[str, str]) -> str | None:
    """``image postgres:16 sha256:ab12... -> sha256:cd34...`` for each tag that names another image now."""
    if record is None:
        return None
    moved = [f"image {ref} {_short_id(record.images[ref])} \u2192 {_short_id(fresh[ref])}"
             for ref in dict.fromkeys(images.values())
             if ref in fresh and ref in record.images and fresh[ref] != record.images[ref]]
    return ", ".join(moved) or None


def _decide(phase: str, host: str, stack: str, services: tuple[str, ...], want_hash: str,
            facts: HostSurvey, forced: str | None = None) -> Change:
    """``forced``: why to update even a current stack (a moved tag, a drifted env file)."""
    record = facts.releases.get(stack)
    action, reason = _judge(stack, services, want_hash, facts, record)
    if forced and action == "unchanged":
        action, reason = "update", forced
    elif forced:
        reason = f"{reason}; {forced}"
    return Change(phase=phase, host=host, stack=stack, action=action, reason=reason,
                  current_release=record.id if record else None,
                  current_images=tuple(sorted(record.images)) if record else ())


def _judge(stack: str, services: tuple[str, ...], want_hash: str, facts: HostSurvey,
           record: ReleaseRecord | None) -> tuple[Action, str]:
    marker = facts.pending.get(stack)
    if marker is not None:
        return ("update" if record else "create",
                f"interrupted: release {marker.get('release')} by flow run {marker.get('flow_run_id')} "
                f"(started {marker.get('started_at')}) never finished")
    if record is None:
        return "create", facts.broken_releases.get(stack, "never deployed to this host")
    if record.config_hash != want_hash:
        return "update", f"config changed ({_short(record.config_hash)} -> {_short(want_hash)})"
    containers = facts.project(stack)
    health = judge_project(services, containers)
    if not health.ok:
        return "update", f"release {record.id} is current but {health.reason}"
    recorded = set(record.images.values())
    strays = [c.name for c in containers if recorded and c.image_id not in recorded]
    if strays:  # e.g. an image re-pulled or a container recreated by hand behind our back
        return "update", (f"release {record.id} is current but {', '.join(strays)} "
                          "run(s) an image that is not the release's")
    return "unchanged", f"release {record.id} is current and healthy"


def _short(config_hash: str) -> str:
    return config_hash.removeprefix("sha256:")[:12]


def _short_id(image_id: str) -> str:
    algorithm, _, digest = image_id.rpartition(":")
    return f"{algorithm or 'sha256'}:{digest[:12]}\u2026"
