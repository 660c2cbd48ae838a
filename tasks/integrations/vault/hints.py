"""What went wrong with a Vault request, and what to do next: pure functions of the HTTP
status and Vault's fixed phrases (which are recognised, never copied into a message)."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.integrations.request_errors import innermost, network_cause, reason_text
from tasks.integrations.tls import untrusted_hint
from tasks.integrations.vault.settings import APPROLE_MOUNT, BLOCK_NAME


@dataclass(frozen=True)
class Failure:
    """The request, as the explanation needs it."""

    action: str  # "read", "write (cas 3)", "AppRole login ..."
    path: str | None  # None for a login
    cas: int | None
    mount: str
    auth_kind: str  # approle | token | none


def explain(failure: Failure, status: int | None, said: str, raw: str, deleted: bool) -> tuple[str, str]:
    """(cause, hint) for a Vault error answer. ``said`` is Vault's error list, lower-cased;
    ``raw`` the body of a 400 (lower-cased); ``deleted`` whether KV says the version is deleted."""
    if "http request to an https server" in raw:
        return ("Vault speaks HTTPS, but the address says http:// (HTTP 400)",
                f"use https:// in VAULT_ADDR or the '{BLOCK_NAME}' block, with VAULT_CACERT if its CA is private")
    if status == 503 or "sealed" in said:
        return ("Vault is sealed" if "sealed" in said else "Vault is unavailable (HTTP 503)",
                "unseal it (bao operator unseal, or vault operator unseal), or wait for the active node, then retry")
    if status == 501:
        return "Vault is not initialized (HTTP 501)", "initialize and unseal Vault first (bao operator init)"
    if failure.path is None:
        return _login(failure, status, said)
    return _request(failure, status, said, deleted)


def _login(failure: Failure, status: int | None, said: str) -> tuple[str, str]:
    if status == 400 and "invalid role or secret id" in said:
        return ("the AppRole login was refused: invalid role_id or secret_id",
                "the secret_id may be wrong, expired, used up (secret_id_num_uses) or bound to other CIDRs: "
                "generate a new one (bao write -f auth/approle/role/<role>/secret-id) and put it in "
                f"VAULT_SECRET_ID or the '{BLOCK_NAME}' block")
    if failure.auth_kind == "token" and status in (401, 403):
        return (f"the token was refused (HTTP {status})",
                f"VAULT_TOKEN (or the token in the '{BLOCK_NAME}' block) is invalid or expired: log in again "
                "and use the new token, or use an AppRole")
    if status in (403, 404) or "no handler" in said or "unsupported path" in said:
        return (f"the login path auth/{APPROLE_MOUNT}/login was refused (HTTP {status})",
                f"there is probably no AppRole auth method at auth/{APPROLE_MOUNT}/: enable it (bao auth enable "
                "approle) and create the role, or check that VAULT_ADDR points at the right Vault")
    return (f"the login failed (HTTP {status or 'error'})",
            "check the AppRole (role_id, secret_id) and that auth/approle is enabled")


def _request(failure: Failure, status: int | None, said: str, deleted: bool) -> tuple[str, str]:
    mount, path = failure.mount, failure.path
    if status == 403:
        verb = "create and update" if failure.action.startswith("write") else "read"
        who = "AppRole" if failure.auth_kind == "approle" else "token"
        return ("permission denied (HTTP 403)",
                f"grant the {who}'s policy {verb} on {mount}/data/{path} (path "
                f"\"{mount}/data/{path}\" {{ capabilities = [...] }}), and check that the KV mount is "
                f"'{mount}' (VAULT_KV_MOUNT)")
    if status == 404 and deleted:
        return ("the latest version was deleted (HTTP 404)",
                f"undelete it (bao kv undelete -mount={mount} -versions=<n> {path}) or write a new version")
    if status == 404:
        return ("no such secret (HTTP 404)",
                f"check the path in the inventory: it is relative to the KV mount '{mount}', without "
                f"'data/'; or create it (bao kv put -mount={mount} {path} KEY=...)")
    if status == 400 and "check-and-set" in said:
        return ((f"check-and-set failed: version {failure.cas} is not the current version" if failure.cas else
                 "check-and-set failed: the secret exists already (cas 0 writes only a new secret)"),
                "someone else changed the secret meanwhile: read it again, then retry the write with its version")
    if status == 400 and "cas" in said:
        return "the mount requires check-and-set (HTTP 400)", "pass the current version as cas"
    if status == 429:
        return "rate limited by Vault (HTTP 429)", "wait a moment, then retry"
    if status is not None and status >= 500:
        return (f"Vault failed to serve the request (HTTP {status})",
                "read Vault's server log (journalctl -u openbao / vault), then retry")
    return (f"Vault rejected the request (HTTP {status or 'error'})",
            f"check the path and that '{mount}' is a KV version 2 mount")


def reach_hint(addr: str) -> str:
    plain = " (if Vault speaks HTTPS, use https://)" if addr.startswith("http://") else ""
    return (f"check that Vault runs and listens at {addr}{plain} (VAULT_ADDR or the '{BLOCK_NAME}' "
            "block) and that the network allows it, then retry")


def tls_hint(addr: str, ca_cert: str | None) -> str:
    return untrusted_hint(addr, ca_cert, ca_setting=f"VAULT_CACERT (or ca_cert in the '{BLOCK_NAME}' block)",
                          which_ca="Vault's CA", plain_tls=True)


def connection_reason(exc: BaseException) -> str:
    """'connection refused', 'name does not resolve', ... from a requests ConnectionError, on one line."""
    return network_cause(reason_text(exc)) or type(innermost(exc)).__name__
