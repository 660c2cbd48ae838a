"""Files holding secrets that nothing needs any more: what ``--prune`` removes with a stack,
and what ``homelab secrets scrub`` finds.

The secrets on a host are the rendered env files: at the top of each release directory
(``releases/<stack>/<release>/<name>``, every top-level file except the record) and installed
in the stack's project directory under the same names. Release records stay (metadata, no
values); a pruned stack's records are marked ``removed``, so no rollback aims at them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tasks.host_commands.layout import COMPOSE_FILE, CURRENT, PENDING, RELEASE_RECORD, RELEASES, STACKS, releases_dir
from tasks.host_commands.shell import script, sh

# release_env DIR: prints the env files at the top of release directory DIR, one a line
_RELEASE_ENV = (f'release_env() {{ for f in "$1"/* "$1"/.[!.]*; do [ -f "$f" ] || continue; '
                f'case ${{f##*/}} in {RELEASE_RECORD}|{RELEASE_RECORD}.tmp|{COMPOSE_FILE}) continue ;; esac; '
                f'printf \'%s\\n\' "$f"; done; }}')

# Retiring a stack (``--prune``): compose down first (the argv after the two dirs); then its
# env files go from every release directory and from the project directory (the names the
# releases hold, and .env*), everything but the record goes from each release directory,
# `current` and `pending` go, and each record is marked removed. Data in the project
# directory stays.
RETIRE = _RELEASE_ENV + f"""
rel=$1; proj=$2; shift 2
"$@" || exit
rm -f -- "$rel/{CURRENT}" "$rel/{CURRENT}.tmp" "$rel/{PENDING}" "$rel/{PENDING}.tmp" || exit
for r in "$rel"/*/; do
  r=${{r%/}}; [ -d "$r" ] || continue
  release_env "$r" | while IFS= read -r f; do rm -f -- "$proj/${{f##*/}}" "$proj/.${{f##*/}}.tmp"; done
  for f in "$r"/* "$r"/.[!.]*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    [ "${{f##*/}}" = {RELEASE_RECORD} ] || rm -rf -- "$f" || exit
  done
  if [ -f "$r/{RELEASE_RECORD}" ]; then
    sed -i 's/"status": "[a-z-]*"/"status": "removed"/' -- "$r/{RELEASE_RECORD}" || exit
  else rmdir -- "$r" || exit; fi
done
for f in "$proj"/.env "$proj"/.env.*; do [ -f "$f" ] && {{ rm -f -- "$f" || exit; }}; done
exit 0
"""


def retire_stack_files(state_dir: str, stack: str, project_dir: str, down: Sequence[str]) -> list[str]:
    """``down`` (compose down), then no file of ``stack`` holding a secret is left: see ``RETIRE``."""
    return sh(RETIRE, "retire-stack", releases_dir(state_dir, stack), project_dir, *down)


STALE_MINUTES = 2

# Lists (mode list) or removes (mode remove, holding the host's deploy lock) the leftovers:
#   env     env files of a stack not placed here (any release, and the project directory), when
#           the stack is not deployed here any more (no `current`: a deployed one is for --prune)
#   env     env files of a release directory with no record (a stage that was cut off)
#   tmp     temp files older than STALE minutes: `*.tmp`, `*.tmp.<pid>` in releases/<stack>/
#           and its release directories; `.<name>.tmp`, `*.tmp.<pid>`, `*.homelab-new` at the top
#           of a project directory
# A placed stack's recorded releases are kept whole: a rollback may still need any of them.
# Prints `@@<leftover|removed|failed> <kind> <stack> <path>`, `@@deployed <stack>` for an
# unplaced stack still deployed, and `@@busy` + the lock's owner (exit 75) when a deploy holds it.
# Arguments: state, mode, owner JSON, stale minutes, placed stacks..., --, (stack, project dir)...
SCRUB = script(_RELEASE_ENV + f"""
state=$1; mode=$2; owner=$3; stale=$4; shift 4
placed=" "; while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do placed="$placed$1 "; shift; done; shift
if [ "$mode" = remove ]; then
  take_lock "$state" "$owner" >/dev/null || {{ echo @@busy; lock_owner "$state"; exit 75; }}
  trap 'rm -rf -- "$state/lock"' EXIT
fi
found() {{
  if [ "$mode" != remove ]; then printf '@@leftover %s %s %s\\n' "$1" "$2" "$3"
  elif rm -f -- "$3"; then printf '@@removed %s %s %s\\n' "$1" "$2" "$3"
  else printf '@@failed %s %s %s\\n' "$1" "$2" "$3"; fi
}}
project_of() {{ s=$1; shift; while [ "$#" -ge 2 ]; do [ "$1" = "$s" ] && {{ echo "$2"; return; }}; shift 2; done
  echo "$state/{STACKS}/$s"; }}
stale() {{ find "$@" -type f -mmin +"$stale" 2>/dev/null; }}
seen=" "
for d in "$state"/{RELEASES}/*/ "$state"/{STACKS}/*/; do
  d=${{d%/}}; [ -d "$d" ] || continue; stack=${{d##*/}}
  case "$seen" in *" $stack "*) continue ;; esac; seen="$seen$stack "
  rel="$state/{RELEASES}/$stack"; proj=$(project_of "$stack" "$@")
  case "$placed" in *" $stack "*) on=1 ;; *) on=0 ;; esac
  if [ "$on" = 0 ] && [ -f "$rel/{CURRENT}" ]; then echo "@@deployed $stack"; on=1; fi
  for r in "$rel"/*/; do
    r=${{r%/}}; [ -d "$r" ] || continue
    [ "$on" = 1 ] && [ -f "$r/{RELEASE_RECORD}" ] && continue
    release_env "$r" | while IFS= read -r f; do
      found env "$stack" "$f"
      [ "$on" = 0 ] && [ -f "$proj/${{f##*/}}" ] && found env "$stack" "$proj/${{f##*/}}"
    done
  done
  if [ "$on" = 0 ]; then for f in "$proj"/.env "$proj"/.env.*; do [ -f "$f" ] && found env "$stack" "$f"; done; fi
  [ -d "$rel" ] && stale "$rel" -mindepth 1 -maxdepth 2 \\( -name '*.tmp' -o -name '*.tmp.[0-9]*' \\) |
    while IFS= read -r f; do found tmp "$stack" "$f"; done
  [ -d "$proj" ] && stale "$proj" -maxdepth 1 \\( -name '.*.tmp' -o -name '*.tmp.[0-9]*' -o -name '*.homelab-new' \\) |
    while IFS= read -r f; do found tmp "$stack" "$f"; done
done
exit 0
""", "take_lock", "lock_owner")


def scrub(state_dir: str, placed: Iterable[str], project_dirs: dict[str, str], *, remove: bool = False,
          owner_json: str = "", stale_minutes: int = STALE_MINUTES) -> list[str]:
    """List (or, with ``remove``, delete under the host's deploy lock) the leftovers holding
    secrets; ``project_dirs``: stack -> project directory, where it is not ``stacks/<stack>``."""
    pairs = [part for stack, path in sorted(project_dirs.items()) for part in (stack, path)]
    return sh(SCRUB, "scrub-leftovers", state_dir, "remove" if remove else "list", owner_json,
              str(stale_minutes), *sorted(placed), "--", *pairs)


@dataclass(frozen=True)
class Leftover:
    kind: str  # env | tmp
    stack: str
    path: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "stack": self.stack, "path": self.path}


@dataclass(frozen=True)
class ScrubAnswer:
    found: tuple[Leftover, ...]  # listed (dry run) or removed
    failed: tuple[Leftover, ...]
    deployed: tuple[str, ...]  # unplaced stacks still deployed: `homelab deploy --prune` retires them
    busy: bool  # the host's deploy lock was held: nothing was removed


def parse_scrub(text: str) -> ScrubAnswer:
    found: dict[Leftover, None] = {}
    failed: dict[Leftover, None] = {}
    deployed: list[str] = []
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag in ("@@leftover", "@@removed", "@@failed"):
            kind, _, rest = rest.partition(" ")
            stack, _, path = rest.partition(" ")
            if kind and stack and path:
                (failed if tag == "@@failed" else found)[Leftover(kind, stack, path)] = None
        elif tag == "@@deployed" and rest.strip():
            deployed.append(rest.strip())
    busy = any(line == "@@busy" for line in text.splitlines())
    return ScrubAnswer(tuple(found), tuple(failed), tuple(dict.fromkeys(deployed)), busy)
