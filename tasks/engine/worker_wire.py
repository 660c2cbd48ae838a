"""What the orchestrator and a host's worker say to each other through Prefect (flow run
inputs): sealed with the host's own key (Fernet: encrypted and authenticated), because the
orders carry rendered secrets and the Prefect database must never hold them readable.

Orders (orchestrator -> host) are whole Python values: the host runs the orchestrator's code
anyway. Replies (host -> orchestrator) are read with an unpickler that builds only plain data
and this project's own record classes, so a compromised host cannot run code on the
orchestrator through a reply.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from model.errors import HomelabError

FLOW_NAME = "host-steps"  # the flow a worker host runs a deploy's steps in
ORDER_PREFIX = "o-"  # input keys on the host's run: orders
KEY_ENV = "HOMELAB_WORKER_KEY"  # on the host: its worker's key
KEYS_DIR_ENV = "HOMELAB_WORKER_KEYS"  # on the orchestrator: a folder of <host>.key files

_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "str", "bytes", "int", "float", "bool", "complex"}
_SAFE_MODULE_PREFIXES = ("model.", "tasks.engine.report", "tasks.engine.health", "tasks.engine.hooks",
                         "tasks.engine.transport", "tasks.engine.image_refresh", "tasks.engine.smoke",
                         "tasks.engine.undo", "tasks.host_commands.")
_SAFE_OTHERS = {("datetime", "datetime"), ("datetime", "timezone"), ("datetime", "timedelta"),
                ("collections", "OrderedDict"), ("collections", "defaultdict"), ("copyreg", "_reconstructor")}


class WireError(HomelabError):
    pass


def deployment_name(host: str) -> str:
    return f"{FLOW_NAME}/{host}"


def reply_prefix(host: str) -> str:
    """Input keys on the deploy's run: the host's replies."""
    return f"r-{host}-"


def new_key() -> bytes:
    return Fernet.generate_key()


def keys_dir(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    if environ.get(KEYS_DIR_ENV):
        return Path(environ[KEYS_DIR_ENV])
    state = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local/state")
    return state / "homelab" / "worker-keys"


def key_file(host: str) -> Path:
    return keys_dir() / f"{host}.key"


def read_key(host: str) -> bytes:
    path = key_file(host)
    try:
        return path.read_bytes().strip()
    except OSError:
        raise WireError(f"{host}: no worker key at {path}; run `homelab worker install --host {host}`") from None


def seal(value: Any, key: bytes) -> str:
    return Fernet(key).encrypt(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()


def _decrypt(token: str, key: bytes) -> bytes:
    try:
        return Fernet(key).decrypt(token.encode())
    except (InvalidToken, ValueError):
        raise WireError("a message that this key did not seal (wrong key, or tampered with)") from None


def open_order(token: str, key: bytes) -> Any:
    """On the host: an order from the orchestrator."""
    return pickle.loads(_decrypt(token, key))


class _ReplyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _SAFE_BUILTINS) or (module, name) in _SAFE_OTHERS \
                or module.startswith(_SAFE_MODULE_PREFIXES):
            found = super().find_class(module, name)
            if isinstance(found, type) or (module, name) in _SAFE_OTHERS:
                return found
        raise WireError(f"a worker's reply may not build {module}.{name}")


def open_reply(token: str, key: bytes) -> Any:
    """On the orchestrator: a reply from a host."""
    return _ReplyUnpickler(io.BytesIO(_decrypt(token, key))).load()
