"""Secrets from Vault / OpenBao (KV v2), rendered into env files next to a stack's compose project.

- ``VaultReader`` logs in with AppRole (``role_id`` + ``secret_id``) or, for development, a
  token given explicitly. It never falls back to ``VAULT_TOKEN`` or ``~/.vault-token`` behind the
  caller's back. TLS is always verified: against ``ca_cert`` when given, else the system CA store.
- Each KV path is read once per reader, which means once per run. Every value read or written
  is registered with ``MASKER``, so it is masked in every remote command and log line.
- Every failure is a ``SecretsError``. Its message names the Vault address, the path and the key,
  and says what to do next. It never names a value, a token or a secret_id. hvac's exception
  text is never passed on, because it can echo request data.
- Rendering (``render_env_files``) and the remote hash check (``hash_remote_files`` and
  ``parse_remote_hashes``) are pure and need no Vault.

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

Does not import Prefect. The Block that holds the settings is in ``blocks/vault.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import hvac
import requests
from hvac import exceptions as hvac_errors

from tasks.errors import HomelabError
from tasks.masking import MASKER
from tasks.tls import verify_target

log = logging.getLogger("homelab.secrets")

APPROLE_MOUNT = "approle"
DEFAULT_ENV_FILE = ".env.secrets"
BLOCK_NAME = "Homelab Vault Access"
MIN_SECRET_BYTES = 16

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # C0 controls except tab, and DEL

T = TypeVar("T")


# --------------------------------------------------------------------------- values


class SecretsError(HomelabError):
    """Reading, writing or rendering a secret failed. The message names the Vault address, the KV
    path and the key where they are known, and what to do next. It never names a value, a token
    or a secret_id."""

    exit_code = 6

    def __init__(self, message: str, *, addr: str | None = None, path: str | None = None,
                 key: str | None = None, http_status: int | None = None, cause: str = ""):
        self.addr = addr
        self.path = path
        self.key = key
        self.http_status = http_status
        self.cause = cause
        super().__init__(message)


@dataclass(frozen=True)
class SecretRef:
    """One entry of a stack's ``secrets:`` list in the inventory."""

    path: str  # KV v2 path under the mount, e.g. "homelab/postgres"
    keys: tuple[str, ...]  # e.g. ("POSTGRES_PASSWORD",)
    env_file: str = DEFAULT_ENV_FILE


@dataclass(frozen=True)
class VaultSettings:
    addr: str  # "https://vault.lan:8200"
    ca_cert: str | None = None  # CA bundle that verifies Vault's certificate; None: the system CA store
    role_id: str | None = None  # AppRole (production)
    secret_id: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # development only, used when there is no AppRole
    mount: str = "secret"  # KV v2 mount
    timeout_s: float = 10  # per HTTP request


@dataclass(frozen=True)
class RenderedEnvFile:
    name: str  # env file name, e.g. ".env.secrets"
    content: bytes = field(repr=False)  # "KEY='value'\n" lines, keys sorted (see the quoting rule above)
    sha256: str  # hex sha256 of content
    versions: dict[str, int]  # KV path -> version used


def settings_from_env(env: Mapping[str, str] = os.environ) -> VaultSettings | None:
    """Settings from VAULT_ADDR, VAULT_CACERT, VAULT_ROLE_ID + VAULT_SECRET_ID (AppRole) or
    VAULT_TOKEN (development), and VAULT_KV_MOUNT (default ``secret``).

    Returns None when VAULT_ADDR is unset or empty, because then there is no Vault. Raises
    SecretsError, naming the variables, when VAULT_ADDR is set without credentials or with only
    half of an AppRole. When both an AppRole and a token are set, the AppRole is used.
    """
    addr = env.get("VAULT_ADDR", "").strip()
    if not addr:
        return None
    role_id = env.get("VAULT_ROLE_ID", "").strip() or None
    secret_id = env.get("VAULT_SECRET_ID", "").strip() or None
    token = env.get("VAULT_TOKEN", "").strip() or None
    if bool(role_id) != bool(secret_id):
        have, lack = ("VAULT_ROLE_ID", "VAULT_SECRET_ID") if role_id else ("VAULT_SECRET_ID", "VAULT_ROLE_ID")
        raise SecretsError(f"{have} is set but {lack} is not; an AppRole login needs both (or unset "
                           f"{have} and use VAULT_TOKEN for development)", addr=addr)
    if not role_id and not token:
        raise SecretsError(f"VAULT_ADDR is set ({addr}) but there are no credentials: set VAULT_ROLE_ID and "
                           "VAULT_SECRET_ID (AppRole), or VAULT_TOKEN for development, or unset VAULT_ADDR",
                           addr=addr)
    mount = env.get("VAULT_KV_MOUNT", "").strip().strip("/") or "secret"
    return VaultSettings(addr=addr, ca_cert=env.get("VAULT_CACERT", "").strip() or None, role_id=role_id,
                         secret_id=secret_id, token=None if role_id else token, mount=mount)


# --------------------------------------------------------------------------- rendering (pure)


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


def render_env_files(refs: Sequence[SecretRef], values: Mapping[str, tuple[dict[str, str], int]]
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
                raise SecretsError(f"{where} is missing (the secret has {_key_list(data)}); add the key in Vault "
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


def _key_list(data: Mapping[str, Any]) -> str:
    return ("keys " + ", ".join(sorted(data))) if data else "no keys"


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
    return ["sh", "-c", HASH_FILES, "hash-files", *paths]


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


def random_secret(nbytes: int = 32) -> str:
    """A new random value made of ``[A-Za-z0-9_-]`` (URL-safe base64, no padding). It can be
    written into an env file, a URL or a shell word without quoting problems."""
    if nbytes < MIN_SECRET_BYTES:
        raise ValueError(f"random_secret: {nbytes} bytes is too weak; use at least {MIN_SECRET_BYTES}")
    return secrets.token_urlsafe(nbytes)


# --------------------------------------------------------------------------- client


def _clean_path(path: str) -> str:
    cleaned = path.strip().strip("/")
    if not cleaned or "//" in cleaned or any(part in (".", "..") for part in cleaned.split("/")):
        raise SecretsError(f"{path!r} is not a KV path: use a path under the mount such as 'homelab/postgres'",
                           path=path)
    return cleaned


def _as_text(value: Any) -> str:
    """A KV value as an env string. Strings are kept as they are; anything else (number, bool,
    null, list, object) becomes compact JSON, e.g. ``5``, ``true``."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _serialized(method: Callable[..., T]) -> Callable[..., T]:
    """Run the method under the reader's lock."""

    @functools.wraps(method)
    def locked(self: VaultReader, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


@dataclass
class _Op:
    """One user-level action, for messages: 'read secret/homelab/postgres'."""

    action: str
    path: str | None = None
    version: int | None = None
    cas: int | None = None


class VaultReader:
    """KV v2 reads (cached per instance, so each path once per run), CAS writes and history.

    Synchronous (hvac + requests): async callers wrap each call in ``asyncio.to_thread``. Calls
    from several threads are serialized by a lock, so a path is read once even when the
    threads ask for it at the same time.
    """

    def __init__(self, settings: VaultSettings) -> None:
        self.settings = settings
        MASKER.add(*(v for v in (settings.secret_id, settings.token) if v))
        parts = urlsplit(settings.addr)
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SecretsError(f"Vault address {settings.addr!r} is not http(s)://host[:port]; fix VAULT_ADDR or "
                               f"the '{BLOCK_NAME}' block", addr=settings.addr)
        if settings.ca_cert and not os.path.isfile(settings.ca_cert):
            raise SecretsError(f"Vault CA file {settings.ca_cert} does not exist; point VAULT_CACERT (or ca_cert in "
                               f"the '{BLOCK_NAME}' block) at the CA that signed Vault's certificate, or unset it "
                               "to use the system CAs", addr=settings.addr)
        self.mount = settings.mount.strip("/") or "secret"
        # token="" (not None): hvac would otherwise pick up VAULT_TOKEN or ~/.vault-token by itself.
        # hvac takes `verify` from a given session (hvac#991), so it is set on the session.
        session = requests.Session()
        session.verify = verify_target(settings.ca_cert)
        self._client = hvac.Client(url=settings.addr.rstrip("/"), token="", verify=session.verify,
                                   timeout=settings.timeout_s, session=session)
        self._logged_in = False
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[dict[str, str], int]] = {}
        self._history: dict[tuple[str, int], dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"VaultReader(addr={self.settings.addr!r}, mount={self.mount!r}, auth={self._auth_kind()!r})"

    # ----------------------------------------------------------------- public

    @_serialized
    def login(self) -> None:
        """Log in with the AppRole (role_id + secret_id) if given, else use the explicit token."""
        s = self.settings
        if s.role_id or s.secret_id:
            if not (s.role_id and s.secret_id):
                raise self._fail(_Op("log in"), "an AppRole login needs both role_id and secret_id",
                                 hint=f"set both VAULT_ROLE_ID and VAULT_SECRET_ID (or both in the '{BLOCK_NAME}' "
                                      "block)")
            op = _Op(f"AppRole login (role_id {_short_id(s.role_id)}) at auth/{APPROLE_MOUNT}")
            answer = self._call(op, lambda: self._client.auth.approle.login(
                role_id=s.role_id, secret_id=s.secret_id, use_token=False, mount_point=APPROLE_MOUNT))
            token = answer.get("auth", {}).get("client_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                raise self._fail(op, "the login answer holds no client token",
                                 hint="check that VAULT_ADDR points at Vault's API (no proxy page in between)")
            MASKER.add(token)
            self._client.token = token
            log.info("vault %s: logged in with AppRole role_id %s", s.addr, _short_id(s.role_id))
        elif s.token:
            self._client.token = s.token
            self._call(_Op("check the token"), lambda: self._client.auth.token.lookup_self())
            log.info("vault %s: using an explicit token (development)", s.addr)
        else:
            raise self._fail(_Op("log in"), "no credentials",
                             hint=f"set VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole), or VAULT_TOKEN for development, "
                                  f"or fill in the '{BLOCK_NAME}' block")
        self._logged_in = True

    @_serialized
    def read(self, path: str) -> tuple[dict[str, str], int]:
        """The latest data of a KV v2 secret and its version. Each path is read from Vault once per
        reader and served from the cache after that. Every value is registered with MASKER."""
        path = _clean_path(path)
        if path not in self._cache:
            op = _Op("read", path)
            answer = self._authed(op, lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=True))
            data, version = self._kv_data(op, answer)
            self._cache[path] = (data, version)
            log.info("vault %s: read %s/%s version %d (%s)", self.settings.addr, self.mount, path, version,
                     _key_list(data))
        data, version = self._cache[path]
        return dict(data), version

    @_serialized
    def read_keys(self, ref: SecretRef) -> tuple[dict[str, str], int]:
        """Only ``ref.keys`` of ``ref.path``, and the version. A missing key is a SecretsError."""
        data, version = self.read(ref.path)
        missing = [k for k in ref.keys if k not in data]
        if missing:
            path = _clean_path(ref.path)
            raise SecretsError(
                f"vault {self.settings.addr}: secret {self.mount}/{path} (version {version}) has no key "
                f"{', '.join(missing)} (it has {_key_list(data)})\n  next: add the key in Vault "
                f"(bao kv patch -mount={self.mount} {path} {missing[0]}=...) or fix the keys of this secret in "
                "the inventory", addr=self.settings.addr, path=ref.path, key=missing[0], cause="key missing")
        return {k: data[k] for k in ref.keys}, version

    @_serialized
    def write_cas(self, path: str, data: dict[str, str], cas: int) -> int:
        """Write a new version of the whole secret only if ``cas`` is its current version (0: only
        if it does not exist yet). Returns the new version, and serves it from the cache after that."""
        path = _clean_path(path)
        op = _Op(f"write (cas {cas})", path, cas=cas)
        if isinstance(cas, bool) or not isinstance(cas, int) or cas < 0:
            raise self._fail(op, f"{cas!r} is not a check-and-set version",
                             hint="pass the version read last (read() returns it), or 0 to create a new secret")
        if not isinstance(data, dict) or not data:
            raise self._fail(op, "nothing to write", hint="pass the whole secret (every key) as a non-empty dict")
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise self._fail(op, f"key {key!r} does not map to a string",
                                 hint="KV values written here must be strings", key=str(key))
        MASKER.add(*data.values())
        answer = self._authed(op, lambda: self._client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, cas=cas, mount_point=self.mount))
        version = answer.get("data", {}).get("version") if isinstance(answer, dict) else None
        if not isinstance(version, int):
            raise self._fail(op, "the answer holds no version",
                             hint="check that the mount is a KV version 2 engine and VAULT_ADDR points at its API")
        self._cache[path] = (dict(data), version)
        log.info("vault %s: wrote %s/%s version %d (cas %d, %s)", self.settings.addr, self.mount, path, version, cas,
                 _key_list(data))
        return version

    @_serialized
    def read_version(self, path: str, version: int) -> dict[str, str]:
        """The data of one past (or the current) version of a secret, from KV history."""
        path = _clean_path(path)
        if not isinstance(version, int) or version < 1:
            raise SecretsError(f"vault {self.settings.addr}: read {self.mount}/{path} version {version!r} failed: "
                               "not a KV version\n  next: pass a version number from 1 up (read() returns the "
                               "current one)", addr=self.settings.addr, path=path)
        if (path, version) not in self._history:
            op = _Op("read", path, version)
            answer = self._authed(op, lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self.mount, raise_on_deleted_version=True))
            data, _ = self._kv_data(op, answer)
            self._history[(path, version)] = data
            log.info("vault %s: read %s/%s version %d (history)", self.settings.addr, self.mount, path, version)
        return dict(self._history[(path, version)])

    # ----------------------------------------------------------------- plumbing

    def _auth_kind(self) -> str:
        s = self.settings
        return "approle" if (s.role_id or s.secret_id) else "token" if s.token else "none"

    def _kv_data(self, op: _Op, answer: Any) -> tuple[dict[str, str], int]:
        body = answer.get("data") if isinstance(answer, dict) else None
        data = body.get("data") if isinstance(body, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(data, dict) or not isinstance(version, int):
            raise self._fail(op, "the answer is not a KV version 2 secret",
                             hint=f"check that '{self.mount}' is a KV version 2 mount (bao secrets list -detailed)")
        values = {str(k): _as_text(v) for k, v in data.items()}
        MASKER.add(*values.values())
        return values, version

    def _authed(self, op: _Op, send: Callable[[], T]) -> T:
        """A request that needs the login. An AppRole token that is refused (403) is renewed once by
        logging in again, because it may have expired during a long run."""
        if not self._logged_in:
            self.login()
        try:
            return self._call(op, send)
        except SecretsError as exc:
            if exc.http_status != 403 or self._auth_kind() != "approle":
                raise
        self._logged_in = False
        self.login()
        return self._call(op, send)

    def _call(self, op: _Op, send: Callable[[], T]) -> T:
        """One request; every failure becomes a SecretsError built here, never hvac's text."""
        try:
            return send()
        except hvac_errors.VaultError as exc:
            raise self._vault_error(op, exc) from None
        except requests.exceptions.SSLError:
            raise self._fail(op, f"TLS verification of {self.settings.addr} failed", hint=self._tls_hint()) from None
        except requests.exceptions.ConnectTimeout:
            raise self._fail(op, f"cannot reach Vault: no connection within {self.settings.timeout_s:g}s",
                             hint=self._reach_hint()) from None
        except requests.exceptions.Timeout:
            raise self._fail(op, f"Vault did not answer within {self.settings.timeout_s:g}s",
                             hint="check that Vault is healthy (bao status) and not overloaded, then retry") from None
        except requests.exceptions.ConnectionError as exc:
            raise self._fail(op, f"cannot reach Vault: {_connection_reason(exc)}", hint=self._reach_hint()) from None
        except requests.exceptions.ChunkedEncodingError:
            raise self._fail(op, "the connection broke off during Vault's answer", hint=self._reach_hint()) from None
        except (requests.exceptions.JSONDecodeError, json.JSONDecodeError):
            raise self._fail(op, "the answer is not JSON",
                             hint="check that VAULT_ADDR points at Vault's API (no proxy page in between)") from None
        except requests.RequestException as exc:
            raise self._fail(op, f"request failed ({type(exc).__name__})", hint=self._reach_hint()) from None

    def _vault_error(self, op: _Op, exc: hvac_errors.VaultError) -> SecretsError:
        s = self.settings
        status = {hvac_errors.InvalidRequest: 400, hvac_errors.Unauthorized: 401, hvac_errors.Forbidden: 403,
                  hvac_errors.InvalidPath: 404, hvac_errors.RateLimitExceeded: 429,
                  hvac_errors.InternalServerError: 500, hvac_errors.VaultNotInitialized: 501,
                  hvac_errors.BadGateway: 502, hvac_errors.VaultDown: 503}.get(type(exc))
        # Only recognised by fixed phrases; never copied into the message.
        said = " ".join(str(e) for e in (exc.errors or []) if isinstance(e, str)).lower()
        login = op.path is None
        target = f"{self.mount}/{op.path}" if op.path else ""
        raw = str(exc.text or "").lower() if status == 400 else ""
        if "http request to an https server" in raw:
            cause = "Vault speaks HTTPS, but the address says http:// (HTTP 400)"
            hint = f"use https:// in VAULT_ADDR or the '{BLOCK_NAME}' block, with VAULT_CACERT if its CA is private"
        elif status == 503 or "sealed" in said:
            cause = "Vault is sealed" if "sealed" in said else "Vault is unavailable (HTTP 503)"
            hint = ("unseal it (bao operator unseal, or vault operator unseal), or wait for the active node, "
                    "then retry")
        elif status == 501:
            cause, hint = "Vault is not initialized (HTTP 501)", "initialize and unseal Vault first (bao operator init)"
        elif login and status == 400 and "invalid role or secret id" in said:
            cause = "the AppRole login was refused: invalid role_id or secret_id"
            hint = ("the secret_id may be wrong, expired, used up (secret_id_num_uses) or bound to other CIDRs: "
                    "generate a new one (bao write -f auth/approle/role/<role>/secret-id) and put it in "
                    f"VAULT_SECRET_ID or the '{BLOCK_NAME}' block")
        elif login and self._auth_kind() == "token" and status in (401, 403):
            cause = f"the token was refused (HTTP {status})"
            hint = (f"VAULT_TOKEN (or the token in the '{BLOCK_NAME}' block) is invalid or expired: log in again "
                    "and use the new token, or use an AppRole")
        elif login and (status in (403, 404) or "no handler" in said or "unsupported path" in said):
            cause = f"the login path auth/{APPROLE_MOUNT}/login was refused (HTTP {status})"
            hint = (f"there is probably no AppRole auth method at auth/{APPROLE_MOUNT}/: enable it (bao auth enable "
                    "approle) and create the role, or check that VAULT_ADDR points at the right Vault")
        elif login:
            cause = f"the login failed (HTTP {status or 'error'})"
            hint = "check the AppRole (role_id, secret_id) and that auth/approle is enabled"
        elif status == 403:
            verb = "create and update" if op.action.startswith("write") else "read"
            cause = "permission denied (HTTP 403)"
            who = "AppRole" if self._auth_kind() == "approle" else "token"
            hint = (f"grant the {who}'s policy {verb} on {self.mount}/data/{op.path} (path "
                    f"\"{self.mount}/data/{op.path}\" {{ capabilities = [...] }}), and check that the KV mount is "
                    f"'{self.mount}' (VAULT_KV_MOUNT)")
        elif status == 404 and op.version is not None:
            cause = f"version {op.version} does not exist (HTTP 404)"
            hint = (f"it was never written, or it was deleted or destroyed, or it is older than the mount's "
                    f"max_versions: list the versions with bao kv metadata get -mount={self.mount} {op.path}")
        elif status == 404 and _deleted(exc):
            cause = "the latest version was deleted (HTTP 404)"
            hint = (f"undelete it (bao kv undelete -mount={self.mount} -versions=<n> {op.path}) or write a new "
                    "version")
        elif status == 404:
            cause = "no such secret (HTTP 404)"
            hint = (f"check the path in the inventory: it is relative to the KV mount '{self.mount}', without "
                    f"'data/'; or create it (bao kv put -mount={self.mount} {op.path} KEY=...)")
        elif status == 400 and "check-and-set" in said:
            cause = (f"check-and-set failed: version {op.cas} is not the current version" if op.cas else
                     "check-and-set failed: the secret exists already (cas 0 writes only a new secret)")
            hint = "someone else changed the secret meanwhile: read it again, then retry the write with its version"
        elif status == 400 and "cas" in said:
            cause = "the mount requires check-and-set (HTTP 400)"
            hint = "pass the current version as cas"
        elif status == 429:
            cause, hint = "rate limited by Vault (HTTP 429)", "wait a moment, then retry"
        elif status is not None and status >= 500:
            cause = f"Vault failed to serve the request (HTTP {status})"
            hint = "read Vault's server log (journalctl -u openbao / vault), then retry"
        else:
            cause = f"Vault rejected the request (HTTP {status or 'error'})"
            hint = f"check the path and that '{self.mount}' is a KV version 2 mount"
        where = f" {target}" if target else ""
        if op.version is not None:
            where += f" version {op.version}"
        return SecretsError(f"vault {s.addr}: {op.action}{where} failed: {cause}\n  next: {hint}", addr=s.addr,
                            path=op.path, http_status=status, cause=cause)

    def _fail(self, op: _Op, cause: str, *, hint: str, key: str | None = None) -> SecretsError:
        s = self.settings
        where = f" {self.mount}/{op.path}" if op.path else ""
        if op.version is not None:
            where += f" version {op.version}"
        return SecretsError(f"vault {s.addr}: {op.action}{where} failed: {cause}\n  next: {hint}", addr=s.addr,
                            path=op.path, key=key, cause=cause)

    def _reach_hint(self) -> str:
        plain = " (if Vault speaks HTTPS, use https://)" if self.settings.addr.startswith("http://") else ""
        return (f"check that Vault runs and listens at {self.settings.addr}{plain} (VAULT_ADDR or the '{BLOCK_NAME}' "
                "block) and that the network allows it, then retry")

    def _tls_hint(self) -> str:
        if self.settings.ca_cert:
            return (f"the certificate of {self.settings.addr} is not signed by the CA in {self.settings.ca_cert} (or "
                    "does not name this host), or the server does not speak TLS: point VAULT_CACERT at Vault's CA; "
                    "never turn verification off")
        return ("the certificate is not trusted by the system CA store, or the server does not speak TLS: set "
                f"VAULT_CACERT (or ca_cert in the '{BLOCK_NAME}' block) to Vault's CA; never turn verification off")


def _short_id(value: str | None) -> str:
    return f"{value[:8]}..." if value and len(value) > 8 else (value or "")


def _deleted(exc: hvac_errors.VaultError) -> bool:
    body = exc.json if isinstance(exc.json, dict) else {}
    metadata = (body.get("data") or {}).get("metadata") if isinstance(body.get("data"), dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("deletion_time") or metadata.get("destroyed"))


def _connection_reason(exc: BaseException) -> str:
    """'connection refused', 'name does not resolve', ... from a requests ConnectionError, on one line."""
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    text = str(reason if isinstance(reason, BaseException) else inner)
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low or "name resolution" in low:
        return "the host name does not resolve"
    if "no route to host" in low:
        return "no route to host"
    if "network is unreachable" in low:
        return "network is unreachable"
    if "reset by peer" in low or "remotedisconnected" in low or "aborted" in low:
        return "the connection was dropped"
    return type(inner).__name__
