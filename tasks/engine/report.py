"""Run reports: one result per (host, stack), decided at the end of the run, in one shape for
deploy (secrets-sync and secrets-rotate are deploys too) and rollback. Every report masks
secret values in what it shows.

A report's JSON always has ``result`` (success|failed), ``flow_run_id`` and ``stacks``; each
kind adds its own fields (see the README's "JSON output").

Deploy results:
- ``healthy``: deployed and passed its health gate
- ``unchanged``: already current and healthy; nothing was touched
- ``failed``: the step or the health gate failed (``error``, ``logs``, ``probe_output`` say why)
- ``not-run``: not attempted because the run stopped earlier
- ``removed`` / ``kept``: an orphaned stack taken down (``--prune``) or left running
- ``rolled-back``: it was healthy, but the failure policy undid it (``rollback`` says how)

``rollback`` is set on every stack that was undone, failed or not: e.g. "restored release X
(healthy)", "removed (the stack had no previous release)", or "rollback FAILED: ...".

``from_release``/``images_from`` are what ran before the run (from the plan), ``release``/
``images_to`` what runs (or was attempted) now; for a stack that was not touched they are equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from model.masking import MASKER

if TYPE_CHECKING:
    from tasks.engine.plan import Change

OK_RESULTS = ("healthy", "unchanged", "removed", "kept")


@dataclass(frozen=True, kw_only=True)
class StackResult:
    phase: str
    host: str
    stack: str
    action: str
    result: str
    duration_s: float = 0.0
    reason: str = ""
    release: str | None = None
    error: str | None = None
    logs: str | None = None
    probe_output: str | None = None
    rollback: str | None = None
    from_release: str | None = None  # the release that ran before this run
    images_from: tuple[str, ...] = ()  # image references of that release
    images_to: tuple[str, ...] = ()  # image references of ``release``

    @classmethod
    def untouched(cls, change: Change, result: str, reason: str | None = None, **fields: object) -> StackResult:
        """A stack the run did not change (unchanged, not-run, or failed before it started):
        its release and images stay what the plan found."""
        return cls(phase=change.phase, host=change.host, stack=change.stack, action=change.action, result=result,
                   reason=change.reason if reason is None else reason, release=change.current_release,
                   from_release=change.current_release, images_from=change.current_images,
                   images_to=change.current_images, **fields)

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS

    def to_json(self) -> dict:
        shown = {k: v for k, v in asdict(self).items() if v is not None and k not in ("logs", "probe_output")}
        return shown | {"duration_s": round(self.duration_s, 3), "images_from": list(self.images_from),
                        "images_to": list(self.images_to)}

    def release_change(self) -> str:
        """``old → new`` with short ids; the one id when it did not change."""
        old, new = short_release(self.from_release), short_release(self.release)
        return old if old == new else f"{old} \u2192 {new}"

    def image_change(self) -> str:
        """Only the references that changed (``old → new``); all of them when none did."""
        gone = [i for i in self.images_from if i not in self.images_to]
        came = [i for i in self.images_to if i not in self.images_from]
        if not self.images_to or not (gone or came):  # nothing known of the new ones, or no change
            return ", ".join(self.images_from or self.images_to) or "-"
        return f"{', '.join(gone) or '-'} \u2192 {', '.join(came) or '-'}"


@dataclass(frozen=True, kw_only=True)
class RestoreResult:
    """One stack of a manual rollback."""

    host: str
    stack: str
    from_release: str | None
    to_release: str | None
    result: str  # restored | unchanged | failed
    detail: str

    @property
    def ok(self) -> bool:
        return self.result != "failed"

    def to_json(self) -> dict:
        return {"host": self.host, "stack": self.stack, "from": self.from_release, "to": self.to_release,
                "result": self.result, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """What a run did, per (host, stack). Subclasses add their own fields to ``details``."""

    kind: str = "run"
    flow_run_id: str | None = None
    stacks: Sequence[StackResult | RestoreResult] = ()

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stacks)

    def details(self) -> dict:
        return {}

    def to_json(self) -> dict:
        return masked({"result": "success" if self.ok else "failed", "flow_run_id": self.flow_run_id,
                        **self.details(), "stacks": [s.to_json() for s in self.stacks]})

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.stacks:
            counts[s.result] = counts.get(s.result, 0) + 1
        detail = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        return f"{'success' if self.ok else 'FAILED'}: {detail}"

    def markdown(self) -> str:
        rows = [[s.host, s.stack, s.result] for s in self.stacks]
        return MASKER.mask("\n".join([f"# {self.kind.capitalize()} {self.summary()}", "",
                                      markdown_table(["host", "stack", "result"], rows)]))


@dataclass(frozen=True, kw_only=True)
class DeployReport(RunReport):
    kind: str = "deploy"
    source: str
    commit: str | None
    stacks: Sequence[StackResult] = ()
    remote_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_s: float = 0.0
    interrupted: list[dict] = field(default_factory=list)  # half-done deploys of a killed run, found at start
    snapshots: list[dict] = field(default_factory=list)  # Proxmox snapshots taken / reverted / failed
    notes: dict = field(default_factory=dict)  # top-level fields added by work done under the locks

    @property
    def failures(self) -> list[StackResult]:
        return [s for s in self.stacks if s.result == "failed"]

    def details(self) -> dict:
        return {"source": self.source, "commit": self.commit, "wall_s": round(self.wall_s, 3)}

    def to_json(self) -> dict:
        failures = [{"phase": s.phase, "host": s.host, "stack": s.stack, "error": s.error,
                     "probe_output": s.probe_output, "logs": s.logs} for s in self.failures]
        return super().to_json() | masked({"failures": failures, "remote_seconds": self.remote_seconds,
                                            "interrupted": self.interrupted, "snapshots": self.snapshots,
                                            **self.notes})

    def markdown(self) -> str:
        rows = [[s.phase, s.host, s.stack, s.action, s.result, s.release_change(), s.image_change(),
                 f"{s.duration_s:.1f}", (s.error or s.reason or "")] for s in self.stacks]
        out = [f"# {self.kind.capitalize()} {self.summary()}", f"source `{self.source}` commit `{self.commit}`", "",
               markdown_table(["phase", "host", "stack", "action", "result", "release (old -> new)",
                               "image (old -> new)", "s", "detail"], rows)]
        for s in self.failures:
            out += ["", *failure_section(s)]
        return MASKER.mask("\n".join(out))

    def failure_markdown(self) -> str:
        """Every failed stack in full: where, the error, the probe output and the end of its
        container logs (last LOG_LINES lines, at most LOG_BYTES); masked."""
        out = [f"# {self.kind.capitalize()} failed: {len(self.failures)} stack(s)",
               f"source `{self.source}` commit `{self.commit}`"]
        for s in self.failures:
            out += ["", *failure_section(s, f"phase `{s.phase}`, action `{s.action}`, release "
                                             f"{s.release_change()}")]
        return MASKER.mask("\n".join(out))


@dataclass(frozen=True, kw_only=True)
class RollbackReport(RunReport):
    kind: str = "rollback"
    stacks: Sequence[RestoreResult] = ()


LOG_LINES = 60
LOG_BYTES = 8 * 1024


def failure_section(s: StackResult, where: str = "") -> list[str]:
    """Markdown lines for one failed stack: its error, probe output and the end of its logs."""
    return [f"## {s.stack} on {s.host} failed", *([where] if where else []), "", s.error or "",
            "", "### health probes", "```", s.probe_output or "(none)", "```",
            "", "### container logs", "```", tail_text(s.logs) or "(none)", "```"]


def tail_text(text: str | None, lines: int = LOG_LINES, max_bytes: int = LOG_BYTES) -> str:
    """The last ``lines`` lines of ``text``, at most ``max_bytes`` of UTF-8; masked before it
    is cut, so no part of a secret is left."""
    kept = "\n".join(MASKER.mask(text or "").rstrip("\n").splitlines()[-lines:])
    raw = kept.encode()
    return kept if len(raw) <= max_bytes else "\u2026" + raw[-max_bytes:].decode(errors="ignore")


def short_release(release: str | None) -> str:
    """``20261126T233000Z-1a2b3c`` -> ``1a2b3c`` (its random part); other ids cut to 12."""
    if not release:
        return "-"
    stamp, _, suffix = release.rpartition("-")
    return suffix if stamp.endswith("Z") and suffix else release[:12]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table; cells are cut to 200 characters, with ``|`` escaped and line breaks joined."""
    def cell(value: object) -> str:  # masked before it is cut, so no part of a secret is left
        return MASKER.mask(str(value)).replace("|", "\\|").replace("\n", " ")[:200]

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join([*lines, *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)])


masked = MASKER.mask_json  # every string in a JSON-able structure, masked (tuples become lists)
