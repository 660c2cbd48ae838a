"""Hermetic settings for every test, applied before Prefect is imported anywhere.

- Connections may only go to the lab subnet and loopback (HOMELAB_ALLOWED_NETWORKS).
- Prefect talks to a throw-away server on a free loopback port with its own PREFECT_HOME;
  the server itself is started only by tests that need it (fixture ``prefect_api``).
"""

from __future__ import annotations

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PREFECT_HOME = tempfile.mkdtemp(prefix="homelab-test-prefect-")
_PREFECT_PORT = _free_port()
os.environ.update({
    "HOMELAB_ALLOWED_NETWORKS": "10.203.0.0/24,127.0.0.0/8",
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
    "PREFECT_UI_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",  # the UI's own calls (browser tests)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "HOMELAB_HOME": os.path.join(_PREFECT_HOME, "homelab"),
    # the lab's trust file (lab/configrepo.py writes it beside the lab's config repo)
    "HOMELAB_TRUST_FILE": os.path.join(os.environ.get("HOMELAB_LAB_DIR", "/var/lib/homelab-lab"), "trust.yaml"),
})


pytest_plugins = ["tests.fixtures", "tests.openbao", "tests.integration.secretlab", "tests.prometheus"]
