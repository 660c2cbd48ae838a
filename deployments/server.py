"""A local Prefect server (SQLite, 127.0.0.1:4200, analytics off) that keeps run history.

Ephemeral mode would start a throw-away server per process and lose the history, so
``homelab deploy`` starts this one when ``PREFECT_API_URL`` is unset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from model.errors import ServerError

HOST, PORT = "127.0.0.1", 4200
API_URL = f"http://{HOST}:{PORT}/api"
UI_URL = f"http://{HOST}:{PORT}"
QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def state_dir() -> Path:
    path = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def healthy(api_url: str = API_URL, timeout: float = 1.0) -> bool:
    import urllib.error  # not at import: the warm-path CLI never needs it
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def up(timeout_s: float = 90) -> str:
    """Start the server unless one already answers; returns the API URL."""
    if healthy():
        return API_URL
    log = state_dir() / "prefect-server.log"
    env = {**os.environ, **QUIET_ENV}
    env.pop("PREFECT_API_URL", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(PORT)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    (state_dir() / "prefect-server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy():
            return API_URL
        if process.poll() is not None:
            raise ServerError(f"the Prefect server exited with {process.returncode}; see {log}")
        time.sleep(0.3)
    raise ServerError(f"the Prefect server did not become healthy within {timeout_s:g}s; see {log}")


def down() -> bool:
    """Stop the server this tool started; True if one was running."""
    pid_file = state_dir() / "prefect-server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def ensure_api() -> str:
    """Point this process at a Prefect API, starting the local server if none is configured.
    Must run before Prefect is imported, which reads its settings once."""
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        url = up()
        os.environ["PREFECT_API_URL"] = url
    return url
