"""SHA-256 of files on a host, so a drift check compares hashes and no value ever travels back."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tasks.host_commands.shell import sh

_HEX64 = re.compile(r"[0-9a-f]{64}")

# Prints "<sha256>  <path>" for each regular file (symlinks followed) and "MISSING <path>" for each
# other path. The contents never leave the host, only their hashes. Exits non-zero if a file exists
# but cannot be read.
HASH_FILES = r"""
for f in "$@"; do
  if [ -f "$f" ]; then
    h=$(sha256sum < "$f") || exit
    printf '%s  %s\n' "${h%% *}" "$f"
  else
    printf 'MISSING %s\n' "$f"
  fi
done
"""


def hash_remote_files(paths: Sequence[str]) -> list[str]:
    """sha256 of each file on the host, for comparison with ``RenderedEnvFile.sha256``."""
    for path in paths:
        if not path or "\n" in path:
            raise ValueError(f"hash_remote_files: path {path!r} is empty or contains a newline")
    return sh(HASH_FILES, "hash-files", *paths)


def parse_remote_hashes(text: str) -> dict[str, str | None]:
    """``hash_remote_files`` output -> path -> hex sha256, or None when the file is missing.

    Lines that are not in either form are skipped, so their paths are absent from the result. The
    caller treats an absent path as unknown and uploads the file.
    """
    found: dict[str, str | None] = {}
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line.startswith("MISSING ") and len(line) > len("MISSING "):
            found[line[len("MISSING "):]] = None
            continue
        digest, sep, path = line.partition("  ")
        if sep and path and _HEX64.fullmatch(digest):
            found[path] = digest
    return found
