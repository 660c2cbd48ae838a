"""Planning is a table: (desired, facts) -> one action per (phase, host, stack), with a reason."""

from __future__ import annotations

import pytest

from model.compose_model import ComposeInput
from model.desired import DesiredStack, DesiredState, config_hash
from model.inventory import Inventory
from model.releases import ReleaseRecord
from model.stack_files import StackFiles
from tasks.engine.plan import ORPHANS, Change, make_plan
from tasks.host_commands.containers import Container
from tasks.host_commands.survey import HostSurvey

WANT = config_hash("services:\n  web:\n    image: nginx:1.27\n")
OLD = config_hash("services:\n  web:\n    image: nginx:1.26\n")

INVENTORY = Inventory.model_validate({
    "hosts": {"alpha": {"address": "10.0.0.1"}, "beta": {"address": "10.0.0.2"}},
    "phases": {"base": {"stacks": {}}, "top": {"depends_on": ["base"], "stacks": {}}},
})


def stack(name: str, phase: str, hosts: tuple[str, ...], services: tuple[str, ...] = ("web",),
          want: str = WANT) -> DesiredStack:
    files = StackFiles(())
    return DesiredStack(name=name, phase=phase, hosts=hosts, files=files,
                        compose=ComposeInput(project=name, files=files, compose_files=("compose.yaml",)),
                        images={s: f"{s}:1" for s in services}, identity=want, config_hash=want)


def desired(*stacks: DesiredStack) -> DesiredState:
    return DesiredState(inventory=INVENTORY, source="homelab.yaml", commit="c0ffee", stacks={s.name: s for s in stacks})


def release(stack_name: str, config: str = WANT, status: str = "active", rid: str = "R1",
            images: dict[str, str] | None = None) -> ReleaseRecord:
    return ReleaseRecord(id=rid, stack=stack_name, host="alpha", commit=None, config_hash=config, images=images or {},
                         created_at="2026-02-01T12:00:00+00:00", flow_run_id=None, status=status)


def container(stack_name: str, service: str = "web", state: str = "running", health: str = "none",
              exit_code: int = 0) -> Container:
    return Container(id=f"{stack_name}-{service}", name=f"{stack_name}-{service}-1", project=stack_name,
                     service=service, image=f"{service}:1", image_id="sha256:1", state=state, health=health,
                     exit_code=exit_code)


def facts(releases: dict[str, ReleaseRecord] | None = None, containers: tuple[Container, ...] = (),
          broken: dict[str, str] | None = None) -> HostSurvey:
    return HostSurvey(engine_ok=True, engine_error=None, disk_free_mb=10_000, disk_error=None,
                      releases=releases or {}, broken_releases=broken or {}, containers=containers)


# (id, facts for host alpha about stack "web" with service "web", action, reason substring)
SINGLE = [
    ("never deployed", facts(), "create", "never deployed to this host"),
    ("unreadable release record", facts(broken={"web": "release R1: unreadable record (JSONDecodeError)"}),
     "create", "unreadable record"),
    ("config hash differs", facts({"web": release("web", OLD)}, (container("web"),)), "update",
     f"config changed ({OLD[7:19]} -> {WANT[7:19]})"),
    ("same hash, container exited", facts({"web": release("web")}, (container("web", state="exited", exit_code=2),)),
     "update", "release R1 is current but web-web-1 exited (exit code 2)"),
    ("same hash, container unhealthy", facts({"web": release("web")}, (container("web", health="unhealthy"),)),
     "update", "is unhealthy"),
    ("same hash, container missing", facts({"web": release("web")}), "update",
     "release R1 is current but no container for service(s) web"),
    ("same hash, container of another project only", facts({"web": release("web")}, (container("other"),)),
     "update", "no container for service(s) web"),
    ("same hash, healthy", facts({"web": release("web")}, (container("web", health="healthy"),)), "unchanged",
     "release R1 is current and healthy"),
    ("same hash, running without healthcheck", facts({"web": release("web")}, (container("web"),)), "unchanged",
     "current and healthy"),
    ("same hash, healthy, the recorded image", facts({"web": release("web", images={"web:1": "sha256:1"})},
                                                     (container("web"),)), "unchanged", "current and healthy"),
    ("same hash, healthy, another image", facts({"web": release("web", images={"web:1": "sha256:2"})},
                                                (container("web"),)), "update",
     "web-web-1 run(s) an image that is not the release's"),
]


@pytest.mark.parametrize(("survey", "action", "reason"), [c[1:] for c in SINGLE], ids=[c[0] for c in SINGLE])
def test_plan_for_one_stack(survey, action, reason):
    plan = make_plan(desired(stack("web", "base", ("alpha",))), {"alpha": survey})
    (change,) = plan.changes
    assert (change.phase, change.host, change.stack, change.action) == ("base", "alpha", "web", action)
    assert reason in change.reason
    assert change.current_release == (survey.releases["web"].id if "web" in survey.releases else None)
    assert plan.phases == ("base",)
    assert plan.pending == ([] if action == "unchanged" else [change])


def test_a_multi_service_stack_needs_every_service():
    survey = facts({"auth": release("auth")}, (container("auth", "server"),))
    (change,) = make_plan(desired(stack("auth", "base", ("alpha",), ("server", "worker"))), {"alpha": survey}).changes
    assert change.action == "update"
    assert "no container for service(s) worker" in change.reason


def test_one_change_per_host_in_phase_order():
    state = desired(stack("db", "base", ("beta",)), stack("web", "top", ("alpha", "beta")))
    surveys = {"alpha": facts(), "beta": facts({"db": release("db")}, (container("db"),))}
    plan = make_plan(state, surveys)
    assert [(c.phase, c.host, c.stack, c.action) for c in plan.changes] == [
        ("base", "beta", "db", "unchanged"),
        ("top", "alpha", "web", "create"),
        ("top", "beta", "web", "create"),
    ]
    assert plan.phases == ("base", "top")
    assert [c.stack for c in plan.phase("top")] == ["web", "web"]


# (id, surveys, full, expected orphan removals as (host, stack, release))
ORPHAN_CASES = [
    ("stack dropped from the inventory", {"alpha": facts({"web": release("web"), "old": release("old", rid="R9")},
                                                          (container("web"),))},
     True, [("alpha", "old", "R9")]),
    ("stack moved to another host", {"alpha": facts({"web": release("web")}, (container("web"),)),
                                     "beta": facts({"web": release("web", rid="R7")})},
     True, [("beta", "web", "R7")]),
    ("already removed record", {"alpha": facts({"web": release("web"), "old": release("old", status="removed")},
                                               (container("web"),))},
     True, []),
    ("--only run proposes no removals", {"alpha": facts({"web": release("web"), "old": release("old")},
                                                        (container("web"),)),
                                         "beta": facts({"web": release("web")})},
     False, []),
]


@pytest.mark.parametrize(("surveys", "full", "removals"), [c[1:] for c in ORPHAN_CASES],
                         ids=[c[0] for c in ORPHAN_CASES])
def test_orphans(surveys, full, removals):
    plan = make_plan(desired(stack("web", "base", ("alpha",))), surveys, full=full)
    removes = [c for c in plan.changes if c.action == "remove"]
    assert [(c.host, c.stack, c.current_release) for c in removes] == removals
    assert all(c.phase == ORPHANS for c in removes)
    assert all("no longer placed here by the inventory" in c.reason for c in removes)
    assert plan.phases == (("base", ORPHANS) if removals else ("base",))
    assert plan.phase(ORPHANS) == removes
    assert next(c for c in plan.changes if c.stack == "web" and c.host == "alpha").action == "unchanged"


def test_plan_json_has_no_internal_fields():
    plan = make_plan(desired(stack("web", "base", ("alpha",))), {"alpha": facts()})
    assert plan.to_json() == {"changes": [{"phase": "base", "host": "alpha", "stack": "web", "action": "create",
                                           "reason": "never deployed to this host"}]}
    change = Change(phase="p", host="h", stack="s", action="remove", reason="r", current_release="R1")
    assert change.to_dict() == {"phase": "p", "host": "h", "stack": "s", "action": "remove", "reason": "r"}


def test_a_moved_tag_is_an_update_naming_both_image_ids():
    old, new = "sha256:" + "ab12" * 16, "sha256:" + "cd34" * 16
    record = release("web", images={"web:1": old})
    running = Container(id="c1", name="web-web-1", project="web", service="web", image="web:1", image_id=old,
                        state="running", health="healthy", exit_code=0)
    healthy = facts({"web": record}, (running,))
    state = desired(stack("web", "base", ("alpha",)))
    assert make_plan(state, {"alpha": healthy}).changes[0].action == "unchanged"
    moved = make_plan(state, {"alpha": healthy}, fresh_images={"alpha": {"web:1": new}}).changes[0]
    assert moved.action == "update"
    assert moved.reason == "image web:1 sha256:ab12ab12ab12\u2026 \u2192 sha256:cd34cd34cd34\u2026"
    same = make_plan(state, {"alpha": healthy}, fresh_images={"alpha": {"web:1": old}}).changes[0]
    assert same.action == "unchanged"


def test_a_placement_to_redeploy_is_an_update_even_when_current():
    state = desired(stack("web", "base", ("alpha", "beta")))
    current = facts({"web": release("web")}, (container("web"),))
    plan = make_plan(state, {"alpha": current, "beta": current},
                     redeploy={("alpha", "web"): ".env.secrets differs from Vault"})
    assert [(c.host, c.action, c.reason) for c in plan.changes] == [
        ("alpha", "update", ".env.secrets differs from Vault"),
        ("beta", "unchanged", "release R1 is current and healthy")]
    changed = make_plan(state, {"alpha": facts({"web": release("web", config="sha256:old")}, (container("web"),)),
                                "beta": current}, redeploy={("alpha", "web"): "drifted"}).changes[0]
    assert changed.action == "update" and changed.reason.endswith("; drifted")
