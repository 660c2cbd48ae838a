"""The wire between the orchestrator and a worker host, and the host's local transport: both
run for real (Fernet, pickle, sh), nothing stands in."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from model.errors import RemoteCommandError, RemoteTimeout
from model.releases import ReleaseRecord
from model.work_pools import host_pools, worker_name, worker_version
from tasks.engine.code_version import code_version
from tasks.engine.local_transport import LocalTransport
from tasks.engine.transport import CommandResult
from tasks.engine.undo import RollbackJournal
from tasks.engine.worker_wire import WireError, new_key, open_order, open_reply, seal


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/homelab-wire-pwned",))


def test_a_reply_round_trips_the_engine_values_and_the_secret_is_not_readable() -> None:
    key = new_key()
    journal = RollbackJournal()
    journal.note("vps", "web", "rolled back to r1")
    result = CommandResult(host="vps", command="true", exit_status=0, stdout="hunter2-secret", stderr="",
                           duration_s=0.1)
    token = seal(("ok", (result, journal)), key)
    assert "hunter2" not in token
    assert open_reply(token, key) == ("ok", (result, journal))


def test_a_reply_cannot_run_code_or_build_arbitrary_classes_on_the_orchestrator() -> None:
    key = new_key()
    with pytest.raises(WireError, match=r"may not build posix\.system"):
        open_reply(seal(_RunsCode(), key), key)
    with pytest.raises(WireError, match=r"subprocess\.Popen"):
        open_reply(seal(subprocess.Popen, key), key)
    assert not os.path.exists("/tmp/homelab-wire-pwned")


def test_a_message_sealed_with_another_key_or_tampered_with_is_refused() -> None:
    key = new_key()
    with pytest.raises(WireError, match="did not seal"):
        open_order(seal("order", new_key()), key)
    token = seal("order", key)
    with pytest.raises(WireError, match="did not seal"):
        open_order(token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"), key)


def test_an_order_carries_whole_values() -> None:
    key = new_key()
    record = ReleaseRecord(id="r1", stack="web", host="vps", commit="abc", config_hash="h", images={},
                           created_at="2026-12-06T00:00:00+00:00", flow_run_id=None, status="active", source="s")
    assert open_order(seal({"record": record}, key), key) == {"record": record}


def test_the_local_transport_keeps_the_ssh_guards() -> None:
    async def go() -> None:
        here = LocalTransport("vps")
        done = await here.run(["sh", "-c", 'cat; echo "$0" >&2', "named"], input=b"from stdin")
        assert (done.stdout, done.stderr.strip(), done.exit_status) == ("from stdin", "named", 0)
        with pytest.raises(RemoteCommandError, match=r"exit 3|exited with 3"):
            await here.run(["sh", "-c", "exit 3"])
        assert (await here.run(["sh", "-c", "exit 3"], check=False)).exit_status == 3
        with pytest.raises(RemoteTimeout):
            await here.run(["sleep", "5"], timeout=0.5)

    asyncio.run(go())


def test_pools_and_worker_names(tmp_path) -> None:
    from model.inventory_loader import load_inventory

    inventory = tmp_path / "homelab.yaml"
    inventory.write_text("hosts:\n  vps: {address: 10.203.0.11, dispatch: worker}\n"
                         "  rtx1080: {address: 10.203.0.13, gpu: true}\nphases: {}\n")
    pools = host_pools(load_inventory(inventory))
    assert [(p.name, p.tags) for p in pools] == [("vps", ()), ("rtx1080-gpu", ("gpu",))]
    name = worker_name("vps", code_version())
    assert worker_version(name) == code_version() and code_version().startswith("0.")
    assert worker_version("someone-elses-worker") is None
