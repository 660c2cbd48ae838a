"""Release history on a host: every record kept under ``releases/<stack>/``, and each stack's
current release, in one round trip."""

from __future__ import annotations

from model.releases import ReleaseRecord
from tasks.host_commands.layout import CURRENT, RELEASE_RECORD, RELEASES
from tasks.host_commands.sections import split_blocks
from tasks.host_commands.shell import sh

LIST_RELEASES = rf"""
state=$1; shift
for dir in "$state"/{RELEASES}/*/; do
  [ -d "$dir" ] || continue  # no stack at all: the glob stays unexpanded
  stack=$(basename "$dir")
  if [ "$#" -gt 0 ]; then case " $* " in *" $stack "*) ;; *) continue ;; esac; fi
  printf '@@current %s %s\n' "$stack" "$(cat "$dir/{CURRENT}" 2>/dev/null)"
  for rec in "$dir"*/{RELEASE_RECORD}; do
    [ -f "$rec" ] || continue
    printf '@@record %s\n' "$stack"; cat "$rec"; echo
  done
done
"""


def list_releases(state_dir: str, stacks: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every release record of ``stacks`` (all stacks if empty), and each stack's current id."""
    return sh(LIST_RELEASES, "list-releases", state_dir, *stacks)


def parse_releases_listing(text: str) -> tuple[dict[str, str | None], dict[str, list[ReleaseRecord]]]:
    """-> (stack -> current release id, stack -> records newest first)."""
    current: dict[str, str | None] = {}
    records: dict[str, list[ReleaseRecord]] = {}
    for tag, header, body in split_blocks(text, "current", "record"):
        if tag == "current":
            stack, _, release = header.partition(" ")
            current[stack] = release.strip() or None
        else:
            try:
                records.setdefault(header, []).append(ReleaseRecord.from_json(body))
            except (ValueError, TypeError):
                continue
    for stack_records in records.values():
        stack_records.sort(key=lambda r: r.id, reverse=True)
    return current, records
