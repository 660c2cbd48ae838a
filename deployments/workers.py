"""``homelab worker install|status``: each host's Prefect process worker, on its own pool.

Install is the one-time bootstrap over SSH (afterwards the host pulls its work): the
project's code at the orchestrator's version, a Python with Prefect, the env file with the
server URL, the auth string and the host's wire key (0600, from stdin), and a service: a
systemd unit where systemd runs the host, else a supervised process. Then the pool and the
host's ``host-steps`` deployment, and a wait for the worker's first heartbeat. Last, the
host's standby run (``worker_standby.py``): the standbys of the worker it replaced are
cancelled (its restart stopped them) and a new one is started at this version.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deployments import server
from model.desired import DesiredState
from model.errors import HomelabError, UsageError
from model.work_pools import POOL_TYPE, host_pool, host_pools, worker_name, worker_version
from model.work_pools import HostPool as WorkPool
from tasks.engine.code_version import ROOT, code_version, source_files
from tasks.engine.host_pool import HostPool, ssh_targets
from tasks.engine.worker_session import is_live, read_pool_workers
from tasks.engine.worker_standby import create_standby, retire_standbys
from tasks.engine.worker_wire import FLOW_NAME, KEY_ENV, key_file, new_key
from tasks.host_commands import worker as commands

ENTRYPOINT = "flows/host_steps.py:host_steps"
FIRST_HEARTBEAT_S = 90.0


@dataclass(frozen=True)
class WorkerRow:
    pool: str
    host: str
    dispatch: str
    worker: str | None
    status: str
    last_heartbeat: datetime | None
    version: str | None

    @property
    def current(self) -> bool:
        return self.version == code_version()

    def to_json(self) -> dict:
        return {"pool": self.pool, "host": self.host, "dispatch": self.dispatch, "worker": self.worker,
                "status": self.status, "version": self.version, "current": self.current,
                "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None}


def project_tarball(root: Path = ROOT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in source_files(root):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return out.getvalue()


def _key(host: str, renew: bool) -> bytes:
    path = key_file(host)
    if path.exists() and not renew:
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_key()
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    path.with_suffix(".tmp").replace(path)
    return key


async def install(desired: DesiredState, host: str, *, api_url: str, python: str | None = None,
                  renew_key: bool = False) -> WorkerRow:
    """Set up (or upgrade: same steps, the key kept) the worker of ``host``; returns it once it
    heartbeats."""
    inv = desired.inventory
    if host not in inv.hosts:
        raise UsageError(f"no host {host!r} in the inventory (hosts: {', '.join(inv.hosts)})")
    pool = host_pool(host, inv.hosts[host])
    name = worker_name(host, code_version())
    async with HostPool([t for t in ssh_targets(desired, all_hosts=True) if t.name == host]) as ssh:
        transport = ssh[host]
        home = (await transport.run(commands.absolute_dir("."))).stdout.strip()
        env = commands.worker_env(api_url, server.auth_string())
        env.update({KEY_ENV: _key(host, renew_key).decode(), "PYTHONPATH": commands.project_dir(home),
                    "PREFECT_HOME": f"{commands.worker_dir(home)}/prefect-home", **server.QUIET_ENV})
        await ensure_pool_and_deployment(pool, commands.project_dir(home))
        await transport.run(commands.write_env_file(home), input=commands.env_file_text(env).encode(),
                            quiet=True)
        await transport.run(commands.install_project(home), input=project_tarball(), timeout=120)
        if python is None:
            await transport.run(commands.create_venv(home), timeout=600)
            python = commands.venv_python(home)
        init = (await transport.run(commands.init_system())).stdout.strip()
        if init == "systemd":
            unit = commands.systemd_unit(pool=pool.name, name=name, python=python,
                                         project_dir=commands.project_dir(home),
                                         env_file=f"{commands.worker_dir(home)}/env")
            await transport.run(commands.install_unit(pool.name), input=unit.encode())
        else:
            await transport.run(commands.start_supervised(home, python, pool.name, name))
    row = await wait_for_worker(pool, name)
    await renew_standby(host)
    return row


async def renew_standby(host: str) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await retire_standbys(client, host, f"replaced: the worker was (re)installed at {code_version()}")
    await create_standby(host, code_version())


async def ensure_pool_and_deployment(pool: WorkPool, project_dir: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.utilities.callables import parameter_schema

    from flows.host_steps import host_steps

    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=pool.name, type=POOL_TYPE,
                                                         description=pool.description))
        flow_id = await client.create_flow_from_name(FLOW_NAME)
        await client.create_deployment(
            flow_id, pool.host, work_pool_name=pool.name, entrypoint=ENTRYPOINT, path=project_dir,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": project_dir}}],
            parameter_openapi_schema=parameter_schema(host_steps).model_dump_for_openapi(),
            tags=["homelab", FLOW_NAME, *pool.tags], description=f"the steps of a deploy, run on {pool.host}")


async def wait_for_worker(pool: WorkPool, name: str, timeout_s: float = FIRST_HEARTBEAT_S) -> WorkerRow:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for row in await pool_workers(pool, "worker"):
            if row.worker == name and row.status == "online":
                return row
        await asyncio.sleep(0.5)
    raise HomelabError(f"the worker {name} did not report to pool {pool.name} within {timeout_s:g}s; see "
                       f"worker.log in the host's worker directory")


async def pool_workers(pool: WorkPool, dispatch: str) -> list[WorkerRow]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        workers = await read_pool_workers(client, pool.name)
    rows = [WorkerRow(pool=pool.name, host=pool.host, dispatch=dispatch, worker=w.name,
                      status="online" if is_live(w.last_heartbeat_time) else "offline",
                      last_heartbeat=w.last_heartbeat_time, version=worker_version(w.name)) for w in workers]
    return rows or [WorkerRow(pool=pool.name, host=pool.host, dispatch=dispatch, worker=None, status="none",
                              last_heartbeat=None, version=None)]


async def status(desired: DesiredState) -> list[WorkerRow]:
    inv = desired.inventory
    found = await asyncio.gather(*(pool_workers(p, inv.hosts[p.host].dispatch) for p in host_pools(inv)))
    return [row for rows in found for row in rows]
