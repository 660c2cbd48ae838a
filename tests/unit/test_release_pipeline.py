"""The release pipeline's pure parts: who must approve, which stacks have a staging copy and
how it differs, the inventory's rules for both, and the plan a person approves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model.approval import approval_needed
from model.desired import DesiredState, load_desired_state
from model.errors import InventoryError
from model.inventory import ApprovalPolicy, Inventory
from model.inventory_loader import load_inventory
from model.staging import smoke_checks, staged_stack, staging_inventory
from model.triggers import trigger_from_tags
from tasks.engine.plan import ORPHANS, make_plan
from tasks.engine.release_plan import approval_markdown, plan_summary
from tests.unit.test_planning import container, desired, facts, release, stack

PRODUCTION = {"environment": "production", "trigger": "manual", "changed_phases": {"apps"}}


@pytest.mark.parametrize(("policy", "changes", "needed", "why"), [
    ({}, {}, True, "manual run changes phase(s) apps"),
    ({}, {"changed_phases": set()}, False, "changes nothing"),
    ({}, {"environment": "staging"}, False, "staging run"),
    ({}, {"yes": True}, False, "--yes"),
    ({}, {"yes": True, "trigger": "webhook"}, True, "webhook run"),  # --yes is for manual runs only
    ({}, {"yes": True, "trigger": "agent"}, False, "auto_approve on an agent run"),
    ({}, {"trigger": "agent"}, True, "agent run changes"),
    ({"not_needed": {"triggers": ["agent"]}}, {"trigger": "agent"}, False, "agent runs"),
    ({}, {"yes": True, "trigger": "nightly"}, True, "nightly run"),
    ({"not_needed": {"triggers": ["nightly"]}}, {"trigger": "nightly"}, False, "nightly runs"),
    ({"not_needed": {"triggers": ["nightly"]}}, {"trigger": "webhook"}, True, "webhook run"),
    ({"not_needed": {"phases": ["apps"]}}, {}, False, "changes in apps"),
    ({"not_needed": {"phases": ["apps"]}}, {"changed_phases": {"apps", "core"}}, True, "phase(s) core"),
])
def test_when_a_run_needs_approval(policy: dict, changes: dict, needed: bool, why: str) -> None:
    got, reason = approval_needed(ApprovalPolicy.model_validate(policy), **{**PRODUCTION, **changes})
    assert got is needed and why in reason


@pytest.mark.parametrize(("tags", "trigger"), [
    ([], "manual"), (["homelab"], "manual"), (["homelab", "nightly"], "nightly"), (["webhook"], "webhook"),
    (["agent"], "agent"), (["homelab", "agent"], "agent")])
def test_the_trigger_comes_from_the_run_tags(tags: list[str], trigger: str) -> None:
    assert trigger_from_tags(tags) == trigger


def inventory(stacks: dict, *, gpu_staging: bool = False, **top: object) -> Inventory:
    return Inventory.model_validate({
        "hosts": {"vps": {"address": "10.0.0.1"}, "thinkpad": {"address": "10.0.0.2", "environment": "staging",
                                                                 "gpu": gpu_staging},
                  "rtx": {"address": "10.0.0.3", "gpu": True}},
        "phases": {"apps": {"on_failure": "continue", "snapshot": True, "stacks": stacks}}, **top})


def has(*files: str):
    return lambda _stack, path: path in files


def test_an_absent_staging_form_stages_a_stack_only_when_it_ships_compose_staging_yaml() -> None:
    inv = inventory({"web": {"hosts": ["vps"], "env": {"A": "1"}, "project_dir": "/srv/web"}})
    assert staged_stack(inv, "web", inv.stack("web"), has()) is None
    copy = staged_stack(inv, "web", inv.stack("web"), has("compose.staging.yaml"))
    assert copy is not None
    assert copy.hosts == ["thinkpad"] and copy.compose == ["compose.yaml", "compose.staging.yaml"]
    assert copy.dir == "stacks/web" and copy.project_dir is None and copy.env == {"A": "1"}


def test_staging_false_opts_out_and_true_stages_as_is() -> None:
    inv = inventory({"off": {"hosts": ["vps"], "staging": False}, "on": {"hosts": ["vps"], "staging": True}})
    assert staged_stack(inv, "off", inv.stack("off"), has("compose.staging.yaml")) is None
    copy = staged_stack(inv, "on", inv.stack("on"), has())
    assert copy is not None and copy.compose == ["compose.yaml"]


def test_a_gpu_stack_names_a_cpu_override_for_a_staging_host_without_gpu() -> None:
    form = {"compose": "compose.staging.yaml", "cpu_compose": "compose.cpu.yaml", "env": {"MODEL": "tiny"},
            "profiles": ["cpu"], "health": {"checks": [{"http": "http://127.0.0.1:9000/health"}]}}
    stacks = {"llm": {"hosts": ["rtx"], "env": {"MODEL": "big", "X": "1"}, "profiles": ["gpu"], "staging": form,
                      "gpu": {"count": 1, "memory_mb": 6000},
                      "health": {"checks": [{"http": "http://127.0.0.1:8000/health"}]}}}
    inv = inventory(stacks)
    copy = staged_stack(inv, "llm", inv.stack("llm"), has())
    assert copy is not None
    assert copy.compose == ["compose.yaml", "compose.staging.yaml", "compose.cpu.yaml"]
    assert copy.env == {"MODEL": "tiny", "X": "1"} and copy.profiles == ["cpu"]
    assert copy.health.checks[0].http == "http://127.0.0.1:9000/health"
    assert copy.gpu is None  # the CPU-only form needs no GPU, so pre-flight does not ask for one
    with_gpu = inventory(stacks, gpu_staging=True)
    gpu_copy = staged_stack(with_gpu, "llm", with_gpu.stack("llm"), has())
    assert gpu_copy.compose[-1] == "compose.staging.yaml" and gpu_copy.gpu.memory_mb == 6000


def test_the_staging_inventory_keeps_every_phase_and_undoes_all_on_failure() -> None:
    inv = inventory({"web": {"hosts": ["vps"], "staging": {"smoke": [{"http": "http://127.0.0.1:1/"}]}},
                     "db": {"hosts": ["vps"]}})
    staged = staging_inventory(inv, has())
    phase = staged.phases["apps"]
    assert list(phase.stacks) == ["web-staging"]
    assert phase.on_failure == "rollback-all" and phase.snapshot is False
    assert [c.http for c in smoke_checks(inv, "web-staging")] == ["http://127.0.0.1:1/"]


def write(tmp_path: Path, doc: dict, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {"stacks/web/compose.yaml": "services:\n  web:\n    image: nginx:1\n"}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    path = tmp_path / "homelab.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def doc(web: dict | None = None, *, staging_hosts: int = 1, **top: object) -> dict:
    hosts = {f"h{i}": {"address": f"10.0.0.{i}", **({"environment": "staging"} if i < staging_hosts else {})}
             for i in range(3)}
    return {"hosts": hosts, "phases": {"apps": {"stacks": {"web": {"hosts": ["h2"], **(web or {})}}}}, **top}


@pytest.mark.parametrize(("document", "needle"), [
    (doc(staging_hosts=2), "only one host can be the staging host (already 'h0')"),
    (doc({"staging": True}, staging_hosts=0), "a staging form needs a host with `environment: staging`"),
    (doc({"staging": {"compose": "compose.stage.yaml"}}), "compose file not found"),
    (doc({"staging": {"compose": "../x.yaml"}}), "compose file"),
    (doc(approval={"not_needed": {"phases": ["nope"]}}), "unknown phase 'nope'"),
    (doc(approval={"not_needed": {"triggers": ["cron"]}}), "approval.not_needed.triggers"),
    (doc({"staging": {"smoke": [{"http": "http://127.0.0.1:1/", "exec": "true"}]}}), "smoke"),
])
def test_staging_and_approval_mistakes_are_named(tmp_path: Path, document: dict, needle: str) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, document))
    assert needle in str(caught.value)


def test_a_staging_copy_cannot_take_another_stack_name(tmp_path: Path) -> None:
    document = doc({"staging": True})
    document["phases"]["apps"]["stacks"]["web-staging"] = {"hosts": ["h2"]}
    with pytest.raises(InventoryError, match="would be named 'web-staging', which is another stack"):
        load_inventory(write(tmp_path, document, {"stacks/web/compose.yaml": "services: {}\n",
                                                  "stacks/web-staging/compose.yaml": "services: {}\n"}))


def test_a_smoke_test_must_exec_in_a_service_of_the_stack(tmp_path: Path) -> None:
    path = write(tmp_path, doc({"staging": {"smoke": [{"exec": "true", "service": "db"}]}}))
    with pytest.raises(InventoryError, match=r"web: staging.smoke\[0\].service: 'db' is not a service"):
        load_desired_state(path)


def test_the_desired_state_carries_the_staging_copies(tmp_path: Path) -> None:
    files = {"stacks/web/compose.yaml": "services:\n  web:\n    image: nginx:1\n    ports: ['8080:80']\n",
             "stacks/web/compose.staging.yaml": "services:\n  web:\n    ports: !override ['18080:80']\n"}
    state = load_desired_state(write(tmp_path, doc(), files))
    assert state.staging is not None and list(state.staging.stacks) == ["web-staging"]
    copy = state.staging.stacks["web-staging"]
    assert copy.hosts == ("h0",) and copy.compose.project == "web-staging"
    assert copy.config_hash != state.stacks["web"].config_hash
    assert ("h0", "web-staging") in state.placements()
    # production never ships the staging override, so adding one does not redeploy production
    assert "compose.staging.yaml" not in state.stacks["web"].files.manifest()
    assert "compose.staging.yaml" in copy.files.manifest()
    (tmp_path / "stacks/web/compose.staging.yaml").unlink()
    assert load_desired_state(tmp_path / "homelab.yaml").stacks["web"].identity == state.stacks["web"].identity


def test_a_staging_copy_is_not_an_orphan_of_the_production_plan() -> None:
    web = stack("web", "base", ("alpha",))
    copy = stack("web-staging", "base", ("beta",))
    state = desired(web)
    with_copy = DesiredState(inventory=state.inventory, source="x", commit="c", stacks=state.stacks,
                             staging=desired(copy))
    surveys = {"alpha": facts({"web": release("web")}, (container("web"),)),
               "beta": facts({"web-staging": release("web-staging")}, (container("web-staging"),))}
    assert [c.action for c in make_plan(with_copy, surveys).changes if c.stack == "web-staging"] == []
    orphan = [c for c in make_plan(state, surveys).changes if c.stack == "web-staging"]
    assert [(c.phase, c.action) for c in orphan] == [(ORPHANS, "remove")]


def test_the_plan_to_approve_names_releases_and_images() -> None:
    web = stack("web", "base", ("alpha",))
    state = desired(web)
    old = release("web", config="sha256:old", rid="R1", images={"web:0": "sha256:0"})
    plan = make_plan(state, {"alpha": facts({"web": old}, (container("web"),)), "beta": facts()})
    text = approval_markdown(plan, state, trigger="webhook", why="webhook run changes phase(s) base",
                             smoke_table="| smoke |", staging_note="success on thinkpad")
    assert "| base | alpha | web | update | R1 \u2192 new release @ c0ffee | web:0 \u2192 web:1 |" in text
    assert "webhook run: webhook run changes phase(s) base" in text and "| smoke |" in text
    assert plan_summary(plan.pending, "c0ffee0123456789") == "1 change(s) @ c0ffee012345: web on alpha update"
