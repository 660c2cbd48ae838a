"""The address of one Proxmox guest: node, kind and vmid."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("qemu", "lxc")


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
