"""The errors a user can see. Each says what failed, where, and what to do next.

Each class carries its ``exit_code``; the CLI exits with it and prints the one-line message.
"""

from __future__ import annotations

from model.masking import MASKER


class HomelabError(Exception):
    """Base class: an error the user can act on. Its text is masked (no secret values)."""

    exit_code = 1

    def __str__(self) -> str:
        return MASKER.mask(super().__str__())

    def __repr__(self) -> str:
        return MASKER.mask(super().__repr__())


class InventoryError(HomelabError):
    """The desired state (inventory or a compose file) is invalid. Nothing was contacted."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:10]
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__("invalid desired state:\n  " + "\n  ".join(shown) + more)


class UsageError(HomelabError):
    """A command-line argument is invalid."""

    exit_code = 2


class SourceError(InventoryError):
    """The inventory or --ref could not be read from git or disk."""

    def __init__(self, message: str):
        super().__init__([message])


class AddressNotAllowed(HomelabError):
    """A host address lies outside HOMELAB_ALLOWED_NETWORKS; no packet was sent."""

    exit_code = 3


class HostUnreachable(HomelabError):
    """The SSH connection to a host failed (refused, timed out, dropped)."""

    exit_code = 3

    def __init__(self, host: str, reason: str):
        self.host = host
        self.reason = reason
        super().__init__(f"{host}: unreachable: {reason}")


class HostKeyRejected(HostUnreachable):
    """The host's SSH key is unknown or differs from the pinned one."""


class RemoteCommandError(HomelabError):
    """A remote command exited non-zero. ``command`` is already masked."""

    def __init__(self, host: str, command: str, exit_status: int | None, stderr: str):
        self.host = host
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-5:]
        detail = ("\n    " + "\n    ".join(tail)) if tail else ""
        super().__init__(f"{host}: `{command}` exited with {exit_status}{detail}")


class RemoteTimeout(HomelabError):
    """A remote command ran past its timeout."""

    def __init__(self, host: str, command: str, timeout: float):
        self.host = host
        super().__init__(f"{host}: `{command}` did not finish within {timeout:g}s")


class PreflightFailed(HomelabError):
    """At least one targeted host failed its pre-flight checks; nothing was changed."""

    exit_code = 3

    def __init__(self, failures: dict[str, list[str]]):
        self.failures = failures
        lines = [f"{host}: {reason}" for host, reasons in failures.items() for reason in reasons]
        super().__init__(
            "pre-flight failed, nothing was changed:\n  " + "\n  ".join(lines)
        )


class DeployFailed(HomelabError):
    """The deploy ran but at least one stack did not become healthy. Carries the report."""

    def __init__(self, message: str, report: object):
        self.report = report
        super().__init__(message)


class ServerError(HomelabError):
    """The local Prefect server could not be started or reached."""

    exit_code = 4
