"""Proxmox VM snapshots around a deploy: take one before a phase, roll back to it, prune old ones.

- Synchronous (proxmoxer + requests); async callers wrap each call in ``asyncio.to_thread``.
- API-token auth only, TLS always verified: against ``ca_file`` when given, else the system CA store.
- Every call that starts a Proxmox task (UPID) waits for it: ``status == "stopped"`` and
  ``exitstatus == "OK"`` exactly, within ``task_timeout_s``. Anything else is a ``SnapshotError``.
- Reads (snapshot list, task status) are retried a couple of times on 5xx or a dropped
  connection; writes (create, rollback, delete) are sent once and never retried blindly.
- The token secret never appears in a log line, an exception or a repr.
- Snapshots made here carry ``names.PREFIX`` and a fixed layout (``is_ours``); ``delete`` and
  ``prune`` refuse to touch any other snapshot.

Does not import Prefect; the Block that holds the settings lives in ``blocks/proxmox.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from proxmoxer import ProxmoxAPI, ResourceException

from model.errors import AddressNotAllowed
from tasks.integrations.netpolicy import ALLOWED_NETWORKS_ENV, check_url_allowed
from tasks.integrations.proxmox.errors import SnapshotError
from tasks.integrations.proxmox.hints import hint_for, tls_hint
from tasks.integrations.proxmox.names import PREFIX, age_key, is_ours, valid_name
from tasks.integrations.proxmox.settings import ProxmoxSettings
from tasks.integrations.proxmox.vm import VmRef
from tasks.integrations.request_errors import innermost, reason_text
from tasks.integrations.tls import verify_target

log = logging.getLogger("homelab.snapshots")

# Reads are retried this many times after the first try, on 5xx or a dropped connection.
READ_RETRIES = 2
RETRY_DELAY_S = 0.2
LOG_TAIL_LINES = 6


class _Op:
    """One user-level action, for messages: 'create snapshot X of node/qemu/100 at https://...'."""

    def __init__(self, client: ProxmoxSnapshots, action: str, vm: VmRef, snapshot: str | None = None):
        self.client = client
        self.action = action
        self.vm = vm
        self.snapshot = snapshot

    def where(self) -> str:
        snap = f" snapshot {self.snapshot!r}" if self.snapshot else ""
        return f"proxmox {self.vm} ({self.client.settings.url}): {self.action}{snap}"

    def fail(self, cause: str, *, http_status: int | None = None, upid: str | None = None,
             exitstatus: str | None = None, hint: str | None = None, detail: str = "") -> SnapshotError:
        s = self.client.settings
        hint = hint or hint_for(cause, self.vm, http_status=http_status, token_id=s.token_id)
        message = f"{self.where()} failed: {cause}{detail}\n  next: {hint}"
        mask = self.client.mask
        return SnapshotError(mask(message), vm=self.vm, snapshot=self.snapshot, cause=mask(cause),
                             http_status=http_status, upid=upid, exitstatus=exitstatus)


class ProxmoxSnapshots:
    """Snapshots of Proxmox guests through the HTTPS API. Not thread-safe: one per thread."""

    def __init__(self, settings: ProxmoxSettings) -> None:
        self.settings = settings
        self._secret = settings.token_secret
        parts = urlsplit(settings.url)
        try:
            port = parts.port or 8006
        except ValueError:
            port = None
        if parts.scheme != "https" or not parts.hostname or port is None:
            raise SnapshotError(f"Proxmox URL {settings.url!r} is not https://host[:port]; fix PROXMOX_URL "
                                "or the 'Homelab Proxmox Access' block")
        user, sep, token_name = settings.token_id.partition("!")
        if not sep or "@" not in user or not token_name:
            raise SnapshotError(f"Proxmox token id {settings.token_id!r} is not user@realm!tokenname; fix "
                                "PROXMOX_TOKEN_ID or the 'Homelab Proxmox Access' block")
        if settings.ca_file and not os.path.isfile(settings.ca_file):
            raise SnapshotError(f"Proxmox CA file {settings.ca_file} does not exist; copy the cluster's CA "
                                "(/etc/pve/pve-root-ca.pem on a node) there, or unset it to use the system CAs")
        self._api = ProxmoxAPI(parts.hostname, port=port, user=user, token_name=token_name,
                               token_value=settings.token_secret, verify_ssl=verify_target(settings.ca_file),
                               timeout=settings.timeout_s, path_prefix=parts.path.strip("/") or None,
                               backend="https", service="PVE")
        self._address_allowed = False  # checked against HOMELAB_ALLOWED_NETWORKS before the first request

    def __repr__(self) -> str:
        return f"ProxmoxSnapshots(url={self.settings.url!r}, token_id={self.settings.token_id!r})"

    def mask(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret and len(self._secret) >= 3 else text

    # ----------------------------------------------------------------- public

    def list(self, vm: VmRef) -> list[dict]:
        """Proxmox's snapshot list of the guest, without the ``current`` pseudo-entry."""
        op = _Op(self, "list snapshots", vm)
        data = self._call(op, "GET", self._guest(vm).snapshot)
        if not isinstance(data, list):
            raise op.fail(f"unexpected answer {str(data)[:200]!r}",
                          hint="check that the URL points at the Proxmox API (no proxy page in between)")
        return [dict(s) for s in data if isinstance(s, dict) and s.get("name") != "current"]

    def create(self, vm: VmRef, name: str, *, vmstate: bool = False, description: str = "") -> None:
        """Take snapshot ``name``; with ``vmstate`` (qemu only) the RAM of a running VM is saved too."""
        op = _Op(self, "create", vm, name)
        self._check_name(op, name)
        if vmstate and vm.kind != "qemu":
            raise op.fail("vmstate is only for qemu VMs; containers have no RAM snapshot",
                          hint="call create without vmstate for a container")
        data: dict[str, Any] = {"snapname": name}
        if vmstate:
            data["vmstate"] = 1
        if description:
            data["description"] = description
        self._run_task(op, self._guest(vm).snapshot, data)

    def rollback(self, vm: VmRef, name: str, *, start: bool = False) -> None:
        """Roll the guest back to ``name``. Proxmox stops it first; it comes back running only if the
        snapshot holds the VM state, or with ``start=True``."""
        op = _Op(self, "roll back to", vm, name)
        self._check_name(op, name)
        self._run_task(op, self._guest(vm).snapshot(name).rollback, {"start": 1} if start else {}, method="POST")

    def delete(self, vm: VmRef, name: str) -> None:
        """Delete snapshot ``name``; refuses any snapshot this module did not make."""
        op = _Op(self, "delete", vm, name)
        if not is_ours(name):
            raise op.fail(f"refusing: {name!r} was not made by the orchestrator",
                          hint=f"only snapshots named like {PREFIX}<yyyymmddThhmm>-<phase>-<run> are deleted "
                               "here; delete others by hand in Proxmox")
        self._run_task(op, self._guest(vm).snapshot(name), {}, method="DELETE")

    def prune(self, vm: VmRef, keep: int) -> list[str]:
        """Delete the oldest of our snapshots beyond the newest ``keep``; never any other. Returns
        the names deleted, oldest first. On a failure the SnapshotError's ``deleted`` lists those
        already gone."""
        if keep < 0:
            raise ValueError(f"prune keep must be >= 0, not {keep}")
        ours = sorted((s for s in self.list(vm) if is_ours(str(s.get("name", "")))), key=age_key)
        doomed = [str(s["name"]) for s in ours[: max(0, len(ours) - keep)]]
        deleted: list[str] = []
        for name in doomed:
            try:
                self.delete(vm, name)
            except SnapshotError as exc:
                exc.deleted = list(deleted)
                raise
            deleted.append(name)
        if deleted:
            log.info("proxmox %s: pruned %d snapshot(s), kept %d: %s", vm, len(deleted), keep, ", ".join(deleted))
        return deleted

    # ----------------------------------------------------------------- plumbing

    def _guest(self, vm: VmRef) -> Any:
        return self._api.nodes(vm.node)(vm.kind)(vm.vmid)

    @staticmethod
    def _check_name(op: _Op, name: str) -> None:
        if not valid_name(name):
            raise op.fail(f"{name!r} is not a valid Proxmox snapshot name",
                          hint="use a letter first, then letters, digits, '_' or '-', at most 40 characters "
                               "(see snapshot_name)")

    def _run_task(self, op: _Op, resource: Any, data: dict[str, Any], method: str = "POST") -> None:
        started = time.monotonic()
        upid = self._call(op, method, resource, **data)
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            raise op.fail(f"Proxmox answered {str(upid)[:200]!r} instead of a task id",
                          hint="check that the URL points at the Proxmox API (no proxy page in between)")
        self._wait(op, upid)
        log.info("proxmox %s: %s%s done in %.1fs", op.vm, op.action,
                 f" snapshot {op.snapshot}" if op.snapshot else "", time.monotonic() - started)

    def _wait(self, op: _Op, upid: str) -> None:
        """Poll the task until it has stopped; its exitstatus must be exactly 'OK'."""
        s = self.settings
        node = upid.split(":")[1] or op.vm.node  # the task runs on the node its UPID names
        task = self._api.nodes(node).tasks(upid)
        deadline = time.monotonic() + s.task_timeout_s
        while True:
            status = self._call(op, "GET", task.status)
            if not isinstance(status, dict):
                raise op.fail(f"unexpected task status {str(status)[:200]!r} for {upid}", upid=upid,
                              hint="check that the URL points at the Proxmox API (no proxy page in between)")
            if status.get("status") == "stopped":
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise op.fail(f"task {upid} still running after {s.task_timeout_s:g}s", upid=upid,
                              hint=f"it goes on in Proxmox and keeps {op.vm.vmid} locked: watch it in the task "
                                   f"list of {node} and start nothing on the guest until it ends (or stop it "
                                   "there); raise task_timeout_s if such tasks are normally this slow")
            time.sleep(min(s.poll_interval_s, remaining))
        exitstatus = status.get("exitstatus")
        if exitstatus != "OK":
            tail = self._log_tail(task, exitstatus)
            detail = ("\n  task log:\n    " + "\n    ".join(tail)) if tail else ""
            raise op.fail(f"task ended with exitstatus {exitstatus!r} ({upid})", upid=upid,
                          exitstatus=str(exitstatus), detail=detail,
                          hint=hint_for(str(exitstatus), op.vm, token_id=s.token_id))

    def _log_tail(self, task: Any, exitstatus: object) -> list[str]:
        """The last lines of a task's log, best effort: [] when it cannot be read."""
        try:
            lines = task.log.get(start=0, limit=5000)
        except (ResourceException, requests.RequestException):
            return []
        texts = [str(line.get("t", "")) for line in lines or [] if isinstance(line, dict)]
        texts = [t for t in texts if t and t not in (str(exitstatus), f"TASK ERROR: {exitstatus}")]
        return [self.mask(t) for t in texts[-LOG_TAIL_LINES:]]

    def _call(self, op: _Op, method: str, resource: Any, **params: Any) -> Any:
        """One HTTP request. Reads are retried on 5xx and dropped connections; writes are not."""
        self._check_address(op)
        send: Callable[..., Any] = getattr(resource, method.lower())
        read = method == "GET"
        attempts = 1 + (READ_RETRIES if read else 0)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                return send(**params)
            except ResourceException as exc:
                if read and exc.status_code >= 500 and not last:
                    self._backoff(op, attempt, f"HTTP {exc.status_code}")
                    continue
                raise self._http_error(op, exc, read) from None
            except requests.exceptions.SSLError as exc:
                raise op.fail(f"TLS verification of {self.settings.url} failed: {_reason(exc)}",
                              hint=self._tls_hint()) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if read and not last:
                    self._backoff(op, attempt, type(exc).__name__)
                    continue
                raise self._connection_error(op, exc, read) from None
            except requests.RequestException as exc:
                raise op.fail(f"request failed: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def _check_address(self, op: _Op) -> None:
        """Refuse, before the first packet, a Proxmox API whose address (or any address its name
        resolves to) lies outside HOMELAB_ALLOWED_NETWORKS: a rollback reverts real VMs."""
        if self._address_allowed:
            return
        try:
            check_url_allowed("Proxmox", self.settings.url)
        except AddressNotAllowed as exc:
            raise op.fail(f"refused before connecting: {exc}",
                          hint=f"nothing was sent; point PROXMOX_URL (or the 'Homelab Proxmox Access' block) at a "
                               f"Proxmox inside {ALLOWED_NETWORKS_ENV}, or add its network there") from None
        self._address_allowed = True

    def _backoff(self, op: _Op, attempt: int, why: str) -> None:
        log.warning("proxmox %s: %s: %s, retrying (%d/%d)", op.vm, op.action, why, attempt, READ_RETRIES)
        time.sleep(RETRY_DELAY_S * attempt)

    def _http_error(self, op: _Op, exc: ResourceException, read: bool) -> SnapshotError:
        message = str(exc.content or exc.status_message or "").strip()
        errors = exc.errors
        if errors and not (isinstance(errors, dict) and set(errors) == {"errors"}):
            message += f" {errors}"
        cause = f"HTTP {exc.status_code}: {message}" if message else f"HTTP {exc.status_code}"
        if read and exc.status_code >= 500:
            cause += f" (after {1 + READ_RETRIES} tries)"
        return op.fail(cause, http_status=exc.status_code)

    def _connection_error(self, op: _Op, exc: Exception, read: bool) -> SnapshotError:
        s = self.settings
        reason = _reason(exc)
        refused = _never_sent(exc)
        if isinstance(exc, requests.exceptions.Timeout) and not isinstance(exc, requests.exceptions.ConnectTimeout):
            reason = f"no answer within {s.timeout_s:g}s"
        if read:
            cause = f"cannot reach {s.url}: {reason} (after {1 + READ_RETRIES} tries)"
            hint = "check that the URL is right, pveproxy runs on the node and the network allows it, then retry"
        elif refused:
            cause = f"cannot reach {s.url}: {reason}"
            hint = ("nothing was changed; check that the URL is right, pveproxy runs on the node and the "
                    "network allows it, then retry")
        else:
            cause = f"connection to {s.url} failed during the request: {reason}"
            hint = (f"the request may or may not have reached Proxmox, so it was not retried: check the "
                    f"snapshots and the task list of {op.vm} before trying again")
        return op.fail(cause, hint=hint)

    def _tls_hint(self) -> str:
        return tls_hint(self.settings.url, self.settings.ca_file)


def _never_sent(exc: BaseException) -> bool:
    """True when the connection could not even be opened, so the request cannot have been acted on."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _reason(exc: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 error, on one line."""
    text = reason_text(exc) or type(innermost(exc)).__name__
    return " ".join(text.split())[:300]
