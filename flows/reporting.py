"""What every run leaves in the Prefect UI: the plan before it changes anything, and its report."""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact

from tasks.engine.plan import Plan
from tasks.engine.report import RunReport, markdown_table


async def publish_plan(plan: Plan) -> None:
    rows = [[c.phase, c.host, c.stack, c.action, c.reason] for c in plan.changes]
    await acreate_markdown_artifact(
        key="deploy-plan", description=f"{len(plan.pending)} change(s)",
        markdown="\n".join(["# Plan", "", markdown_table(["phase", "host", "stack", "action", "reason"], rows)]))


async def publish_report(report: RunReport) -> None:
    await acreate_markdown_artifact(key=f"{report.kind}-report", markdown=report.markdown(),
                                    description=report.summary())
