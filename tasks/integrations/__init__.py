"""Integrations: Vault (KV v2 through hvac) and Proxmox (snapshots through proxmoxer).

Each is a small package of settings, errors, hints and a client. They know no hosts and no
Prefect; the Blocks in ``blocks/`` import their settings types, never the other way round.
"""
