"""Vault / OpenBao (KV v2): settings, errors, hints, the env-file renderer and the client."""
