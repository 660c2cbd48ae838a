"""The shipped monitoring assets (deployments/monitoring/) against the real tools: promtool checks
the rules and runs their unit tests, and a real Prometheus evaluates every expression of the
rules and the dashboard, with a run's series pushed through a real Pushgateway and the control
process's /metrics scraped. A metric name that is not in the contract fails here, because a
typo'd name evaluates to an empty result without any error."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from deployments import control_metrics
from tasks.engine import notify
from tasks.engine.metric_totals import SERIES
from tasks.engine.metrics import RunMetrics
from tasks.integrations.pushgateway import PushTarget

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deployments" / "monitoring"
STACK_RULES = ROOT / "deployments" / "stacks" / "monitoring" / "rules" / "homelab.yml"
# How Grafana fills the dashboard's variables in; any valid value does for evaluation.
GRAFANA_VARIABLES = {"$__range": "1h", "$__interval": "1m", "$__rate_interval": "1m", "$window": "1h",
                     "$environment": "assets-test|production"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ENVIRONMENT = "assets-test"


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict:
    return json.loads((MONITORING / "dashboard.json").read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions() -> dict[str, str]:
    """"panel title #n" -> its PromQL, with Grafana's variables filled in."""
    out = {}
    for panel in panels(dashboard()):
        for n, target in enumerate(panel.get("targets", [])):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not fill in: {expr}"
            out[f"{panel['title']} #{n}"] = expr
    return out


def contract_names() -> set[str]:
    """Every series name the orchestrator exposes: the run's pushed ones and the control process's."""
    names = set(SERIES)
    for registry in (control_metrics.REGISTRY, notify.METRICS):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def metric_names(expr: str, known: set[str]) -> set[str]:
    """The homelab_* names in ``expr``, a histogram's _bucket/_sum/_count as the histogram."""
    found = set()
    for name in re.findall(r"\bhomelab_[a-z_]+", expr):
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        found.add(base if base in known else name)
    return found


def test_promtool_checks_the_rules_runs_their_unit_tests_and_checks_the_scrape_config() -> None:
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml").stdout
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml").stdout
    promtool("check", "config", "--syntax-only", "scrape.yml")
    promtool("check", "config", "--syntax-only", "prometheus.yml", cwd=STACK_RULES.parent.parent)


def test_the_monitoring_stack_deploys_exactly_the_shipped_rules() -> None:
    assert STACK_RULES.read_bytes() == (MONITORING / "alerts.yml").read_bytes(), (
        "cp deployments/monitoring/alerts.yml deployments/stacks/monitoring/rules/homelab.yml")


def test_every_alert_has_a_for_a_severity_a_summary_and_a_runbook() -> None:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"HomelabDeployFailed", "HomelabNoSuccessfulDeploy48h", "HomelabDeployStuck",
                                           "HomelabRollbacksIncreasing", "HomelabWebhookSignatureFailures"}
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert "homelab " in rule["annotations"]["runbook"] or "systemctl" in rule["annotations"]["runbook"]


def test_the_rules_and_the_dashboard_name_only_series_of_the_contract() -> None:
    known = contract_names()
    for where, expr in {**rule_expressions(), **dashboard_expressions()}.items():
        unknown = metric_names(expr, known) - known
        assert not unknown, f"{where}: {sorted(unknown)} are not exposed by the orchestrator: {expr}"


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    exprs = " ".join(dashboard_expressions().values())
    for series in ("homelab_deploy_duration_seconds_bucket", "homelab_deploys_total", "homelab_rollbacks_total",
                   "homelab_last_success_timestamp_seconds", "homelab_deploy_in_progress",
                   "homelab_health_check_seconds_bucket"):
        assert series in exprs, f"no panel shows {series}"
    for panel in panels(board):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]  # chosen at import
    assert any(i.get("name") == "DS_PROMETHEUS" for i in board["templating"]["list"])


@pytest.fixture
def pushed_run(pushgateway, prometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One finished run's series in the Pushgateway, and the control metrics scraped: every
    expression then has something to evaluate."""
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path))
    run = RunMetrics(ENVIRONMENT, "manual", PushTarget(url=pushgateway.url, timeout_s=2))
    for name, series in SERIES.items():
        labels = {label: "x" for label in series.labels}
        if series.kind == "histogram":
            run.pending.observe(name, 0.5, **labels)
        elif series.kind == "counter":
            run.pending.inc(name, **labels)
    run.finished("failed")
    run.pending.set("homelab_last_success_timestamp_seconds", time.time() - 3600)
    asyncio.run(run.push(final=True))
    assert run.pushes == 1
    server = control_metrics.serve_metrics("127.0.0.1", 0)
    control_metrics.RUN_START_LATENCY.observe(0.2)
    address = f"127.0.0.1:{server.server_address[1]}"
    prometheus.scrape_also(address)
    prometheus.wait_for(f'homelab_deploy_in_progress{{environment="{ENVIRONMENT}"}}', timeout_s=20)
    prometheus.wait_for(f'up{{job="homelab-control",instance="{address}"}} == 1', timeout_s=20)
    yield run
    prometheus.stop_scraping(address)
    server.shutdown()
    pushgateway.wipe()


def test_every_expression_evaluates_in_a_real_prometheus(pushed_run, prometheus) -> None:
    for expr in rule_expressions().values():
        prometheus.query(expr)  # PrometheusError on a parse or type error
    for where, expr in dashboard_expressions().items():
        result = prometheus.query(expr)
        if "[" not in expr:  # instant ones see the pushed run at once (range ones need history)
            assert result, f"{where}: no series for {expr}"
    # the loaded rules evaluated without error too
    deadline = time.monotonic() + 10
    while True:
        rules = [r for g in prometheus.rules() for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rules and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    deadline = time.monotonic() + 10  # the pushed run failed: fires at the next evaluation
    while "firing" not in prometheus.alert_states("HomelabDeployFailed"):
        assert time.monotonic() < deadline, prometheus.alerts()
        time.sleep(0.3)
