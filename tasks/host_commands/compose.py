"""``docker compose`` and image commands for one stack. Every builder returns an argv list;
the transport quotes it with ``shlex.join``. The project is named after the stack."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.host_commands.layout import release_compose_file, stack_dir
from tasks.host_commands.shell import sh


def compose(state_dir: str, stack: str, release: str, *args: str) -> list[str]:
    """``docker compose`` for one release of a stack; the project is named after the stack."""
    return ["docker", "compose", "-p", stack, "--project-directory", stack_dir(state_dir, stack),
            "-f", release_compose_file(state_dir, stack, release), *args]


def compose_up(state_dir: str, stack: str, release: str) -> list[str]:
    """Converge the project; images were checked before, so never pull here."""
    return compose(state_dir, stack, release, "up", "-d", "--remove-orphans", "--pull", "never")


def compose_logs(stack: str, tail: int = 50) -> list[str]:
    return ["docker", "compose", "-p", stack, "logs", "--no-color", "--timestamps", "--tail", str(tail)]


def compose_down(stack: str) -> list[str]:
    return ["docker", "compose", "-p", stack, "down", "--remove-orphans"]


def image_ids(images: Sequence[str]) -> list[str]:
    """Prints one image id per line, in order; exits 1 if any image is missing."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *images]


PULL = 'for image in "$@"; do docker pull -q "$image" >/dev/null || exit; done'


def pull_images(images: Sequence[str]) -> list[str]:
    """Pull by reference, not through compose: the project's env files are installed only
    at ``compose up``, and compose refuses a project whose env file is missing."""
    return sh(PULL, "pull-images", *images)
