"""The one error type of the Proxmox integration."""

from __future__ import annotations

from model.errors import HomelabError
from tasks.integrations.proxmox.vm import VmRef


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
