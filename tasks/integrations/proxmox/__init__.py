"""Proxmox VE snapshots of the hosts' VMs: settings, names, errors, hints and the client."""
