"""Moving tags: pull each image reference again, then read the id it names now.

One round trip per host. A failed pull is not an error here (a registry may be down, or an
image may only exist locally): the reference keeps the id it has on the host, and the
failure is reported so the run can say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.host_commands.sections import split_blocks
from tasks.host_commands.shell import sh

# Per reference: "@@image <ref>", then "id <image id or ->", then "pull-error <text>" if any.
REFRESH = r"""for ref in "$@"; do
  echo "@@image $ref"
  if ! out=$(docker pull -q -- "$ref" 2>&1 >/dev/null); then printf 'pull-error %s\n' "$(echo "$out" | tail -n 1)"; fi
  printf 'id %s\n' "$(docker image inspect --format '{{.Id}}' -- "$ref" 2>/dev/null || echo -)"
done"""


@dataclass(frozen=True)
class RefreshedImage:
    id: str | None  # None: the reference is on the host under no id at all
    pull_error: str | None = None


def refresh_images(refs: list[str]) -> list[str]:
    return sh(REFRESH, "refresh-images", *refs)


def parse_refresh(text: str) -> dict[str, RefreshedImage]:
    found = {}
    for _, ref, body in split_blocks(text, "image"):
        fields = dict(line.partition(" ")[::2] for line in body.splitlines() if line.strip())
        image_id = fields.get("id", "-").strip()
        found[ref] = RefreshedImage(None if image_id in ("", "-") else image_id, fields.get("pull-error") or None)
    return found
