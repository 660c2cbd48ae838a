"""``--refresh-images`` and ``pull: always``: pull the images of the stacks that ask for it on
every targeted host at once, and learn which tags now name another image than the one
the current release runs. The plan then updates exactly those stacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.desired import DesiredState
from tasks.engine.host_pool import HostPool
from tasks.engine.results import error_text, gather_hosts
from tasks.host_commands.image_refresh import RefreshedImage, parse_refresh, refresh_images
from tasks.host_commands.survey import HostSurvey


@dataclass(frozen=True)
class FreshImages:
    """host -> image reference -> the id it names after the pull; and what could not be pulled."""

    ids: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def refs_to_refresh(desired: DesiredState, surveys: dict[str, HostSurvey], everything: bool) -> dict[str, list[str]]:
    """host -> references to pull: of deployed stacks with ``pull: always``, or all with
    ``everything``. A stack not deployed yet gets its images at its first deploy anyway."""
    wanted: dict[str, list[str]] = {}
    for stack in desired.stacks.values():
        if not (everything or desired.inventory.stack(stack.name).pull == "always"):
            continue
        for host in stack.hosts:
            if stack.name in surveys[host].releases:
                refs = wanted.setdefault(host, [])
                refs += [ref for ref in stack.for_host(host).images.values() if ref not in refs]
    return wanted


async def read_fresh(pool: HostPool, host: str, refs: list[str]) -> dict[str, RefreshedImage]:
    result = await pool[host].run(refresh_images(refs), check=False, timeout=600)
    return parse_refresh(result.stdout)


async def refresh_hosts(pool: HostPool, desired: DesiredState, surveys: dict[str, HostSurvey], *,
                        everything: bool, read=read_fresh) -> FreshImages:
    wanted = refs_to_refresh(desired, surveys, everything)
    if not wanted:
        return FreshImages()
    done = await gather_hosts(list(wanted), lambda host: read(pool, host, wanted[host]))
    ids: dict[str, dict[str, str]] = {}
    warnings = [f"images not refreshed: {error_text(host, error)}" for host, error in done.failed.items()]
    for host, images in done.succeeded.items():
        ids[host] = {ref: image.id for ref, image in images.items() if image.id}
        warnings += [f"{host}: pull of {ref} failed, comparing the local image: {image.pull_error}"
                     for ref, image in images.items() if image.pull_error]
    return FreshImages(ids, warnings)
