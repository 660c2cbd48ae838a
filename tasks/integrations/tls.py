"""Which CA bundle an HTTPS client (requests: hvac, proxmoxer) verifies a homelab server against."""

from __future__ import annotations

import os
import ssl


def verify_target(ca_file: str | None) -> str | bool:
    """The given CA file, or else the system CA store.

    requests on its own would use certifi's bundle, not the system store where a homelab
    usually installs its own root CA; so the system paths are taken from OpenSSL.
    """
    if ca_file:
        return ca_file
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.capath):
        if candidate and os.path.exists(candidate):
            return candidate
    return True
