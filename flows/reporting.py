"""What every run leaves in the Prefect UI: the plan before it changes anything, its report (and,
when a stack failed, a failure artifact with its probes and logs), and a one-row summary that
``homelab history`` reads."""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from tasks.engine.plan import Plan
from tasks.engine.report import DeployReport, RunReport, markdown_table, masked
from tasks.engine.run_history import RUN_SUMMARY_KEY

FAILURE_KEY = "deploy-failure"
NOT_CHANGED = ("unchanged", "not-run")


async def publish_plan(plan: Plan) -> None:
    rows = [[c.phase, c.host, c.stack, c.action, c.reason] for c in plan.changes]
    await acreate_markdown_artifact(
        key="deploy-plan", description=f"{len(plan.pending)} change(s)",
        markdown="\n".join(["# Plan", "", markdown_table(["phase", "host", "stack", "action", "reason"], rows)]))


async def publish_report(report: RunReport) -> None:
    await acreate_markdown_artifact(key=f"{report.kind}-report", markdown=report.markdown(),
                                    description=report.summary())
    if isinstance(report, DeployReport) and report.failures:
        failed = ", ".join(f"{s.host}/{s.stack}" for s in report.failures)
        await acreate_markdown_artifact(key=FAILURE_KEY, markdown=report.failure_markdown(),
                                        description=f"failed: {failed}")


def run_summary(report_json: dict, *, environment: str, trigger: str, duration_s: float,
                reason: str | None = None) -> dict:
    """The run in one row: what ``homelab history`` shows and the DeploymentOrchestratorAgent
    returns. ``report_json`` is the run's result (a report's JSON, or the not-approved result);
    ``changed`` lists the stacks it touched, ``hosts`` every stack's result by host."""
    stacks = report_json.get("stacks") or []
    changed = [{"host": s.get("host"), "stack": s.get("stack"), "action": s.get("action"), "result": s.get("result"),
                "from_release": s.get("from_release"), "to_release": s.get("release")}
               for s in stacks if s.get("result") not in NOT_CHANGED]
    hosts: dict[str, dict[str, str]] = {}
    for s in stacks:
        hosts.setdefault(str(s.get("host")), {})[str(s.get("stack"))] = str(s.get("result"))
    return {"commit": report_json.get("commit"), "source": report_json.get("source"), "environment": environment,
            "trigger": trigger, "result": report_json.get("result", "failed"), "duration_s": round(duration_s, 3),
            "changed": changed, "hosts": hosts,
            **({"reason": reason} if (reason := reason or report_json.get("reason")) else {})}


async def publish_run_summary(summary: dict) -> None:
    """The summary as a one-row table artifact (key ``run-summary``) of the current flow run."""
    row = masked(summary)
    await acreate_table_artifact(key=RUN_SUMMARY_KEY, table=[row],
                                 description=f"{summary.get('result')}: {len(summary.get('changed') or [])} "
                                             "stack(s) changed")
