"""A local Prefect server (SQLite, 127.0.0.1:4200, analytics off) that keeps run history.

Ephemeral mode would start a throw-away server per process and lose the history, so
``homelab deploy`` starts this one when ``PREFECT_API_URL`` is unset.

Prefect OSS has no API auth by default, and whoever can create a run can start a deploy. So a
server that listens beyond loopback always gets ``PREFECT_SERVER_API_AUTH_STRING``: the
operator's, or one generated into ``$HOMELAB_HOME/prefect-auth`` (0600), which this tool's
clients then send as ``PREFECT_API_AUTH_STRING``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
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


SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def api_url_for(host: str, port: int) -> str:
    """Where this machine reaches a server listening on ``host``: a wildcard is reached on loopback."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reach if ':' not in reach else f'[{reach}]'}:{port}/api"


def auth_file() -> Path:
    return state_dir() / "prefect-auth"


def auth_string(environ: Mapping[str, str] = os.environ) -> str:
    """The server's auth string ("user:password"): the operator's, else the one kept in
    ``auth_file()``, created (0600) on first use."""
    given = environ.get(SERVER_AUTH_ENV) or environ.get(CLIENT_AUTH_ENV)
    if given:
        return given
    path = auth_file()
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"homelab:{secrets.token_urlsafe(24)}\n")
    return path.read_text().strip()


DATABASE_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"  # Prefect's own setting, read by the server
DATABASE_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")


def check_database_url(url: str) -> str:
    """The server's database URL, or a clear error (without the URL: it may hold a password)."""
    if not url.startswith(DATABASE_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        raise ServerError(f"the server's database URL must start with {' or '.join(DATABASE_SCHEMES)} "
                          f"(got {scheme}); e.g. postgresql+asyncpg://prefect:PASSWORD@127.0.0.1:5432/prefect")
    return url


def server_env(host: str, environ: Mapping[str, str] = os.environ, database: str | None = None) -> dict[str, str]:
    """The server process's environment: quiet, no client URL, an auth string unless it
    listens on loopback only, and ``database`` (default: Prefect's SQLite in PREFECT_HOME)."""
    env = {**environ, **QUIET_ENV}
    env.pop("PREFECT_API_URL", None)
    if database:
        env[DATABASE_ENV] = check_database_url(database)
    if not is_loopback(host):
        env[SERVER_AUTH_ENV] = auth_string(environ)
    return env


def up(timeout_s: float = 90, host: str = HOST, port: int = PORT, database: str | None = None) -> str:
    """Start the server unless one already answers (whatever its database); returns the API
    URL. Beyond loopback it requires an auth string, which this process then uses as a client
    too. ``database``: a PostgreSQL URL for a server that outgrew SQLite (README "Scale")."""
    url = api_url_for(host, port)
    env = server_env(host, database=database)
    if SERVER_AUTH_ENV in env:
        os.environ.setdefault(CLIENT_AUTH_ENV, env[SERVER_AUTH_ENV])
    if healthy(url):
        return url
    log = state_dir() / "prefect-server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    (state_dir() / "prefect-server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(url):
            return url
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
    if CLIENT_AUTH_ENV not in os.environ and auth_file().exists():
        os.environ[CLIENT_AUTH_ENV] = auth_file().read_text().strip()  # the local server was started with it
    return url
