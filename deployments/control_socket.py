"""The local socket of ``homelab serve``, and the client side the CLI uses to hand it work.

Only the standard library: the CLI talks through this without importing Prefect or asyncssh.
The socket lies in a 0700 directory, is itself 0600, and the server also checks the peer's
uid (SO_PEERCRED), so only the user that runs ``homelab serve`` can use it.

Wire format: one JSON object per line. The client sends one request
``{"command": "deploy"|"plan"|"status"|"hello", "inventory": PATH, "params": {...}, "verbose": bool}``;
the server answers with any number of ``{"progress": {...}}`` and ``{"log": "..."}`` lines,
then one ``{"done": {...}}`` line (see ``deployments.flow_calls.Outcome``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from deployments.server import state_dir

CONNECT_TIMEOUT_S = 0.5
MAX_LINE = 64 * 1024 * 1024


def socket_dir() -> Path:
    path = state_dir() / "serve"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, and an old dir may be wider
    return path


def socket_path() -> Path:
    return socket_dir() / "control.sock"


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process on the other end of a unix socket (Linux SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def encode(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


class ControlClient:
    """One request to the control process, answered as a stream of lines."""

    def __init__(self, sock: socket.socket, hello: dict):
        self.sock = sock
        self.hello = hello

    def call(self, command: str, inventory: Path, params: dict, *, verbose: bool = False,
             on_progress: Callable[[dict], None] | None = None,
             on_log: Callable[[str], None] | None = None) -> dict:
        """Send the request; feed progress and log lines to the callbacks; return ``done``."""
        self.sock.sendall(encode({"command": command, "inventory": str(inventory), "params": params,
                                  "verbose": verbose}))
        for message in _lines(self.sock):
            if "done" in message:
                return message["done"]
            if "progress" in message and on_progress:
                on_progress(message["progress"])
            elif "log" in message and on_log:
                on_log(message["log"])
            elif "notice" in message and on_log:  # always shown, even without --verbose
                on_log(message["notice"])
        raise ConnectionError("the control process closed the connection before the run ended "
                              "(was `homelab serve` stopped?); the run's state is in the Prefect UI")

    def close(self) -> None:
        self.sock.close()


def _lines(sock: socket.socket) -> Iterator[dict]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        if len(buffer) > MAX_LINE:
            raise ConnectionError("the control process sent an oversized message")
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def _greet(path: Path | None) -> tuple[socket.socket, dict] | None:
    """The socket and the control process's hello; None when none runs (or the file is stale)."""
    path = path or state_dir() / "serve" / "control.sock"
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(str(path))
        sock.sendall(encode({"command": "hello"}))
        return sock, next(_lines(sock), {}).get("done", {})
    except (OSError, ValueError, StopIteration):
        sock.close()
        return None


def served_inventory(path: Path | None = None) -> Path | None:
    """The inventory the local control process serves, or None when none runs."""
    greeted = _greet(path)
    if greeted is None:
        return None
    greeted[0].close()
    return Path(greeted[1].get("inventory", "")).resolve()


def connect(inventory: Path, path: Path | None = None) -> ControlClient | None:
    """A client of the running control process if it serves this inventory, else None (the
    CLI then runs the work itself). A stale socket file or a dead process also gives None."""
    greeted = _greet(path)
    if greeted is None:
        return None
    sock, hello = greeted
    if Path(hello.get("inventory", "")).resolve() != inventory.expanduser().resolve():
        sock.close()
        return None
    sock.settimeout(None)  # a deploy takes as long as it takes
    return ControlClient(sock, hello)


@contextlib.contextmanager
def connected(inventory: Path) -> Iterator[ControlClient | None]:
    client = connect(inventory)
    try:
        yield client
    finally:
        if client:
            client.close()
