"""The run report: one result per (phase, host, stack), decided at the end of the run.

Results:
- ``healthy``: deployed and passed its health gate
- ``unchanged``: already current and healthy; nothing was touched
- ``failed``: the step or the health gate failed (``error``, ``logs``, ``probe_output`` say why)
- ``not-run``: not attempted because the run stopped earlier
- ``removed`` / ``kept``: an orphaned stack taken down (``--prune``) or left running
- ``rolled-back``: it was healthy, but the failure policy undid it (``rollback`` says how)

``rollback`` is set on every stack that was undone, failed or not: e.g. "restored release X
(healthy)", "removed (the stack had no previous release)", or "rollback FAILED: ...".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tasks.masking import MASKER

OK_RESULTS = ("healthy", "unchanged", "removed", "kept")


@dataclass
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

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS


@dataclass
class DeployReport:
    source: str
    commit: str | None
    flow_run_id: str | None
    stacks: list[StackResult] = field(default_factory=list)
    remote_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_s: float = 0.0
    interrupted: list[dict] = field(default_factory=list)  # half-done deploys of a killed run, found at start
    snapshots: list[dict] = field(default_factory=list)  # Proxmox snapshots taken / reverted / failed

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stacks)

    @property
    def failures(self) -> list[StackResult]:
        return [s for s in self.stacks if s.result == "failed"]

    def to_json(self) -> dict:
        return _masked({
            "result": "success" if self.ok else "failed",
            "flow_run_id": self.flow_run_id,
            "source": self.source,
            "commit": self.commit,
            "wall_s": round(self.wall_s, 3),
            "stacks": [
                {k: v for k, v in asdict(s).items() if v is not None and k not in ("logs", "probe_output")}
                | ({"duration_s": round(s.duration_s, 3)})
                for s in self.stacks
            ],
            "failures": [
                {"phase": s.phase, "host": s.host, "stack": s.stack, "error": s.error,
                 "probe_output": s.probe_output, "logs": s.logs}
                for s in self.failures
            ],
            "remote_seconds": self.remote_seconds,
            "interrupted": self.interrupted,
            "snapshots": self.snapshots,
        })

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.stacks:
            counts[s.result] = counts.get(s.result, 0) + 1
        detail = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        return f"{'success' if self.ok else 'FAILED'}: {detail}"

    def markdown(self) -> str:
        rows = ["| phase | host | stack | action | result | s | detail |", "|---|---|---|---|---|---|---|"]
        for s in self.stacks:
            detail = (s.error or s.reason or "").replace("|", "\\|").replace("\n", " ")[:200]
            rows.append(f"| {s.phase} | {s.host} | {s.stack} | {s.action} | {s.result} | "
                        f"{s.duration_s:.1f} | {detail} |")
        out = [f"# Deploy {self.summary()}", f"source `{self.source}` commit `{self.commit}`", "", *rows]
        for s in self.failures:
            out += ["", f"## {s.stack} on {s.host} failed", "", s.error or "",
                    "", "### health probes", "```", s.probe_output or "(none)", "```",
                    "", "### container logs", "```", s.logs or "(none)", "```"]
        return MASKER.mask("\n".join(out))


def _masked(value: object) -> object:
    """Every string in a JSON-able structure, with secret values masked."""
    if isinstance(value, str):
        return MASKER.mask(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain fixed-width text table for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
