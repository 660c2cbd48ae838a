"""What to do next after a Proxmox error or task failure (pure)."""

from __future__ import annotations

from tasks.integrations.proxmox.vm import VmRef
from tasks.integrations.tls import untrusted_hint

BLOCK_NAME = "Homelab Proxmox Access"


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


def tls_hint(url: str, ca_file: str | None) -> str:
    return untrusted_hint(url, ca_file, ca_setting="ca_file/PROXMOX_CA_FILE", plain_tls=False,
                          which_ca="the cluster's CA (/etc/pve/pve-root-ca.pem on a node)")
