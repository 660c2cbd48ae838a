"""Commands that move a stack between releases on the host: stage, start, restore, settle, record.

Each is one round trip; where a step must be atomic or ordered (the pending marker before
``compose up``, ``current`` only after the record), it is one ``sh -c`` script composed from
the pieces in ``shell.py``. Exit statuses of our own: 96 an env file could not be installed,
97 the upload failed, 98 a recorded image is gone from the host.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.host_commands.compose import compose_up
from tasks.host_commands.layout import (
    CURRENT,
    PENDING,
    RELEASE_ID_PATTERN,
    RELEASE_RECORD,
    release_dir,
    releases_dir,
    stack_dir,
)
from tasks.host_commands.shell import script, sh

UPLOAD = (
    'umask 077; mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" '
    '&& mv -f -- "$1.tmp.$$" "$1"'
)


def upload_file(path: str, mode: int = 0o644) -> list[str]:
    """Atomic write of stdin to ``path``: a temporary file in the same directory, then rename."""
    return sh(UPLOAD, "upload", path, f"{mode:o}")


# Exit status 97 means the upload failed; otherwise it is `docker image inspect`'s.
STAGE = UPLOAD + ' || exit 97; shift 2; exec docker image inspect --format "{{.Id}}" "$@"'


def stage_release(compose_file: str, images: Sequence[str]) -> list[str]:
    """One round trip: write stdin atomically to ``compose_file`` (0644), then print the id of
    each image, in order (exit 1 if any is missing)."""
    return sh(STAGE, "stage-release", compose_file, "644", *images)


# Copies a release's env files (rendered secrets, mode 0600) into the compose project
# directory, atomically each. Arguments: release dir, stack dir, count, names...
INSTALL_ENV_FILES = (
    'd=$1; s=$2; n=$3; shift 3; mkdir -p "$s" || exit 96; '
    'while [ "$n" -gt 0 ]; do cp -p "$d/$1" "$s/.$1.tmp" && mv -f "$s/.$1.tmp" "$s/$1" || exit 96; '
    'shift; n=$((n - 1)); done; '
)


def _env_args(state_dir: str, stack: str, release: str, env_files: Sequence[str]) -> list[str]:
    return [release_dir(state_dir, stack, release), stack_dir(state_dir, stack), str(len(env_files)), *env_files]


# Marks the stack "deploy in progress" before anything runs, so a run killed half-way is
# found by the next survey; the marker is cleared when the release is recorded or undone.
START = script(f'write_atomic "$1/{PENDING}" "$2" || exit; shift 2; ' + INSTALL_ENV_FILES + 'exec "$@"',
               "write_atomic")


def start_release(state_dir: str, stack: str, release: str, marker: str, env_files: Sequence[str] = ()) -> list[str]:
    """Write the pending marker (JSON, no secrets), put the release's env files in place, then
    ``compose up`` the release. Exit 96: an env file could not be installed."""
    return sh(START, "start-release", releases_dir(state_dir, stack), marker,
              *_env_args(state_dir, stack, release, env_files), *compose_up(state_dir, stack, release))


# Puts back the exact images of a release (tags may have moved since) and its env files,
# then brings it up.
RESTORE = ('while [ "$1" != "--" ]; do docker tag "$2" "$1" || exit 98; shift 2; done; shift; '
           + INSTALL_ENV_FILES + 'exec "$@"')


def restore_release(state_dir: str, stack: str, release: str, images: dict[str, str],
                    env_files: Sequence[str] = ()) -> list[str]:
    """Re-tag each image reference to the recorded image id, reinstall the release's env
    files, then ``compose up`` the release. Exit 98: a recorded image is gone from the host."""
    pairs = [part for ref, image_id in sorted(images.items()) for part in (ref, image_id)]
    return sh(RESTORE, "restore-release", *pairs, "--", *_env_args(state_dir, stack, release, env_files),
              *compose_up(state_dir, stack, release))


SETTLE_ROLLBACK = script(f"""
dir=$1; restored=$2; undone=$3
if [ -n "$restored" ]; then
  write_atomic "$dir/{CURRENT}" "$restored"
else
  rm -f "$dir/{CURRENT}"
fi
[ -f "$dir/$undone/{RELEASE_RECORD}" ] &&
  sed -i 's/"status": "active"/"status": "rolled-back"/' "$dir/$undone/{RELEASE_RECORD}"
rm -f "$dir/{PENDING}"
""", "write_atomic")


def settle_rollback(state_dir: str, stack: str, restored: str | None, undone: str) -> list[str]:
    """After an undo: ``current`` names the restored release (or is removed when the stack had
    none), the undone release is marked rolled-back, and the pending marker is cleared."""
    return sh(SETTLE_ROLLBACK, "settle-rollback", releases_dir(state_dir, stack), restored or "", undone)


COMMIT_RELEASE = script(f"""
set -e
dir=$1; id=$2; keep=$3; activate=$4; protect=$5
mkdir -p "$dir/$id"
cat > "$dir/$id/{RELEASE_RECORD}.tmp"
mv -f "$dir/$id/{RELEASE_RECORD}.tmp" "$dir/$id/{RELEASE_RECORD}"
if [ "$activate" = 1 ]; then
  write_atomic "$dir/{CURRENT}" "$id"
fi
rm -f "$dir/{PENDING}"
current=$(cat "$dir/{CURRENT}" 2>/dev/null || true)
# prune: keep the newest $keep releases, never the current one, nor the one a rollback may need
ls -1 "$dir" | grep -E '{RELEASE_ID_PATTERN}' | sort -r | tail -n +$((keep + 1)) |
while read -r old; do [ "$old" = "$current" ] || [ "$old" = "$protect" ] || rm -rf -- "${{dir:?}}/$old"; done
""", "write_atomic")


def commit_release(state_dir: str, stack: str, release: str, keep: int, activate: bool,
                   protect: str | None = None) -> list[str]:
    """Write the record from stdin, move ``current`` to it if ``activate``, clear the pending
    marker, and prune old releases except ``current`` and ``protect`` (the previous release,
    which a rollback of this run may still need)."""
    return sh(COMMIT_RELEASE, "commit-release", releases_dir(state_dir, stack), release,
              str(keep), "1" if activate else "0", protect or "")
