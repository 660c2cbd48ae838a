"""Release records: what a stack ran, from which commit, made by which flow run.

A record is written on the host after the stack's health gate passed (status ``active``)
or failed (``failed``). The ``current`` pointer only ever names a healthy release, so the
previous release stays known until the new one is proven.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from tasks.compose import releases_dir


@dataclass(frozen=True)
class ReleaseRecord:
    id: str
    stack: str
    host: str
    commit: str | None
    config_hash: str
    images: dict[str, str]  # image reference -> image id
    created_at: str
    flow_run_id: str | None
    status: str = "active"  # active | failed | rolled-back
    source: str = ""
    services: list[str] = field(default_factory=list)
    secret_versions: dict[str, int] = field(default_factory=dict)  # Vault KV path -> version (never values)
    env_files: list[str] = field(default_factory=list)  # names of the rendered env files in the release dir
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, text: str) -> ReleaseRecord:
        raw = json.loads(text)
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        return cls(**known)


def new_release_id(now: datetime | None = None) -> str:
    """Sortable by time: 20261126T233000Z-1a2b3c."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


COMMIT_RELEASE = r"""
set -e
dir=$1; id=$2; keep=$3; activate=$4; protect=$5
mkdir -p "$dir/$id"
cat > "$dir/$id/release.json.tmp"
mv -f "$dir/$id/release.json.tmp" "$dir/$id/release.json"
if [ "$activate" = 1 ]; then
  printf '%s\n' "$id" > "$dir/current.tmp" && mv -f "$dir/current.tmp" "$dir/current"
fi
rm -f "$dir/pending"
current=$(cat "$dir/current" 2>/dev/null || true)
# prune: keep the newest $keep releases, never the current one, nor the one a rollback may need
ls -1 "$dir" | grep -E '^[0-9]{8}T[0-9]{6}Z-' | sort -r | tail -n +$((keep + 1)) |
while read -r old; do [ "$old" = "$current" ] || [ "$old" = "$protect" ] || rm -rf -- "${dir:?}/$old"; done
"""


def commit_release(state_dir: str, stack: str, release: str, keep: int, activate: bool,
                   protect: str | None = None) -> list[str]:
    """Write the record from stdin, move ``current`` to it if ``activate``, clear the pending
    marker, and prune old releases except ``current`` and ``protect`` (the previous release,
    which a rollback of this run may still need)."""
    return ["sh", "-c", COMMIT_RELEASE, "commit-release", releases_dir(state_dir, stack), release,
            str(keep), "1" if activate else "0", protect or ""]
