"""Pure builders for the commands a deploy runs on a host, and the host-side file layout.

Every builder returns an argv list; the transport quotes it with ``shlex.join``. Paths are
relative to the deploy user's home directory (where an SSH command starts) unless the
inventory's ``state_dir`` is absolute.

Layout under ``state_dir`` (default ``.homelab``)::

    stacks/<stack>/                      compose project directory (stable across releases)
    releases/<stack>/<release>/compose.yaml
    releases/<stack>/<release>/release.json
    releases/<stack>/current             id of the active release
"""

from __future__ import annotations

from collections.abc import Sequence


def stack_dir(state_dir: str, stack: str) -> str:
    return f"{state_dir}/stacks/{stack}"


def releases_dir(state_dir: str, stack: str) -> str:
    return f"{state_dir}/releases/{stack}"


def release_dir(state_dir: str, stack: str, release: str) -> str:
    return f"{releases_dir(state_dir, stack)}/{release}"


def release_compose_file(state_dir: str, stack: str, release: str) -> str:
    return f"{release_dir(state_dir, stack, release)}/compose.yaml"


def compose(state_dir: str, stack: str, release: str, *args: str) -> list[str]:
    """``docker compose`` for one release of a stack; the project is named after the stack."""
    return ["docker", "compose", "-p", stack, "--project-directory", stack_dir(state_dir, stack),
            "-f", release_compose_file(state_dir, stack, release), *args]


def compose_up(state_dir: str, stack: str, release: str) -> list[str]:
    """Converge the project; images were checked before, so never pull here."""
    return compose(state_dir, stack, release, "up", "-d", "--remove-orphans", "--pull", "never")


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
START = ('printf "%s\\n" "$2" > "$1/pending.tmp" && mv -f "$1/pending.tmp" "$1/pending" || exit; shift 2; '
         + INSTALL_ENV_FILES + 'exec "$@"')


def start_release(state_dir: str, stack: str, release: str, marker: str, env_files: Sequence[str] = ()) -> list[str]:
    """Write the pending marker (JSON, no secrets), put the release's env files in place, then
    ``compose up`` the release. Exit 96: an env file could not be installed."""
    return ["sh", "-c", START, "start-release", releases_dir(state_dir, stack), marker,
            *_env_args(state_dir, stack, release, env_files), *compose_up(state_dir, stack, release)]


# Puts back the exact images of a release (tags may have moved since) and its env files,
# then brings it up.
RESTORE = ('while [ "$1" != "--" ]; do docker tag "$2" "$1" || exit 98; shift 2; done; shift; '
           + INSTALL_ENV_FILES + 'exec "$@"')


def restore_release(state_dir: str, stack: str, release: str, images: dict[str, str],
                    env_files: Sequence[str] = ()) -> list[str]:
    """Re-tag each image reference to the recorded image id, reinstall the release's env
    files, then ``compose up`` the release. Exit 98: a recorded image is gone from the host."""
    pairs = [part for ref, image_id in sorted(images.items()) for part in (ref, image_id)]
    return ["sh", "-c", RESTORE, "restore-release", *pairs, "--", *_env_args(state_dir, stack, release, env_files),
            *compose_up(state_dir, stack, release)]


SETTLE_ROLLBACK = r"""
dir=$1; restored=$2; undone=$3
if [ -n "$restored" ]; then
  printf '%s
' "$restored" > "$dir/current.tmp" && mv -f "$dir/current.tmp" "$dir/current"
else
  rm -f "$dir/current"
fi
[ -f "$dir/$undone/release.json" ] &&
  sed -i 's/"status": "active"/"status": "rolled-back"/' "$dir/$undone/release.json"
rm -f "$dir/pending"
"""


def settle_rollback(state_dir: str, stack: str, restored: str | None, undone: str) -> list[str]:
    """After an undo: ``current`` names the restored release (or is removed when the stack had
    none), the undone release is marked rolled-back, and the pending marker is cleared."""
    return ["sh", "-c", SETTLE_ROLLBACK, "settle-rollback", releases_dir(state_dir, stack), restored or "", undone]


PULL = 'for image in "$@"; do docker pull -q "$image" >/dev/null || exit; done'


def pull_images(images: Sequence[str]) -> list[str]:
    """Pull by reference, not through compose: the project's env files are installed only
    at ``compose up``, and compose refuses a project whose env file is missing."""
    return ["sh", "-c", PULL, "pull-images", *images]


def compose_logs(stack: str, tail: int = 50) -> list[str]:
    return ["docker", "compose", "-p", stack, "logs", "--no-color", "--timestamps", "--tail", str(tail)]


def compose_down(stack: str) -> list[str]:
    return ["docker", "compose", "-p", stack, "down", "--remove-orphans"]


def image_ids(images: Sequence[str]) -> list[str]:
    """Prints one image id per line, in order; exits 1 if any image is missing."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *images]


# Polls on the host (no SSH round trip per poll) until the project has at least $2 containers
# and none is still starting, or $3 seconds pass; then prints `docker inspect` JSON ("[]" if
# none). A container may vanish between ps and inspect: inspect then prints the rest, exits 1.
WAIT_SETTLED = r"""
project=$1; want=$2; deadline=$(( $(date +%s) + $3 ))
while :; do
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project") || exit
  if [ -n "$ids" ]; then
    states=$(docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' \
      $ids 2>/dev/null)
    if [ "$(printf '%s\n' "$states" | grep -c .)" -ge "$want" ] &&
       ! printf '%s\n' "$states" | grep -Eq '^(created|restarting|configured)/|/starting$'; then break; fi
  fi
  [ "$(date +%s)" -ge "$deadline" ] && break
  sleep 0.3
done
out=$([ -z "$ids" ] || docker inspect $ids 2>/dev/null)
[ -n "$out" ] && printf '%s\n' "$out" || echo "[]"
"""


def wait_settled(stack: str, services: int, timeout_s: float) -> list[str]:
    """Wait on the host until the stack's containers settle; prints their inspect JSON."""
    return ["sh", "-c", WAIT_SETTLED, "wait-settled", stack, str(services), str(max(0, int(timeout_s)))]


UPLOAD = (
    'umask 077; mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" '
    '&& mv -f -- "$1.tmp.$$" "$1"'
)


def upload_file(path: str, mode: int = 0o644) -> list[str]:
    """Atomic write of stdin to ``path``: a temporary file in the same directory, then rename."""
    return ["sh", "-c", UPLOAD, "upload", path, f"{mode:o}"]


# Exit status 97 means the upload failed; otherwise it is `docker image inspect`'s.
STAGE = UPLOAD + ' || exit 97; shift 2; exec docker image inspect --format "{{.Id}}" "$@"'


def stage_release(compose_file: str, images: Sequence[str]) -> list[str]:
    """One round trip: write stdin atomically to ``compose_file`` (0644), then print the id of
    each image, in order (exit 1 if any is missing)."""
    return ["sh", "-c", STAGE, "stage-release", compose_file, "644", *images]
