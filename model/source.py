"""Where the desired state comes from: the working tree, or a commit of its git repository.

``--ref REF`` deploys the inventory and stacks exactly as they were at that commit; the
commit id is recorded in every release made from it.
"""

from __future__ import annotations

import contextlib
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model.errors import SourceError


@dataclass(frozen=True)
class SourceTree:
    inventory: Path  # readable inventory file (in the worktree or an extracted commit)
    display: str  # how messages name the inventory, e.g. "homelab.yaml@v2"
    commit: str | None  # full commit id; None outside git; suffixed "+dirty" for a modified worktree


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=False)


def _repo_root(directory: Path) -> Path | None:
    done = _git(directory, "rev-parse", "--show-toplevel")
    return Path(done.stdout.decode().strip()) if done.returncode == 0 else None


@contextlib.contextmanager
def open_source(inventory: Path, ref: str | None = None) -> Iterator[SourceTree]:
    inventory = inventory.expanduser().absolute()
    if not inventory.parent.is_dir():
        raise SourceError(f"{inventory}: directory does not exist")
    root = _repo_root(inventory.parent)
    if ref is None:
        yield SourceTree(inventory, str(inventory), _worktree_commit(root, inventory.parent))
        return
    if root is None:
        raise SourceError(f"--ref {ref}: {inventory.parent} is not inside a git repository")
    resolved = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise SourceError(f"--ref {ref}: no such commit, tag or branch in {root}")
    commit = resolved.stdout.decode().strip()
    relative = inventory.relative_to(root.resolve()) if inventory.is_relative_to(root.resolve()) \
        else inventory.resolve().relative_to(root.resolve())
    with tempfile.TemporaryDirectory(prefix="homelab-ref-") as tmp:
        _extract(root, commit, relative.parent, Path(tmp), ref)
        yield SourceTree(Path(tmp) / relative, f"{relative}@{ref}", commit)


def _extract(root: Path, commit: str, subdir: Path, target: Path, ref: str | None = None) -> None:
    """Write the files under ``subdir`` at ``commit`` into ``target`` (same relative layout).
    A symlink that leaves ``subdir`` (absolute, or through ``..``) is refused, as in a worktree."""
    spec = [f"{commit}:{subdir}"] if str(subdir) != "." else [commit]
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", *spec],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SourceError(f"{subdir} does not exist at {commit[:12]}: {archive.stderr.decode().strip()}")
    destination = target / subdir
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as buffer:
        buffer.write(archive.stdout)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            try:
                tar.extractall(destination, filter="data")
            except tarfile.FilterError as exc:
                raise SourceError(_refused_member(exc, ref or commit[:12])) from exc
            except tarfile.TarError as exc:
                raise SourceError(f"{subdir}@{ref or commit[:12]}: cannot read the files from git: {exc}") from exc


def _refused_member(exc: tarfile.FilterError, at: str) -> str:
    """Why one file of ``git archive`` was not written, named as users name it (``path@ref``)."""
    member = exc.tarinfo
    where = f"{member.name}@{at}"
    if isinstance(exc, (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError)):
        return (f"{where}: a symlink to {member.linkname}, outside the config repo (copy the file into the "
                "repo, or link to a file inside it)")
    return f"{where}: refused when reading the commit ({exc}); remove it from the config repo"


def _worktree_commit(root: Path | None, directory: Path) -> str | None:
    if root is None:
        return None
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if head.returncode != 0:
        return None
    commit = head.stdout.decode().strip()
    dirty = _git(root, "status", "--porcelain", "--", str(directory)).stdout.strip()
    return f"{commit}+dirty" if dirty else commit


def default_branch(inventory: Path) -> str | None:
    """The config repo's default branch: origin's HEAD if the clone knows it, else the branch
    checked out; None outside git or on a detached HEAD."""
    root = _repo_root(inventory.expanduser().absolute().parent)
    if root is None:
        return None
    for args in (("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"),
                 ("symbolic-ref", "--quiet", "--short", "HEAD")):
        done = _git(root, *args)
        if done.returncode == 0 and (name := done.stdout.decode().strip()):
            return name.removeprefix("origin/") if args[-1].startswith("refs/remotes") else name
    return None
