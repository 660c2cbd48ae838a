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


def compose_pull(state_dir: str, stack: str, release: str, services: Sequence[str] = ()) -> list[str]:
    return compose(state_dir, stack, release, "pull", "--quiet", *services)


def compose_logs(stack: str, tail: int = 50) -> list[str]:
    return ["docker", "compose", "-p", stack, "logs", "--no-color", "--timestamps", "--tail", str(tail)]


def compose_down(stack: str) -> list[str]:
    return ["docker", "compose", "-p", stack, "down", "--remove-orphans"]


def image_ids(images: Sequence[str]) -> list[str]:
    """Prints one image id per line, in order; exits 1 if any image is missing."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *images]


# A container may vanish between ps and inspect; inspect then prints the others and exits 1.
INSPECT_PROJECT = (
    'ids=$(docker ps -aq --filter "label=com.docker.compose.project=$1") || exit; '
    'out=$([ -z "$ids" ] || docker inspect $ids 2>/dev/null); '
    '[ -n "$out" ] && printf "%s\\n" "$out" || echo "[]"'
)


def inspect_project(stack: str) -> list[str]:
    """``docker inspect`` JSON of every container of the project ("[]" if none)."""
    return ["sh", "-c", INSPECT_PROJECT, "inspect-project", stack]


UPLOAD = (
    'umask 077; mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" '
    '&& mv -f -- "$1.tmp.$$" "$1"'
)


def upload_file(path: str, mode: int = 0o644) -> list[str]:
    """Atomic write of stdin to ``path``: a temporary file in the same directory, then rename."""
    return ["sh", "-c", UPLOAD, "upload", path, f"{mode:o}"]
