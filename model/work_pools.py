"""Which Prefect work pool serves each host: one process pool per host, named after it; a GPU
host's pool is ``<host>-gpu`` and tagged ``gpu``, so GPU work can be aimed at it. Pure: the
pools are derived from the inventory, never stored beside it."""

from __future__ import annotations

from dataclasses import dataclass

from model.inventory import Host, Inventory

POOL_TYPE = "process"  # Prefect's own process worker runs the host's steps on the host


@dataclass(frozen=True)
class HostPool:
    name: str
    host: str
    tags: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        gpu = " (GPU)" if "gpu" in self.tags else ""
        return f"homelab steps on {self.host}{gpu}: its worker pulls them and runs them there"


def host_pool(name: str, host: Host) -> HostPool:
    if host.gpu:
        return HostPool(name=f"{name}-gpu", host=name, tags=("gpu",))
    return HostPool(name=name, host=name)


def host_pools(inventory: Inventory) -> list[HostPool]:
    """One pool per host, in inventory order."""
    return [host_pool(name, host) for name, host in inventory.hosts.items()]


def worker_name(host: str, version: str) -> str:
    """The open-source server keeps no worker metadata, so the version travels in the name."""
    return f"{host}@{version}"


def worker_version(name: str) -> str | None:
    return name.split("@", 1)[1] if "@" in name else None
