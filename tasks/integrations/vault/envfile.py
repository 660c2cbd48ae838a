"""Rendering a stack's secrets into compose env files (pure: no Vault, no host).

Env-file quoting rule (docker compose v2 ``env_file``, compose-go's dotenv parser). Each line
is ``KEY='value'``, with keys sorted. Inside single quotes compose takes every character as it
is: no ``$`` interpolation, no ``#`` comment, no escape sequences, and spaces are kept. The one
exception is a backslash in front of the quote. docker-compose 2.26.1 (compose-go v2) reads
``\\'`` as ``'``, and compose-go v1 keeps the backslash too. So a value can be written verbatim,
whatever the compose version, only if it holds no ``'`` and does not end in ``\\``. A trailing
``\\`` would escape the closing quote. Values that break this rule are refused, and so are values
with a line break, a NUL or another control character (a tab is allowed). Values made by
``random_secret`` always pass. Checked against ``docker compose config`` 2.26.1, the version the
lab hosts run: see ``tests/unit/test_secrets_pure.py``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from model.env_files import RenderedEnvFile
from tasks.integrations.vault.errors import SecretsError

DEFAULT_ENV_FILE = ".env.secrets"
MIN_SECRET_BYTES = 16

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # C0 controls except tab, and DEL


class SecretSpec(Protocol):
    """One ``secrets:`` entry of a stack (``model.inventory.StackSecret``): KV path, keys, env file."""

    path: str
    keys: Sequence[str]
    env_file: str


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` cannot be written verbatim as ``KEY='value'`` in a compose env file; None if it can."""
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not a string"
    if "\n" in value or "\r" in value:
        return "it contains a line break"
    if "\x00" in value:
        return "it contains a NUL character"
    if _CONTROL.search(value):
        return "it contains a control character"
    if "'" in value:
        return "it contains a single quote (')"
    if value.endswith("\\"):
        return "it ends with a backslash"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def env_line(key: str, value: str) -> str:
    """``KEY='value'`` + newline. The caller has checked the value with ``unsafe_reason``."""
    return f"{key}='{value}'\n"


def render_env_files(refs: Sequence[SecretSpec], values: Mapping[str, tuple[dict[str, str], int]]
                     ) -> dict[str, RenderedEnvFile]:
    """One env file per ``env_file`` name, holding the keys of every ref that names it.

    ``values`` maps each path to ``(data, version)``, as ``VaultReader.read`` returns it. Raises
    SecretsError, naming the path and key and never the value, when a path was not read, a key
    is missing, a key is not an environment variable name, two refs put the same key in one file,
    or a value cannot be written verbatim (see the quoting rule in the module docstring).
    """
    lines: dict[str, dict[str, str]] = {}
    origin: dict[tuple[str, str], str] = {}
    versions: dict[str, dict[str, int]] = {}
    for ref in refs:
        env_file = ref.env_file
        if not env_file or "/" in env_file or env_file in (".", ".."):
            raise SecretsError(f"secret {ref.path}: env_file {env_file!r} must be a plain file name (it lives in "
                               "the stack's directory)", path=ref.path)
        if ref.path not in values:
            raise SecretsError(f"secret {ref.path} was not read from Vault before rendering {env_file} "
                               "(a bug in the caller: read every path of the stack first)", path=ref.path)
        data, version = values[ref.path]
        file_lines = lines.setdefault(env_file, {})
        versions.setdefault(env_file, {})[ref.path] = version
        for key in ref.keys:
            where = f"secret {ref.path} (version {version}) key {key}"
            if not _ENV_NAME.fullmatch(key):
                raise SecretsError(f"{where}: {key!r} is not an environment variable name "
                                   "([A-Za-z_][A-Za-z0-9_]*); fix the keys of this secret in the inventory",
                                   path=ref.path, key=key)
            if key not in data:
                raise SecretsError(f"{where} is missing (the secret has {key_list(data)}); add the key in Vault "
                                   "or fix the keys of this secret in the inventory", path=ref.path, key=key)
            if (env_file, key) in origin and origin[(env_file, key)] != ref.path:
                raise SecretsError(f"{where}: {env_file} already gets {key} from secret {origin[(env_file, key)]}; "
                                   "render one of them into another env_file", path=ref.path, key=key)
            origin[(env_file, key)] = ref.path
            reason = unsafe_reason(data[key])
            if reason:
                raise SecretsError(f"{where} cannot be written to {env_file}: {reason}. A compose env file holds "
                                   "it safely only as one line in single quotes, without ' and not ending in "
                                   "\\; rotate it to such a value (e.g. random_secret())",
                                   path=ref.path, key=key, cause=reason)
            file_lines[key] = env_line(key, data[key])
    rendered = {}
    for name, keyed in lines.items():
        content = "".join(keyed[k] for k in sorted(keyed)).encode("utf-8")
        rendered[name] = RenderedEnvFile(name=name, content=content, sha256=hashlib.sha256(content).hexdigest(),
                                         versions=dict(sorted(versions[name].items())))
    return rendered


def key_list(data: Mapping[str, Any]) -> str:
    return ("keys " + ", ".join(sorted(data))) if data else "no keys"


def random_secret(nbytes: int = 32) -> str:
    """A new random value made of ``[A-Za-z0-9_-]`` (URL-safe base64, no padding). It can be
    written into an env file, a URL or a shell word without quoting problems."""
    if nbytes < MIN_SECRET_BYTES:
        raise ValueError(f"random_secret: {nbytes} bytes is too weak; use at least {MIN_SECRET_BYTES}")
    return secrets.token_urlsafe(nbytes)
