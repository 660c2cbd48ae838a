"""A stack's staging copy: the same folder on the staging host, as compose project
``<stack>-staging``, with its override file(s) on top (own ports, env, volumes).

The copy is an ordinary stack of a derived inventory (``staging_inventory``), so it gets its
own release records, locks, health gate and rollback, exactly like production stacks.
"""

from __future__ import annotations

from collections.abc import Callable

from model.inventory import Inventory, Stack, StagingForm
from model.smoke import SmokeCheck

SUFFIX = "-staging"
DEFAULT_OVERRIDE = "compose.staging.yaml"

HasFile = Callable[[str, str], bool]  # (stack name, path in its folder) -> exists


def staging_name(stack: str) -> str:
    return stack + SUFFIX


def production_name(staged: str) -> str:
    return staged.removesuffix(SUFFIX)


def staging_form(stack: Stack) -> StagingForm:
    return stack.staging if isinstance(stack.staging, StagingForm) else StagingForm()


def staging_files(name: str, stack: Stack, has_file: HasFile) -> list[str]:
    """The override files only the staging copy uses: production never ships them, so adding
    or changing a staging form does not redeploy production."""
    if stack.staging is False:
        return []
    form = staging_form(stack)
    named = form.override_files() or ([DEFAULT_OVERRIDE] if has_file(name, DEFAULT_OVERRIDE) else [])
    return [f for f in [*named, *form.cpu_files()] if f not in stack.compose_files(name)]


def production_stack(name: str, stack: Stack, has_file: HasFile) -> Stack:
    extra = staging_files(name, stack, has_file)
    return stack.model_copy(update={"exclude": [*stack.exclude, *extra]}) if extra else stack


def staged_stack(inv: Inventory, name: str, stack: Stack, has_file: HasFile) -> Stack | None:
    """The stack's staging copy, placed on the staging host; None if it has none. Absent
    ``staging:`` means staged only if the folder has ``compose.staging.yaml``."""
    host = inv.staging_host()
    if stack.staging is False or host is None:
        return None
    form = staging_form(stack)
    overrides = form.override_files()
    if not overrides and has_file(name, DEFAULT_OVERRIDE):
        overrides = [DEFAULT_OVERRIDE]
    if stack.staging is None and not overrides:
        return None
    gpu = stack.gpu
    if not inv.hosts[host].gpu:
        overrides += form.cpu_files()
        gpu = None if form.cpu_files() else gpu  # the CPU-only form needs no GPU; without one, pre-flight says so
    return stack.model_copy(update={
        "gpu": gpu,
        "hosts": [host], "dir": stack.folder(name), "compose": stack.compose_files(name) + overrides,
        "env": {**stack.env, **form.env}, "profiles": stack.profiles if form.profiles is None else form.profiles,
        "per_host": {}, "project_dir": None, "health": form.health or stack.health, "staging": False})


def staging_inventory(inv: Inventory, has_file: HasFile) -> Inventory:
    """Every phase (kept, for its dependencies) with only the staging copies. Any failure in
    staging undoes the whole staging run, and staging never takes VM snapshots."""
    phases = {}
    for phase_name, phase in inv.phases.items():
        stacks = {staging_name(name): copy for name, stack in phase.stacks.items()
                  if (copy := staged_stack(inv, name, stack, has_file)) is not None}
        phases[phase_name] = phase.model_copy(update={"on_failure": "rollback-all", "snapshot": False,
                                                      "vmstate": False, "stacks": stacks})
    return inv.model_copy(update={"phases": phases})


def smoke_checks(inv: Inventory, staged: str) -> list[SmokeCheck]:
    """The smoke tests of a staging copy (by its staged name)."""
    return list(staging_form(inv.stack(production_name(staged))).smoke)
