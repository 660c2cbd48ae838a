"""The deploy metrics' running totals: what a push exposes, and how runs add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tasks.engine.metric_totals import SERIES, Samples, updating_totals


def exposed(samples: Samples) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, as Prometheus would read the push."""
    text = generate_latest(samples.registry()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def labelled(**labels: str) -> tuple:
    return tuple(sorted(labels.items()))


def test_counters_histograms_and_gauges_are_exposed_under_their_contract_names() -> None:
    samples = Samples()
    samples.inc("homelab_deploys_total", trigger="manual", result="success")
    samples.observe("homelab_deploy_duration_seconds", 7.5, host="vps", phase="edge")
    samples.set("homelab_deploy_in_progress", 1)
    seen = exposed(samples)
    assert seen[("homelab_deploys_total", (("result", "success"), ("trigger", "manual")))] == 1
    bucket = "homelab_deploy_duration_seconds_bucket"
    assert seen[(bucket, labelled(host="vps", phase="edge", le="5.0"))] == 0
    assert seen[(bucket, labelled(host="vps", phase="edge", le="10.0"))] == 1
    assert seen[(bucket, labelled(host="vps", phase="edge", le="+Inf"))] == 1
    assert seen[("homelab_deploy_duration_seconds_sum", labelled(host="vps", phase="edge"))] == 7.5
    assert seen[("homelab_deploy_duration_seconds_count", labelled(host="vps", phase="edge"))] == 1
    assert seen[("homelab_deploy_in_progress", ())] == 1


def test_runs_add_up_in_the_saved_totals(tmp_path: Path) -> None:
    path = tmp_path / "production.json"
    for result in ("success", "failed", "success"):
        run = Samples()
        run.inc("homelab_deploys_total", trigger="webhook", result=result)
        run.observe("homelab_health_check_seconds", 0.3, host="vps", stack="newsletter")
        run.set("homelab_last_deploy_success", 1 if result == "success" else 0)
        with updating_totals(path) as totals:
            totals.add(run)
    with updating_totals(path) as totals:
        seen = exposed(totals)
    assert seen[("homelab_deploys_total", (("result", "success"), ("trigger", "webhook")))] == 2
    assert seen[("homelab_deploys_total", (("result", "failed"), ("trigger", "webhook")))] == 1
    assert seen[("homelab_health_check_seconds_count", (("host", "vps"), ("stack", "newsletter")))] == 3
    assert seen[("homelab_last_deploy_success", ())] == 1  # a gauge is the last value, not a sum


@pytest.mark.parametrize("content", ["", "{not json", '{"counters": 3}', json.dumps(
    {"counters": {"homelab_deploys_total": [[["only-one-label"], 5]], "homelab_gone_total": [[[], 1]]},
     "histograms": {"homelab_lock_wait_seconds": [[["vps"], [1, 2], 3.0]]}})])
def test_damaged_or_outdated_totals_start_again_instead_of_failing(tmp_path: Path, content: str) -> None:
    path = tmp_path / "production.json"
    path.write_text(content)
    with updating_totals(path) as totals:
        totals.inc("homelab_rollbacks_total", reason="policy")
    assert exposed(Samples.from_json(json.loads(path.read_text()))) == {
        ("homelab_rollbacks_total", (("reason", "policy"),)): 1.0}


def test_an_error_while_updating_saves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "production.json"
    with pytest.raises(RuntimeError), updating_totals(path) as totals:
        totals.inc("homelab_rollbacks_total", reason="policy")
        raise RuntimeError("boom")
    assert not path.exists()


@pytest.mark.parametrize("labels", [{}, {"trigger": "manual"}, {"trigger": "manual", "result": "x", "commit": "abc"}])
def test_wrong_labels_are_refused(labels: dict) -> None:
    with pytest.raises(ValueError, match="takes labels"):
        Samples().inc("homelab_deploys_total", **labels)


def test_no_series_is_labelled_with_a_run_commit_or_release() -> None:
    for name, series in SERIES.items():
        assert not {"commit", "release", "flow_run_id", "run_id"} & set(series.labels), name
