"""The plan as a person approves it: what changes on which host, from which release and image
to which, and the staging copy's smoke tests (pure: markdown for the pause, a line for lists)."""

from __future__ import annotations

from collections.abc import Sequence

from model.desired import DesiredState
from tasks.engine.plan import Change, Plan
from tasks.engine.report import markdown_table


def _images(change: Change, desired: DesiredState) -> str:
    stack = desired.stacks.get(change.stack)
    wanted = sorted(set(stack.for_host(change.host).images.values())) if stack else []
    if change.action == "remove":
        return ", ".join(change.current_images) or "-"
    if not change.current_images or list(change.current_images) == wanted:
        return ", ".join(wanted) or "-"
    return f"{', '.join(change.current_images)} \u2192 {', '.join(wanted)}"


def _release(change: Change, commit: str | None) -> str:
    new = f"new release @ {commit[:12]}" if commit else "new release"
    if change.action == "remove":
        return f"{change.current_release} \u2192 removed"
    return f"{change.current_release or '(none)'} \u2192 {new}"


def approval_markdown(plan: Plan, desired: DesiredState, *, trigger: str, why: str, smoke_table: str = "",
                      staging_note: str = "", agent_review: str = "") -> str:
    rows = [[c.phase, c.host, c.stack, c.action, _release(c, desired.commit), _images(c, desired), c.reason]
            for c in plan.pending]
    out = [f"## Approve the production deploy of `{desired.source}`",
           f"commit `{desired.commit}`, {trigger} run: {why}.", "",
           markdown_table(["phase", "host", "stack", "action", "release", "image", "reason"], rows)]
    if staging_note:
        out += ["", "### Staging", staging_note]
    if smoke_table:
        out += ["", "### Smoke tests", smoke_table]
    if agent_review:
        out += ["", "### Agent review", agent_review]
    out += ["", "Tick **Approve** to deploy (optionally only some phases), or leave it unticked to reject."]
    return "\n".join(out)


def plan_summary(changes: Sequence[Change], commit: str | None) -> str:
    """One line: ``2 change(s) @ 3f2c1a9b: newsletter on vps update, redis on rtx1080 update``."""
    listed = ", ".join(f"{c.stack} on {c.host} {c.action}" for c in changes[:6])
    more = f", and {len(changes) - 6} more" if len(changes) > 6 else ""
    return f"{len(changes)} change(s) @ {(commit or 'working tree')[:12]}: {listed}{more}"
