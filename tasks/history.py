"""Release history on a host: every record kept under ``releases/<stack>/``, newest first."""

from __future__ import annotations

from tasks.releases import ReleaseRecord

LIST_RELEASES = r"""
state=$1; shift
for dir in "$state"/releases/*/; do
  stack=$(basename "$dir")
  if [ "$#" -gt 0 ]; then case " $* " in *" $stack "*) ;; *) continue ;; esac; fi
  printf '@@current %s %s\n' "$stack" "$(cat "$dir/current" 2>/dev/null)"
  for rec in "$dir"*/release.json; do
    [ -f "$rec" ] || continue
    printf '@@record %s\n' "$stack"; cat "$rec"; echo
  done
done
"""


def list_releases(state_dir: str, stacks: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every release record of ``stacks`` (all stacks if empty), and each stack's current id."""
    return ["sh", "-c", LIST_RELEASES, "list-releases", state_dir, *stacks]


def parse_releases_listing(text: str) -> tuple[dict[str, str | None], dict[str, list[ReleaseRecord]]]:
    """-> (stack -> current release id, stack -> records newest first)."""
    current: dict[str, str | None] = {}
    records: dict[str, list[ReleaseRecord]] = {}
    for block in text.split("@@")[1:]:
        header, _, body = block.partition("\n")
        kind, _, rest = header.partition(" ")
        if kind == "current":
            stack, _, release = rest.partition(" ")
            current[stack] = release.strip() or None
        elif kind == "record":
            try:
                records.setdefault(rest.strip(), []).append(ReleaseRecord.from_json(body))
            except (ValueError, TypeError):
                continue
    for stack_records in records.values():
        stack_records.sort(key=lambda r: r.id, reverse=True)
    return current, records


def rollback_target(records: list[ReleaseRecord], current: str | None, wanted: str | None) -> ReleaseRecord | None:
    """The release to return to: ``wanted`` if given, else the newest healthy one before ``current``."""
    if wanted:
        return next((r for r in records if r.id == wanted), None)
    older = [r for r in records if current is None or r.id < current]
    return next((r for r in older if r.status in ("active", "rolled-back")), None)
