"""Proxmox VM snapshots around a deploy: take one before a phase, roll back to it, prune old ones.

- Synchronous (proxmoxer + requests); async callers wrap each call in ``asyncio.to_thread``.
- API-token auth only, TLS always verified: against ``ca_file`` when given, else the system CA store.
- Every call that starts a Proxmox task (UPID) waits for it: ``status == "stopped"`` and
  ``exitstatus == "OK"`` exactly, within ``task_timeout_s``. Anything else is a ``SnapshotError``.
- Reads (snapshot list, task status) are retried a couple of times on 5xx or a dropped
  connection; writes (create, rollback, delete) are sent once and never retried blindly.
- The token secret never appears in a log line, an exception or a repr.
- Snapshots made here carry ``PREFIX`` and a fixed layout (``is_ours``); ``delete`` and ``prune``
  refuse to touch any other snapshot.

Does not import Prefect; the Block that holds the settings lives in ``blocks/proxmox.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from proxmoxer import ProxmoxAPI, ResourceException

from tasks.errors import HomelabError
from tasks.tls import verify_target

log = logging.getLogger("homelab.snapshots")

PREFIX = "homelab-"
MAX_NAME = 40  # Proxmox's limit for a snapshot name
KINDS = ("qemu", "lxc")

# Reads are retried this many times after the first try, on 5xx or a dropped connection.
READ_RETRIES = 2
RETRY_DELAY_S = 0.2
LOG_TAIL_LINES = 6

_PVE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_STAMP = "%Y%m%dT%H%M"
_OURS = re.compile(re.escape(PREFIX) + r"\d{8}T\d{4}-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ProxmoxSettings:
    url: str  # "https://pve.example:8006"; host, port and an optional path prefix are taken from it
    token_id: str  # "user@realm!tokenname"
    token_secret: str = field(repr=False)
    ca_file: str | None  # CA bundle that verifies the server; None: the system CA store
    timeout_s: float = 30  # per HTTP request
    task_timeout_s: float = 600  # longest wait for one Proxmox task (UPID)
    poll_interval_s: float = 0.5


@dataclass(frozen=True)
class VmRef:
    node: str
    vmid: int
    kind: str = "qemu"  # or "lxc"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"VmRef.kind must be one of {KINDS}, not {self.kind!r}")
        if not self.node:
            raise ValueError("VmRef.node must not be empty")

    def __str__(self) -> str:
        return f"{self.node}/{self.kind}/{self.vmid}"

    @property
    def tool(self) -> str:
        """The node-side CLI for this guest (``qm`` or ``pct``), for hints."""
        return "qm" if self.kind == "qemu" else "pct"


class SnapshotError(HomelabError):
    """A snapshot call failed. Names the Proxmox URL, node/kind/vmid, the snapshot, the cause and
    what to do next; never the token secret."""

    def __init__(self, message: str, *, vm: VmRef | None = None, snapshot: str | None = None,
                 cause: str = "", http_status: int | None = None, upid: str | None = None,
                 exitstatus: str | None = None):
        self.vm = vm
        self.node = vm.node if vm else None
        self.vmid = vm.vmid if vm else None
        self.snapshot = snapshot
        self.cause = cause
        self.http_status = http_status
        self.upid = upid
        self.exitstatus = exitstatus
        self.deleted: list[str] = []  # set by prune: what it deleted before this failure
        super().__init__(message)


# --------------------------------------------------------------------------- names (pure)


def _run_tag(flow_run_id: str) -> str:
    """8 hex characters naming the run: the start of its UUID, or a hash of any other id."""
    try:
        return uuid.UUID(flow_run_id).hex[:8]
    except ValueError:
        return hashlib.sha256(flow_run_id.encode()).hexdigest()[:8]


def snapshot_name(flow_run_id: str, phase: str, now: datetime | None = None) -> str:
    """``homelab-<UTC yyyymmddThhmm>-<phase>-<run>``, e.g. ``homelab-20261127T0102-core-1a2b3c4d``.

    A valid Proxmox name (a letter first, ``[A-Za-z0-9_-]``, at most 40 characters) that sorts by
    time. The phase is lower-cased, reduced to ``[a-z0-9-]`` and cut to fit; the run is the first
    8 hex digits of the flow run's UUID (a hash for any other id). A naive ``now`` is taken as UTC.
    """
    if not flow_run_id:
        raise ValueError("snapshot_name needs a flow run id")
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.astimezone(UTC).strftime(_STAMP)
    run = _run_tag(flow_run_id)
    room = MAX_NAME - len(PREFIX) - len(stamp) - len(run) - 2
    slug = re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-")[:room].strip("-") or "phase"
    return f"{PREFIX}{stamp}-{slug}-{run}"


def is_ours(name: str) -> bool:
    """True only for names ``snapshot_name`` makes; a hand-made ``homelab-before-upgrade`` is not ours."""
    return len(name) <= MAX_NAME and _OURS.fullmatch(name) is not None


def _age_key(snapshot: Mapping[str, Any]) -> tuple[int, str]:
    """Oldest first: Proxmox's snaptime (seconds), then the name (its minute stamp, then the rest)."""
    try:
        snaptime = int(snapshot.get("snaptime") or 0)
    except (TypeError, ValueError):
        snaptime = 0
    return snaptime, str(snapshot.get("name", ""))


def settings_from_env(env: Mapping[str, str] = os.environ) -> ProxmoxSettings | None:
    """Settings from PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET and PROXMOX_CA_FILE.

    None when PROXMOX_URL is unset or empty (snapshots are off). Raises SnapshotError, naming the
    missing variables, when the URL is set without a token.
    """
    url = env.get("PROXMOX_URL", "").strip()
    if not url:
        return None
    missing = [name for name in ("PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET") if not env.get(name)]
    if missing:
        raise SnapshotError(f"PROXMOX_URL is set ({url}) but {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not; set "
                            f"{'it' if len(missing) == 1 else 'them'} to an API token "
                            "(user@realm!name and its secret), or unset PROXMOX_URL to turn snapshots off")
    return ProxmoxSettings(url=url, token_id=env["PROXMOX_TOKEN_ID"].strip(),
                           token_secret=env["PROXMOX_TOKEN_SECRET"], ca_file=env.get("PROXMOX_CA_FILE") or None)


# --------------------------------------------------------------------------- hints (pure)


def hint_for(cause: str, vm: VmRef | None, *, http_status: int | None = None, token_id: str = "") -> str:
    """What to do next, for a Proxmox error message or task exit status."""
    low = cause.lower()
    where = f"{vm.vmid}" if vm else "<vmid>"
    node = vm.node if vm else "the node"
    tool = vm.tool if vm else "qm"
    if "is locked" in low:
        return (f"another snapshot, rollback, backup or migration holds the lock on {where}: wait for it to "
                f"finish (Proxmox task list of {node}); if none is running, the lock is stale: clear it with "
                f"`{tool} unlock {where}` on {node}, then retry")
    if "can't lock file" in low or "got timeout" in low:
        return f"another task is changing the configuration of {where}; retry when it has finished"
    if "already used" in low or "already exists" in low:
        return "a snapshot with this name exists already; delete it or use another name"
    if "snapshot feature is not available" in low:
        return (f"a disk of {where} is on storage that cannot snapshot (e.g. raw on a directory): "
                "move it to LVM-thin, ZFS, Ceph or qcow2")
    if "does not exist" in low and "snapshot" in low:
        return f"list the snapshots of {where} and use one of those names"
    if "does not exist" in low or "unable to find configuration file" in low:
        return f"check the node and vmid of the guest: {where} is not on {node} (was it migrated?)"
    if "quorum" in low:
        return "the Proxmox cluster has lost quorum; restore quorum (pvecm status), then retry"
    if "no route to host" in low or http_status in (595, 596):
        return f"node {node} is offline or unreachable from the API node; check the cluster, then retry"
    if http_status == 401:
        return (f"Proxmox rejected API token {token_id!r}: check that the token id and secret "
                "(PROXMOX_TOKEN_ID / PROXMOX_TOKEN_SECRET or the 'Homelab Proxmox Access' block) match a "
                "token that exists and has not expired (Datacenter > Permissions > API Tokens)")
    if http_status == 403:
        return (f"grant token {token_id!r} VM.Snapshot (and VM.Snapshot.Rollback for rollbacks, VM.Audit "
                f"to list) on /vms/{where}; a token with privilege separation needs its own ACL entry")
    if http_status == 400:
        return "Proxmox rejected a parameter; this is a bug in the caller, please report it"
    if low.startswith("warnings"):
        return "the task finished with warnings; read its log on the node and decide whether to go on"
    if http_status is not None and http_status >= 500:
        return "Proxmox failed to serve the request; read the journal of pveproxy/pvedaemon on the node, then retry"
    return "read the task log in the Proxmox UI, fix the cause, then retry"


# --------------------------------------------------------------------------- client


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
        ours = sorted((s for s in self.list(vm) if is_ours(str(s.get("name", "")))), key=_age_key)
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
        if len(name) > MAX_NAME or not _PVE_NAME.fullmatch(name) or name.lower() in ("current", "pending"):
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
        if self.settings.ca_file:
            return (f"the certificate of {self.settings.url} is not signed by the CA in {self.settings.ca_file} "
                    "(or does not name this host): point ca_file/PROXMOX_CA_FILE at the cluster's CA "
                    "(/etc/pve/pve-root-ca.pem on a node); never turn verification off")
        return ("the certificate is not trusted by the system CA store: set ca_file/PROXMOX_CA_FILE to the "
                "cluster's CA (/etc/pve/pve-root-ca.pem on a node); never turn verification off")


def _never_sent(exc: BaseException) -> bool:
    """True when the connection could not even be opened, so the request cannot have been acted on."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _reason(exc: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 error, on one line."""
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    text = str(reason if isinstance(reason, BaseException) else inner) or type(inner).__name__
    return " ".join(text.split())[:300]
