"""A stack's file set: everything under its folder that ships with a release.

The set is read once, locally: each file's path (relative to the stack folder), its mode
(normalized to 0644 or 0755, what git keeps) and its bytes. Its manifest, path -> mode and
digest, goes into the config hash and the release record, so a change to any one file is
a change of exactly that stack, and the host learns which files moved.

Rules: ``.git`` and ``.homelabignore`` never ship; ``.homelabignore`` lines and the stack's
``exclude:`` globs drop files; ``files:`` globs, if given, keep only what they match. A
symlink is shipped as the file it points to, and only if that file is inside the config
repo. Globs are fnmatch-style on the path relative to the stack folder; a glob without
``/`` also matches a file name at any depth, and a match on a directory drops all under it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from model.errors import InventoryError

IGNORE_FILE = ".homelabignore"
MAX_DEPTH = 32  # symlinked directories inside the repo are followed; this stops a loop


@dataclass(frozen=True)
class StackFile:
    path: str  # POSIX, relative to the stack folder
    mode: int  # 0o644 or 0o755
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def entry(self) -> str:
        """The manifest value: ``644:<sha256>``."""
        return f"{self.mode:o}:{self.digest}"


@dataclass(frozen=True)
class StackFiles:
    files: tuple[StackFile, ...]  # sorted by path

    def manifest(self) -> dict[str, str]:
        return {f.path: f.entry for f in self.files}

    def get(self, path: str) -> StackFile | None:
        return next((f for f in self.files if f.path == path), None)

    def tar(self, only: Iterable[str] | None = None, extra: Mapping[str, tuple[bytes, int]] | None = None,
            prefix: str = "files/") -> bytes:
        """An uncompressed tar of the files (all, or the paths in ``only``) under ``prefix``,
        plus ``extra`` members (name -> (bytes, mode)) at the top. Owners and times are fixed,
        so equal content gives equal bytes."""
        wanted = None if only is None else set(only)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for item in self.files:
                if wanted is None or item.path in wanted:
                    _add(archive, prefix + item.path, item.data, item.mode)
            for name, (data, mode) in sorted((extra or {}).items()):
                _add(archive, name, data, mode)
        return buffer.getvalue()


def changed_paths(old: Mapping[str, str], new: Mapping[str, str]) -> set[str]:
    """Paths whose content or mode differs between two manifests, or that only one has."""
    return {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uname = info.gname = "root"
    archive.addfile(info, io.BytesIO(data))


def check_relative(value: str, what: str) -> str | None:
    """Why ``value`` is not a plain relative path inside a folder, or None."""
    if not value or value.startswith("/") or "\\" in value:
        return f"{what} {value!r} must be a relative path inside the stack folder"
    if ".." in PurePosixPath(value).parts:
        return f"{what} {value!r} escapes the stack folder (`..` is not allowed)"
    return None


def read_ignore_file(folder: Path, shown: str) -> list[str]:
    path = folder / IGNORE_FILE
    if not path.is_file():
        return []
    patterns, problems = [], []
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            problems.append(f"{shown}/{IGNORE_FILE}:{number}: negated patterns (`!`) are not supported")
        elif reason := check_relative(line.lstrip("/").rstrip("/") or ".", "pattern"):
            problems.append(f"{shown}/{IGNORE_FILE}:{number}: {reason}")
        else:
            patterns.append(line)
    if problems:
        raise InventoryError(problems)
    return patterns


def matches(path: str, pattern: str, is_dir: bool = False) -> bool:
    """gitignore-like: ``name`` matches at any depth, ``a/b`` or ``/a`` from the stack folder,
    a trailing ``/`` only directories."""
    if pattern.endswith("/"):
        if not is_dir:
            return False
        pattern = pattern.rstrip("/")
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(PurePosixPath(path).name, pattern) or fnmatch.fnmatchcase(path, pattern)


def collect_stack_files(repo: Path, folder: Path, shown: str, *, include: list[str] | None = None,
                        exclude: list[str] | None = None) -> StackFiles:
    """Read the stack folder ``folder`` (inside the config repo ``repo``); ``shown`` names the
    folder in messages. Raises InventoryError naming every refused path."""
    repo_real = repo.resolve()
    if not folder.resolve().is_relative_to(repo_real):
        raise InventoryError([f"{shown}: the stack folder is outside the config repo"])
    if not folder.is_dir():
        raise InventoryError([f"{shown}: stack folder not found"])
    drop = [*read_ignore_file(folder, shown), *(exclude or [])]
    found: list[StackFile] = []
    problems: list[str] = []

    def walk(directory: Path, relative: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            problems.append(f"{shown}/{relative}: directories nested too deep (a symlink loop?)")
            return
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.name == ".git" or (entry.name == IGNORE_FILE and not relative):
                continue
            if "\n" in entry.name or "\r" in entry.name:
                problems.append(f"{shown}/{path!r}: file names with line breaks are not supported")
                continue
            target = Path(entry.path)
            if entry.is_symlink():
                real = target.resolve()
                if not real.is_relative_to(repo_real):
                    problems.append(f"{shown}/{path}: a symlink to {os.readlink(entry.path)}, outside the config "
                                    "repo (copy the file into the repo, or link to a file inside it)")
                    continue
                if not real.exists():
                    problems.append(f"{shown}/{path}: a dangling symlink (to {os.readlink(entry.path)})")
                    continue
            is_dir = target.is_dir()
            if any(matches(path, p, is_dir) for p in drop):
                continue
            if is_dir:
                walk(target, path, depth + 1)
            elif target.is_file():
                if include and not any(matches(path, p) for p in include):
                    continue
                mode = 0o755 if target.stat().st_mode & stat.S_IXUSR else 0o644
                found.append(StackFile(path, mode, target.read_bytes()))
            else:
                problems.append(f"{shown}/{path}: not a regular file or folder")

    walk(folder, "", 0)
    if problems:
        raise InventoryError(problems)
    return StackFiles(tuple(sorted(found, key=lambda f: f.path)))
