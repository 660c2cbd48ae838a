"""The Vault / OpenBao KV v2 client.

- ``VaultReader`` logs in with AppRole (``role_id`` + ``secret_id``) or, for development, a
  token given explicitly. It never falls back to ``VAULT_TOKEN`` or ``~/.vault-token`` behind the
  caller's back. TLS is always verified: against ``ca_cert`` when given, else the system CA store.
- Each KV path is read once per reader, which means once per run. Every value read or written
  is registered with ``MASKER``, so it is masked in every error, report and log line.
- Every failure is a ``SecretsError``. Its message names the Vault address, the path and the key,
  and says what to do next (``hints.py``). It never names a value, a token or a secret_id. hvac's
  exception text is never passed on, because it can echo request data.

Does not import Prefect. The Block that holds the settings is in ``blocks/vault.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import hvac
import requests
from hvac import exceptions as hvac_errors

from model.errors import AddressNotAllowed
from model.masking import MASKER, MIN_SECRET_LENGTH
from tasks.integrations.netpolicy import ALLOWED_NETWORKS_ENV, check_url_allowed
from tasks.integrations.tls import verify_target
from tasks.integrations.vault.envfile import key_list
from tasks.integrations.vault.errors import SecretsError
from tasks.integrations.vault.hints import Failure, connection_reason, explain, reach_hint, tls_hint
from tasks.integrations.vault.settings import APPROLE_MOUNT, BLOCK_NAME, VaultSettings

log = logging.getLogger("homelab.secrets")

T = TypeVar("T")

_STATUS = {hvac_errors.InvalidRequest: 400, hvac_errors.Unauthorized: 401, hvac_errors.Forbidden: 403,
           hvac_errors.InvalidPath: 404, hvac_errors.RateLimitExceeded: 429, hvac_errors.InternalServerError: 500,
           hvac_errors.VaultNotInitialized: 501, hvac_errors.BadGateway: 502, hvac_errors.VaultDown: 503}


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
    cas: int | None = None


class VaultReader:
    """KV v2 reads (cached per instance, so each path once per run) and CAS writes.

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
        self._address_allowed = False  # checked against HOMELAB_ALLOWED_NETWORKS before the first request
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[dict[str, str], int]] = {}

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
                     key_list(data))
        data, version = self._cache[path]
        return dict(data), version

    def versions_read(self) -> dict[str, int]:
        """path -> KV version of every secret this reader has read (no values): for the audit log."""
        return {path: version for path, (_, version) in sorted(self._cache.items())}

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
        self._refuse_short(op, data)
        MASKER.add(*data.values())
        answer = self._authed(op, lambda: self._client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, cas=cas, mount_point=self.mount))
        version = answer.get("data", {}).get("version") if isinstance(answer, dict) else None
        if not isinstance(version, int):
            raise self._fail(op, "the answer holds no version",
                             hint="check that the mount is a KV version 2 engine and VAULT_ADDR points at its API")
        self._cache[path] = (dict(data), version)
        log.info("vault %s: wrote %s/%s version %d (cas %d, %s)", self.settings.addr, self.mount, path, version, cas,
                 key_list(data))
        return version

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
        self._refuse_short(op, values)
        MASKER.add(*values.values())
        return values, version

    def _refuse_short(self, op: _Op, values: dict[str, str]) -> None:
        """Every value is masked wherever it shows; one shorter than MIN_SECRET_LENGTH cannot be
        (it would blank out ordinary text), so it is refused rather than left unmasked. An empty
        value is allowed: it has nothing to hide."""
        for key, value in sorted(values.items()):
            if 0 < len(value) < MIN_SECRET_LENGTH:
                raise self._fail(op, f"the value of key {key} is shorter than {MIN_SECRET_LENGTH} characters, "
                                     "too short to be masked in logs and reports",
                                 hint=f"make it at least {MIN_SECRET_LENGTH} characters long (homelab secrets "
                                      "rotate makes a random one), or keep settings that are not secret out "
                                      "of Vault", key=key)

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
        self._check_address(op)
        reach = reach_hint(self.settings.addr)
        try:
            return send()
        except hvac_errors.VaultError as exc:
            raise self._vault_error(op, exc) from None
        except requests.exceptions.SSLError:
            raise self._fail(op, f"TLS verification of {self.settings.addr} failed", hint=self._tls()) from None
        except requests.exceptions.ConnectTimeout:
            raise self._fail(op, f"cannot reach Vault: no connection within {self.settings.timeout_s:g}s",
                             hint=reach) from None
        except requests.exceptions.Timeout:
            raise self._fail(op, f"Vault did not answer within {self.settings.timeout_s:g}s",
                             hint="check that Vault is healthy (bao status) and not overloaded, then retry") from None
        except requests.exceptions.ConnectionError as exc:
            raise self._fail(op, f"cannot reach Vault: {connection_reason(exc)}", hint=reach) from None
        except requests.exceptions.ChunkedEncodingError:
            raise self._fail(op, "the connection broke off during Vault's answer", hint=reach) from None
        except (requests.exceptions.JSONDecodeError, json.JSONDecodeError):
            raise self._fail(op, "the answer is not JSON",
                             hint="check that VAULT_ADDR points at Vault's API (no proxy page in between)") from None
        except requests.RequestException as exc:
            raise self._fail(op, f"request failed ({type(exc).__name__})", hint=reach) from None

    def _check_address(self, op: _Op) -> None:
        """Refuse, before the first packet, a Vault whose address (or any address its name resolves
        to) lies outside HOMELAB_ALLOWED_NETWORKS."""
        if self._address_allowed:
            return
        try:
            check_url_allowed("Vault", self.settings.addr)
        except AddressNotAllowed as exc:
            raise self._fail(op, f"refused before connecting: {exc}",
                             hint=f"point VAULT_ADDR (or the '{BLOCK_NAME}' block) at a Vault inside "
                                  f"{ALLOWED_NETWORKS_ENV}, or add its network there") from None
        self._address_allowed = True

    def _vault_error(self, op: _Op, exc: hvac_errors.VaultError) -> SecretsError:
        status = _STATUS.get(type(exc))
        said = " ".join(str(e) for e in (exc.errors or []) if isinstance(e, str)).lower()
        raw = str(exc.text or "").lower() if status == 400 else ""
        failure = Failure(action=op.action, path=op.path, cas=op.cas, mount=self.mount,
                          auth_kind=self._auth_kind())
        cause, hint = explain(failure, status, said, raw, _deleted(exc))
        where = f" {self.mount}/{op.path}" if op.path else ""
        return SecretsError(f"vault {self.settings.addr}: {op.action}{where} failed: {cause}\n  next: {hint}",
                            addr=self.settings.addr, path=op.path, http_status=status, cause=cause)

    def _tls(self) -> str:
        return tls_hint(self.settings.addr, self.settings.ca_cert)

    def _fail(self, op: _Op, cause: str, *, hint: str, key: str | None = None) -> SecretsError:
        s = self.settings
        where = f" {self.mount}/{op.path}" if op.path else ""
        return SecretsError(f"vault {s.addr}: {op.action}{where} failed: {cause}\n  next: {hint}", addr=s.addr,
                            path=op.path, key=key, cause=cause)


def _short_id(value: str | None) -> str:
    return f"{value[:8]}..." if value and len(value) > 8 else (value or "")


def _deleted(exc: hvac_errors.VaultError) -> bool:
    body = exc.json if isinstance(exc.json, dict) else {}
    metadata = (body.get("data") or {}).get("metadata") if isinstance(body.get("data"), dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("deletion_time") or metadata.get("destroyed"))
