"""What a ref or an inventory may not decide on its own: the trust file.

Whoever picks the ref picks the inventory, and the inventory names the host addresses, the SSH
settings and the Vault paths: where every secret the AppRole can read would go. So:

- a ref must be a commit reachable from a protected branch, or a tag signed by an allowed key;
- host addresses, SSH settings and the Vault paths each stack may read are checked against a
  trust file that lives outside the config repo (``HOMELAB_TRUST_FILE``, default
  ``$HOMELAB_HOME/trust.yaml``), written by ``homelab trust init`` and kept by the operator.

Runs started by ``homelab serve`` (UI, webhook, schedules) require the trust file; the CLI on
the operator's own working tree works without one.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.errors import InventoryError, SourceError
from model.inventory import Inventory
from model.yamlpos import YamlSyntaxError, load_with_lines

TRUST_FILE_ENV = "HOMELAB_TRUST_FILE"
REQUIRE_TRUST_ENV = "HOMELAB_REQUIRE_TRUST"  # set by `homelab serve` for the runs it executes


class TrustRefused(InventoryError):
    """A ref or an inventory asks for more than the trust file allows. Nothing was contacted."""

    def __init__(self, message: str | list[str]):
        super().__init__([message] if isinstance(message, str) else message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RefRules(_Strict):
    protected_branches: list[str] | None = Field(
        None, description="a ref must be reachable from one of these; default: the config repo's default branch")
    signed_tags: bool = Field(True, description="a tag whose signature git verifies is allowed too")
    allowed_signers: str | None = Field(
        None, description="SSH allowed-signers file for tag signatures (git's gpg.ssh.allowedSignersFile)")


class TrustedHost(_Strict):
    address: str
    port: int = 22
    user: str = "root"


class TrustedSsh(_Strict):
    known_hosts: str
    identity: str


class TrustFile(_Strict):
    version: Literal[1] = 1
    refs: RefRules = RefRules()
    ssh: TrustedSsh
    hosts: dict[str, TrustedHost]
    vault_paths: dict[str, list[str]] = Field(
        {}, description="stack -> KV paths (globs) it may read; `*` applies to every stack, `{stack}` is its name")
    agents: dict[str, str] = Field(
        {}, description="agent hook -> the one target it may call: its URL, or python:module:function")

    def vault_patterns(self, stack: str) -> list[str]:
        patterns = [*self.vault_paths.get("*", []), *self.vault_paths.get(stack, [])]
        return [p.replace("{stack}", stack) for p in patterns]


def trust_path() -> Path:
    home = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    return Path(os.environ.get(TRUST_FILE_ENV, home / "trust.yaml")).expanduser()


def load_trust(path: Path | None = None) -> TrustFile | None:
    """The trust file, or None when there is none."""
    path = path or trust_path()
    if not path.exists():
        return None
    try:
        return TrustFile.model_validate(load_with_lines(path.read_text()).data)
    except (OSError, YamlSyntaxError, ValidationError) as exc:
        raise TrustRefused(f"trust file {path} is unreadable or invalid: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _git(root: Path, *args: str, config: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *config, "-C", str(root), *args], capture_output=True, text=True, check=False)


def repo_root(directory: Path) -> Path | None:
    done = _git(directory, "rev-parse", "--show-toplevel")
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def check_outside_repo(trust_file: Path, inventory: Path) -> None:
    """A trust file inside the config repo would be chosen by the ref it is meant to check."""
    root = repo_root(inventory.expanduser().absolute().parent)
    if root is not None and trust_file.resolve().is_relative_to(root.resolve()):
        raise TrustRefused(f"trust file {trust_file} lies inside the config repo {root}; "
                           f"move it out (set {TRUST_FILE_ENV})")


def admit_ref(inventory: Path, ref: str, rules: RefRules, default_branch: str | None) -> str:
    """The commit ``ref`` names, if the rules allow it; raises TrustRefused otherwise."""
    root = repo_root(inventory.expanduser().absolute().parent)
    if root is None:
        raise SourceError(f"--ref {ref}: {inventory.parent} is not inside a git repository")
    if ref.startswith("-"):
        raise SourceError(f"--ref {ref!r}: not a ref")
    resolved = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise SourceError(f"--ref {ref}: no such commit, tag or branch in {root}")
    commit = resolved.stdout.strip()
    branches = rules.protected_branches if rules.protected_branches is not None else \
        [b for b in [default_branch] if b]
    for branch in branches:
        for tip in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
            known = _git(root, "rev-parse", "--verify", "--quiet", tip).returncode == 0
            if known and _git(root, "merge-base", "--is-ancestor", commit, tip).returncode == 0:
                return commit
    if rules.signed_tags and _signed_tag(root, ref, rules):
        return commit
    allowed = ", ".join(branches) or "none (no default branch found)"
    raise TrustRefused(f"--ref {ref}: commit {commit[:12]} is not on a protected branch ({allowed})"
                       + (" and is not a signed tag" if rules.signed_tags else "")
                       + "; merge it first, or list the branch in the trust file's refs.protected_branches")


def _signed_tag(root: Path, ref: str, rules: RefRules) -> bool:
    tag = f"refs/tags/{ref.removeprefix('refs/tags/')}"
    if _git(root, "cat-file", "-t", tag).stdout.strip() != "tag":
        return False  # a lightweight tag (or not a tag) carries no signature
    config = ("-c", f"gpg.ssh.allowedSignersFile={rules.allowed_signers}") if rules.allowed_signers else ()
    return _git(root, "verify-tag", tag, config=config).returncode == 0


def check_inventory(inventory: Inventory, trust: TrustFile, shown: str) -> None:
    """Every host, the SSH settings, each stack's Vault paths and the agent hooks must match the trust file."""
    found = _host_problems(inventory, trust) + _vault_problems(inventory, trust) + _agent_problems(inventory, trust)
    problems = [f"{shown}: {p}" for p in found]
    if problems:
        raise TrustRefused([*problems, f"(the trust file {trust_path()} decides these; "
                                       "change it there if the change is meant)"])


def _host_problems(inventory: Inventory, trust: TrustFile) -> list[str]:
    problems = []
    for name, host in inventory.hosts.items():
        pinned = trust.hosts.get(name)
        if pinned is None:
            problems.append(f"hosts.{name}: not a host in the trust file")
            continue
        for field in ("address", "port", "user"):
            if getattr(host, field) != getattr(pinned, field):
                problems.append(f"hosts.{name}.{field}: {getattr(host, field)!r} differs from the trusted "
                                f"{getattr(pinned, field)!r}")
    for field in ("known_hosts", "identity"):
        given, pinned = getattr(inventory.ssh, field), getattr(trust.ssh, field)
        if Path(given).expanduser() != Path(pinned).expanduser():
            problems.append(f"ssh.{field}: {given!r} differs from the trusted {pinned!r}")
    return problems


def _vault_problems(inventory: Inventory, trust: TrustFile) -> list[str]:
    problems = []
    for phase in inventory.phases.values():
        for stack_name, stack in phase.stacks.items():
            allowed = trust.vault_patterns(stack_name)
            for secret in stack.secrets:
                if not any(fnmatch.fnmatchcase(secret.path, pattern) for pattern in allowed):
                    problems.append(f"stacks.{stack_name}.secrets: Vault path {secret.path!r} is not one the "
                                    f"trust file lets {stack_name} read")
    return problems


def _agent_problems(inventory: Inventory, trust: TrustFile) -> list[str]:
    """An agent hook sees the plan and the report, gets the bearer token, and an entry point runs
    in the orchestrator's process: its target is the trust file's to decide."""
    problems = []
    for name, hook in inventory.agents.configured().items():
        pinned = trust.agents.get(name)
        if pinned != hook.target():
            problems.append(f"agents.{name}: target {hook.target()!r} is not the trusted "
                            f"{pinned!r}" if pinned else f"agents.{name}: the trust file allows no {name} hook")
    return problems


def pin(inventory: Inventory, protected_branches: list[str] | None = None) -> TrustFile:
    """A trust file that allows exactly what ``inventory`` asks for today."""
    return TrustFile(
        refs=RefRules(protected_branches=protected_branches),
        ssh=TrustedSsh(known_hosts=inventory.ssh.known_hosts, identity=inventory.ssh.identity),
        hosts={name: TrustedHost(address=h.address, port=h.port, user=h.user) for name, h in inventory.hosts.items()},
        vault_paths={name: sorted({s.path for s in stack.secrets})
                     for phase in inventory.phases.values() for name, stack in phase.stacks.items() if stack.secrets},
        agents={name: hook.target() for name, hook in inventory.agents.configured().items()})


def dump(trust: TrustFile) -> str:
    header = ("# homelab trust file: what no ref or inventory may change on its own.\n"
              "# Keep it outside the config repo; review every change.\n")
    return header + yaml.safe_dump(trust.model_dump(exclude_none=True), sort_keys=False)


def admit(inventory_file: Path, ref: str | None) -> tuple[str | None, TrustFile | None]:
    """Before anything is read at ``ref``: the commit it may deploy (None: the working tree)
    and the trust file to check the inventory against (None: there is none)."""
    from model.source import default_branch

    path = trust_path()
    trust = load_trust(path)
    if trust is None and os.environ.get(REQUIRE_TRUST_ENV):
        raise TrustRefused(f"no trust file at {path}: the control process deploys only against one. "
                           "Run `homelab trust init -i INVENTORY`, review it, then start `homelab serve` again")
    if trust is not None:
        check_outside_repo(path, inventory_file)
    if ref is None:
        return None, trust
    return admit_ref(inventory_file, ref, trust.refs if trust else RefRules(), default_branch(inventory_file)), trust
