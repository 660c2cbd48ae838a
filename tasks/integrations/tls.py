"""Which CA bundle an HTTPS client (requests: hvac, proxmoxer) verifies a homelab server against."""

from __future__ import annotations

import os
import ssl


def untrusted_hint(url: str, ca_file: str | None, *, ca_setting: str, which_ca: str, plain_tls: bool) -> str:
    """What to do when ``url``'s certificate did not verify: name the CA setting, never "turn it off".
    ``plain_tls``: the server may not speak TLS at all (worth saying when http:// is common)."""
    also = ", or the server does not speak TLS" if plain_tls else ""
    if ca_file:
        return (f"the certificate of {url} is not signed by the CA in {ca_file} (or does not name this host)"
                f"{also}: point {ca_setting} at {which_ca}; never turn verification off")
    return (f"the certificate is not trusted by the system CA store{also}: set {ca_setting} to {which_ca}; "
            "never turn verification off")


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
