"""``docker compose`` and image commands for one stack. Every builder returns an argv list;
the transport quotes it with ``shlex.join``. The project is named after the stack.

A release's compose files are run from the stack's project directory (where its files are
installed), so relative bind mounts, ``env_file:``, ``include:`` and ``extends:`` resolve there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.compose_model import env_file_args
from model.releases import ReleaseRecord
from tasks.host_commands.layout import release_compose_file, release_dir, stack_dir
from tasks.host_commands.shell import sh

# Converge without pulling (images were checked before) and without building (never on a host).
UP = ("up", "-d", "--remove-orphans", "--pull", "never", "--no-build")


@dataclass(frozen=True, kw_only=True)
class ComposeProject:
    """How compose is invoked for one release of a stack on its host."""

    name: str
    directory: str
    files: tuple[str, ...]  # host paths, passed as -f in order
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()  # --env-file, in order

    def argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose", "-p", self.name, "--project-directory", self.directory]
        for path in self.env_files:
            argv += ["--env-file", path]
        for path in self.files:
            argv += ["-f", path]
        for profile in self.profiles:
            argv += ["--profile", profile]
        return [*argv, *args]


def project_dir(state_dir: str, stack: str, override: str | None = None) -> str:
    return override.rstrip("/") if override else stack_dir(state_dir, stack)


def release_project(state_dir: str, record: ReleaseRecord) -> ComposeProject:
    """The project of a recorded release. Releases recorded before stacks were folders have
    one compose file in the release directory."""
    directory = project_dir(state_dir, record.stack, record.project_dir)
    if not record.compose_files:
        return ComposeProject(name=record.stack, directory=directory,
                              files=(release_compose_file(state_dir, record.stack, record.id),))
    return ComposeProject(
        name=record.stack, directory=directory, files=tuple(f"{directory}/{f}" for f in record.compose_files),
        profiles=tuple(record.profiles),
        env_files=tuple(env_file_args(".env" in record.files, bool(record.env), directory,
                                      release_dir(state_dir, record.stack, record.id))))


def compose_up(project: ComposeProject) -> list[str]:
    return project.argv(*UP)


def compose_recreate(project: ComposeProject, services: Sequence[str]) -> list[str]:
    """Recreate ``services`` only: a changed bind-mounted file is seen by a new container."""
    return project.argv(*UP, "--no-deps", "--force-recreate", "--", *services)


def compose_logs(stack: str, tail: int = 50) -> list[str]:
    return ["docker", "compose", "-p", stack, "logs", "--no-color", "--timestamps", "--tail", str(tail)]


def compose_down(stack: str) -> list[str]:
    return ["docker", "compose", "-p", stack, "down", "--remove-orphans"]


def image_ids(images: Sequence[str]) -> list[str]:
    """Prints one image id per line, in order; exits 1 if any image is missing."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", "--", *images]


PULL = 'for image in "$@"; do docker pull -q -- "$image" >/dev/null || exit; done'


def pull_images(images: Sequence[str]) -> list[str]:
    """Pull by reference, not through compose: the project's env files are installed only
    at ``compose up``, and compose refuses a project whose env file is missing."""
    return sh(PULL, "pull-images", *images)
