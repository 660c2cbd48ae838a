"""Commands that move a stack between releases on the host: stage, start, restore, settle, record.

Each is one round trip; where a step must be atomic or ordered (the pending marker before
``compose up``, ``current`` only after the record), it is one ``sh -c`` script composed from
the pieces in ``shell.py``. Exit statuses of our own: 95 a file could not be installed in the
project directory, 96 an env file could not be, 97 the upload failed, 98 a recorded image is
gone from the host.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.host_commands.compose import ComposeProject, compose_up
from tasks.host_commands.layout import CURRENT, PENDING, RELEASE_ID_PATTERN, RELEASE_RECORD, release_dir, releases_dir
from tasks.host_commands.shell import script, sh

# The temp file goes when the script ends in any way but KILL (`secrets scrub` finds those).
# With a size ($3), a stdin cut short (a dropped connection ends it like EOF) is never renamed
# into place: exit 96.
UPLOAD = (
    'umask 077; t="$1.tmp.$$"; trap \'rm -f -- "$t"\' EXIT; trap "exit 129" HUP; trap "exit 130" INT; '
    'trap "exit 141" PIPE; trap "exit 143" TERM; '
    'mkdir -p -- "$(dirname -- "$1")" && cat > "$t" && '
    '{ [ -z "${3-}" ] || { n=$(wc -c < "$t") && [ "$n" -eq "$3" ]; } || '
    '{ echo "upload of $1 cut off: $n of $3 bytes arrived" >&2; exit 96; }; } && '
    'chmod "$2" "$t" && mv -f -- "$t" "$1"'
)


def upload_file(path: str, mode: int = 0o644, size: int | None = None) -> list[str]:
    """Atomic write of stdin to ``path``: a temporary file in the same directory, then rename,
    only if ``size`` bytes arrived (when given)."""
    return sh(UPLOAD, "upload", path, f"{mode:o}", *([str(size)] if size is not None else []))


# Assembles a release directory from a tar on stdin: the files of the base release (the
# previous one) are copied, the tar brings the changed files (under files/) and the rendered
# env files (at the top, mode 0600), and paths the new release dropped are removed. Then it
# prints the id of each image, in order (exit 1 if any is missing). 97: the upload failed.
# Arguments: release dir, base release dir or "", dropped paths..., --, images...
STAGE = """umask 022; r=$1; base=$2; shift 2
rm -rf -- "$r/files" && mkdir -p -- "$r" || exit 97
if [ -n "$base" ]; then cp -a -- "$base/files" "$r/files" || exit 97; else mkdir -p -- "$r/files" || exit 97; fi
tar -x -o -f - -C "$r" || exit 97
while [ "$1" != "--" ]; do rm -f -- "$r/files/$1" || exit 97; shift; done; shift
exec docker image inspect --format "{{.Id}}" "$@"
"""


def stage_release(release: str, base: str | None, dropped: Sequence[str], images: Sequence[str]) -> list[str]:
    """One round trip: unpack the tar on stdin into ``release`` over a copy of ``base``'s
    files, then print the id of each image, in order (exit 1 if any is missing)."""
    return sh(STAGE, "stage-release", release, base or "", *dropped, "--", *images)


# Installs a release into the compose project directory: each file that differs is replaced
# atomically (a file that did not change keeps its inode, so running containers that mount
# it are not disturbed; an empty directory that docker made for a missing bind source gives
# way), files the new release dropped are removed, and the release's env files (rendered
# secrets) are copied in. Nothing else in the directory is touched: data lives there too.
# Arguments: release dir, project dir, dropped paths..., --, env file names..., --
# Exit 95: a file could not be installed; 96: an env file could not be.
INSTALL = """r=$1; s=$2; shift 2; mkdir -p -- "$s" || exit 95
if [ -d "$r/files" ]; then
  ( cd "$r/files" && find . -type f ) | while IFS= read -r p; do
    p=${p#./}; t=$s/$p
    cmp -s -- "$r/files/$p" "$t" && continue
    if [ -d "$t" ]; then rmdir -- "$t" || { echo "$t is a folder, the release has a file there" >&2; exit 95; }; fi
    mkdir -p -- "$(dirname -- "$t")" && cp -p -- "$r/files/$p" "$t.homelab-new" &&
      mv -f -- "$t.homelab-new" "$t" || exit 95
  done || exit 95
fi
while [ "$1" != "--" ]; do rm -f -- "$s/$1"; shift; done; shift
while [ "$1" != "--" ]; do cp -p -- "$r/$1" "$s/.$1.tmp" && mv -f -- "$s/.$1.tmp" "$s/$1" || exit 96; shift; done; shift
"""


def _install_args(release: str, project: ComposeProject, dropped: Sequence[str], env_files: Sequence[str]) -> list[str]:
    return [release, project.directory, *dropped, "--", *env_files, "--"]


# Marks the stack "deploy in progress" before anything runs, so a run killed half-way is
# found by the next survey; the marker is cleared when the release is recorded or undone.
START = script(f'write_atomic "$1/{PENDING}" "$2" || exit; shift 2; ' + INSTALL + 'exec "$@"', "write_atomic")


def start_release(state_dir: str, stack: str, release: str, marker: str, project: ComposeProject,
                  dropped: Sequence[str] = (), env_files: Sequence[str] = ()) -> list[str]:
    """Write the pending marker (JSON, no secrets), install the release into the project
    directory, then ``compose up`` the release."""
    return sh(START, "start-release", releases_dir(state_dir, stack), marker,
              *_install_args(release_dir(state_dir, stack, release), project, dropped, env_files),
              *compose_up(project))


# Puts back the exact images of a release (tags may have moved since), its files and env
# files, then brings it up.
RESTORE = 'while [ "$1" != "--" ]; do docker tag "$2" "$1" || exit 98; shift 2; done; shift; ' + INSTALL + 'exec "$@"'


def restore_release(state_dir: str, stack: str, release: str, images: dict[str, str], project: ComposeProject,
                    dropped: Sequence[str] = (), env_files: Sequence[str] = ()) -> list[str]:
    """Re-tag each image reference to the recorded image id, reinstall the release's files
    and env files, then ``compose up`` it. Exit 98: a recorded image is gone from the host."""
    pairs = [part for ref, image_id in sorted(images.items()) for part in (ref, image_id)]
    return sh(RESTORE, "restore-release", *pairs, "--",
              *_install_args(release_dir(state_dir, stack, release), project, dropped, env_files),
              *compose_up(project))


SETTLE_ROLLBACK = script(f"""
dir=$1; restored=$2; undone=$3
if [ -n "$restored" ]; then
  write_atomic "$dir/{CURRENT}" "$restored"
else
  rm -f -- "$dir/{CURRENT}"
fi
[ -f "$dir/$undone/{RELEASE_RECORD}" ] &&
  sed -i 's/"status": "active"/"status": "rolled-back"/' -- "$dir/$undone/{RELEASE_RECORD}"
rm -f -- "$dir/{PENDING}"
""", "write_atomic")


def settle_rollback(state_dir: str, stack: str, restored: str | None, undone: str) -> list[str]:
    """After an undo: ``current`` names the restored release (or is removed when the stack had
    none), the undone release is marked rolled-back, and the pending marker is cleared."""
    return sh(SETTLE_ROLLBACK, "settle-rollback", releases_dir(state_dir, stack), restored or "", undone)


COMMIT_RELEASE = script(f"""
set -e
dir=$1; id=$2; keep=$3; activate=$4; protect=$5
mkdir -p -- "$dir/$id"
cat > "$dir/$id/{RELEASE_RECORD}.tmp"
mv -f -- "$dir/$id/{RELEASE_RECORD}.tmp" "$dir/$id/{RELEASE_RECORD}"
if [ "$activate" = 1 ]; then
  write_atomic "$dir/{CURRENT}" "$id"
fi
rm -f -- "$dir/{PENDING}"
current=$(cat -- "$dir/{CURRENT}" 2>/dev/null || true)
# prune: keep the newest $keep releases, never the current one, nor the one a rollback may need
ls -1 -- "$dir" | grep -E '{RELEASE_ID_PATTERN}' | sort -r | tail -n +$((keep + 1)) |
while read -r old; do [ "$old" = "$current" ] || [ "$old" = "$protect" ] || rm -rf -- "${{dir:?}}/$old"; done
""", "write_atomic")


def commit_release(state_dir: str, stack: str, release: str, keep: int, activate: bool,
                   protect: str | None = None) -> list[str]:
    """Write the record from stdin, move ``current`` to it if ``activate``, clear the pending
    marker, and prune old releases except ``current`` and ``protect`` (the previous release,
    which a rollback of this run may still need)."""
    return sh(COMMIT_RELEASE, "commit-release", releases_dir(state_dir, stack), release,
              str(keep), "1" if activate else "0", protect or "")
