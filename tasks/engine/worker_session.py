"""Hosts in ``dispatch: worker`` mode: their steps run on the host, by its own Prefect worker.

At the start of a run the orchestrator claims the host's standby run of its
``host-steps/<host>`` deployment (``flows/host_steps.py``, ``worker_standby.py``), or starts
one on the host's work pool when there is none. The run serves orders until the orchestrator
ends it: each order is one of the engine's steps (stage, compose up, health gate, record,
hooks, undo) or a single command, sent and answered as sealed flow run inputs
(``worker_wire.py``). The steps are the same functions as in SSH mode, run there behind a
local transport; here ``WorkerTransport`` stands in for the SSH connection, so locks, pending
markers, release records and rollbacks are the same.

One run per host and deploy, not one per step, and started ahead (the standby): starting a
Python process on the host costs seconds, an order costs a round trip through the API. Both
sides poll (``poll_interval``): quickly just after a message, when the next one is likely
near, more slowly as a wait goes on; one poller (``ReplyInbox``) reads every host's replies.

Nothing hangs: a run that no worker picks up, a run that ends, and a run that goes silent
(it heartbeats while it works on orders; killed with its worker, or its host down) all fail
the waiting steps with a message that names the pool and the worker's last heartbeat, and the
phase's policy applies. The step that was cut off leaves its pending marker, for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from model.desired import DesiredState
from model.errors import HomelabError, HostUnreachable, RemoteCommandError
from model.masking import MASKER, SecretMasker
from model.work_pools import host_pool, worker_version
from tasks.engine.busy_clock import BusyClock
from tasks.engine.code_version import code_version
from tasks.engine.step_set import Steps
from tasks.engine.transport import CommandResult
from tasks.engine.undo import RollbackJournal, StackUndo
from tasks.engine.worker_standby import ack_key, claim_standby, mark_crashed
from tasks.engine.worker_wire import FLOW_NAME, ORDER_PREFIX, deployment_name, open_reply, read_key, reply_prefix, seal
from tasks.host_commands.release_files import upload_file
from tasks.host_commands.worker import HEARTBEAT_SECONDS

POLL_MIN_S, POLL_MAX_S, POLL_FRACTION = 0.02, 0.25, 0.1
LIVENESS_EVERY_S = 2.0
STALE_AFTER_S = 3 * HEARTBEAT_SECONDS + 5  # a worker silent this long is gone
CHILD_HEARTBEAT_S = 3.0  # a host's run, while it works on orders, says so this often
CHILD_SILENT_S = 15.0  # a host's run silent this long while steps wait on it is gone (killed, host down)
HEARTBEAT_KEY = "hb-"


def _log():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger, get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("homelab.workers")


def poll_interval(since_activity_s: float) -> float:
    """How long a waiting side sleeps before it looks again (each look is one API call): soon
    after the last message, the answer is likely quick (the next order of a stack, a short
    step's reply); later, each look may be late by a tenth of the wait so far."""
    return min(POLL_MAX_S, max(POLL_MIN_S, POLL_FRACTION * since_activity_s))


class WorkerUnavailable(HostUnreachable):
    """The host's worker did not take its run, or stopped while serving it."""


class WorkerStepFailed(HomelabError):
    """A step on a worker host raised; the message is the host's."""


@dataclass(frozen=True)
class Order:
    name: str  # a Steps field, "undo", "run" or "end"
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # for the host's masker: its logs and errors hide them too


class ReplyInbox:
    """The deploy's side of the wire: one poller of its run's inputs for every worker host's
    replies (one API call per look, however many hosts wait), routed to each host's session."""

    def __init__(self, parent_run_id: str):
        self.parent_run_id = parent_run_id
        self.sessions: dict[str, WorkerSession] = {}
        self.seen: set[str] = set()
        self.last_activity = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def add(self, session: WorkerSession) -> None:
        self.sessions[session.host] = session

    def sent(self) -> None:
        """An order went out: look for its reply soon."""
        self.last_activity = time.monotonic()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _session_of(self, key: str) -> tuple[WorkerSession, str] | None:
        # the longest prefix: host "vps" must not take the replies of host "vps-b"
        for host in sorted(self.sessions, key=len, reverse=True):
            if key.startswith(reply_prefix(host)):
                return self.sessions[host], key.removeprefix(reply_prefix(host))
        return None

    async def _poll(self) -> None:
        from prefect.client.orchestration import get_client

        failing_since: float | None = None
        async with get_client() as client:
            while True:
                waiting = [s for s in self.sessions.values() if s.waiting]
                if not waiting:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    await self._look(client, waiting)
                    failing_since = None
                except Exception as exc:  # the API is away: the waits fail once it stays away
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > CHILD_SILENT_S:
                        for session in waiting:
                            session._fail_all(WorkerUnavailable(session.host, f"the Prefect API failed for "
                                                                               f"{CHILD_SILENT_S:g}s: {exc}"))
                await asyncio.sleep(poll_interval(time.monotonic() - self.last_activity))

    async def _look(self, client, waiting: list[WorkerSession]) -> None:
        found = await client.filter_flow_run_input(self.parent_run_id, "r-", limit=200, exclude_keys=self.seen)
        for item in found:
            self.seen.add(item.key)
            routed = self._session_of(item.key)
            if routed:
                self.last_activity = time.monotonic()
                routed[0].answer(routed[1], item.value)
        for session in waiting:
            await session.check_liveness(client)


class WorkerSession:
    """The orchestrator's side of one host's ``host-steps`` run."""

    def __init__(self, host: str, pool: str, parent_run_id: str, key: bytes, start_timeout_s: float = 60,
                 inbox: ReplyInbox | None = None):
        self.host, self.pool, self.parent_run_id, self.key = host, pool, parent_run_id, key
        self.start_timeout_s = start_timeout_s  # from creating the host's run to its worker starting it
        self.inbox = inbox or ReplyInbox(parent_run_id)
        self.inbox.add(self)
        self.child_run_id: str | None = None
        self.claimed = False  # the host's standby run, not one started for this deploy
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future] = {}
        self._broken: Exception | None = None
        self._created_at = 0.0
        self._ended = False
        self._running_seen = False
        self._sent_at: dict[str, float] = {}
        self._last_signal = 0.0
        self._last_check = 0.0

    @property
    def waiting(self) -> bool:
        return bool(self._waiting) and self._broken is None

    async def start(self) -> None:
        """Claim the host's standby run, or else start a run for this deploy."""
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await self._refuse_other_versions(client)
            claimed = await claim_standby(client, self.host, self.parent_run_id, self.key, code_version())
        if claimed:
            self.child_run_id, self._running_seen = claimed
            self.claimed = True
            self.inbox.seen.add(ack_key(self.host, self.child_run_id))
            _log().info("%s: claimed standby %s run %s on pool %s", self.host, FLOW_NAME, self.child_run_id,
                        self.pool)
        else:
            await self._start_run()
        self._created_at = time.monotonic()

    async def _start_run(self) -> None:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            run = await run_deployment(deployment_name(self.host), timeout=0, as_subflow=True,
                                       parameters={"parent_run_id": self.parent_run_id, "host": self.host,
                                                   "version": code_version()})
        except ObjectNotFound:
            raise WorkerUnavailable(self.host, f"no {deployment_name(self.host)} deployment: run "
                                               f"`homelab worker install --host {self.host}`") from None
        self.child_run_id = str(run.id)

    async def _refuse_other_versions(self, client) -> None:
        """Before any run: the pool's live workers must run this code (the wire carries its values)."""
        workers = await read_pool_workers(client, self.pool)
        live = [w for w in workers if is_live(w.last_heartbeat_time)]
        mine = code_version()
        if live and all(worker_version(w.name) != mine for w in live):
            theirs = ", ".join(sorted({worker_version(w.name) or "unknown" for w in live}))
            raise WorkerUnavailable(self.host, f"the worker of pool {self.pool} runs version {theirs}, the "
                                               f"orchestrator {mine}: run `homelab worker upgrade --host {self.host}`")

    async def call(self, name: str, args: Sequence[Any] = (), kwargs: dict | None = None) -> Any:
        if self._broken:
            raise self._broken
        assert self.child_run_id is not None, "start() first"
        from prefect.client.orchestration import get_client

        order_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        order = Order(name=name, args=tuple(args), kwargs=kwargs or {}, secrets=tuple(MASKER.values()))
        async with get_client() as client:
            await client.create_flow_run_input(self.child_run_id, f"{ORDER_PREFIX}{order_id}", seal(order, self.key))
        self._waiting[order_id] = future
        self._sent_at[order_id] = time.monotonic()
        self.inbox.sent()
        try:
            status, value = await future
        finally:
            self._waiting.pop(order_id, None)
            self._sent_at.pop(order_id, None)
        if status == "ok":
            return value
        kind, message = value
        if kind == "unreachable":
            raise HostUnreachable(self.host, message)
        raise WorkerStepFailed(message)

    async def end(self) -> None:
        """Tell the host's run to finish; it completes once its last order is answered."""
        if self._ended:
            return
        self._ended = True
        if self.child_run_id and not self._broken:
            from prefect.client.orchestration import get_client

            with contextlib.suppress(Exception):
                async with get_client() as client:
                    await client.create_flow_run_input(self.child_run_id, f"{ORDER_PREFIX}end",
                                                       seal(Order(name="end"), self.key))

    def answer(self, order_id: str, token: str) -> None:
        self._last_signal = time.monotonic()
        if order_id.startswith(HEARTBEAT_KEY):
            return
        future = self._waiting.get(order_id)
        if future is None or future.done():
            return
        try:
            future.set_result(open_reply(token, self.key))
        except HomelabError as exc:
            future.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        self._broken = exc
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)

    async def check_liveness(self, client) -> None:
        """Every ``LIVENESS_EVERY_S`` while steps wait: fail them if the host's run cannot answer."""
        if time.monotonic() - self._last_check < LIVENESS_EVERY_S:
            return
        self._last_check = time.monotonic()
        problem = await self._liveness(client)
        if problem:
            self._fail_all(WorkerUnavailable(self.host, problem))

    async def _liveness(self, client) -> str | None:
        """Why the host's run can no longer answer, or None while it can."""
        run = await client.read_flow_run(self.child_run_id)
        state = run.state
        if state is not None and state.is_final():
            return (f"its {FLOW_NAME} run {self.child_run_id} on pool {self.pool} ended {state.name}: "
                    f"{(state.message or '').strip()[:300]}")
        if state is not None and state.is_running() and not self._running_seen:
            self._running_seen = True
            _log().info("%s: its worker started host-steps run %s on pool %s after %.1fs", self.host,
                        self.child_run_id, self.pool, time.monotonic() - self._created_at)
        if state is None or not state.is_running():
            if time.monotonic() - self._created_at > self.start_timeout_s:
                return (f"no worker on pool {self.pool} started its {FLOW_NAME} run within {self.start_timeout_s:g}s "
                        f"({await self._heartbeat_seen(client)})")
            return None
        silent = time.monotonic() - max(self._last_signal, self._oldest_wait())
        if silent > CHILD_SILENT_S:
            why = (f"its {FLOW_NAME} run {self.child_run_id} on pool {self.pool} went silent for {silent:.0f}s "
                   f"({await self._heartbeat_seen(client)})")
            await mark_crashed(client, self.child_run_id, why)
            return why
        return None

    async def _heartbeat_seen(self, client) -> str:
        """For the message only: the pool's last worker heartbeat."""
        heartbeat = await last_heartbeat(client, self.pool)
        return f"last heartbeat {heartbeat.isoformat(timespec='seconds')}" if heartbeat else "no worker ever seen"

    def _oldest_wait(self) -> float:
        return min(self._sent_at.get(order_id, time.monotonic()) for order_id in self._waiting) if self._waiting \
            else time.monotonic()


async def read_pool_workers(client, pool: str) -> list:
    """The pool's workers; none when the pool does not exist yet."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return await client.read_workers_for_work_pool(pool)
    except ObjectNotFound:
        return []
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return []
        raise


def is_live(heartbeat: datetime | None, now: datetime | None = None) -> bool:
    """A worker that heartbeat within ``STALE_AFTER_S``."""
    return heartbeat is not None and ((now or datetime.now(UTC)) - heartbeat).total_seconds() <= STALE_AFTER_S


async def last_heartbeat(client, pool: str) -> datetime | None:
    beats = [w.last_heartbeat_time for w in await read_pool_workers(client, pool) if w.last_heartbeat_time]
    return max(beats) if beats else None


class WorkerTransport:
    """Stands in for the SSH connection to a ``dispatch: worker`` host: each command is an
    order to the host's run. (Steps go whole, see ``worker_steps``.)"""

    command_timeout_s = 300.0  # as SSH's default: the host's side enforces each command's own limit

    def __init__(self, session: WorkerSession, masker: SecretMasker = MASKER):
        self.session = session
        self.name = session.host
        self.masker = masker
        self.busy = BusyClock()

    @property
    def connected(self) -> bool:
        return self.session._broken is None

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None,
                  check: bool = True, quiet: bool = False) -> CommandResult:
        with self.busy.running():
            result: CommandResult = await self.session.call("run", (list(argv),), {"input": input, "timeout": timeout,
                                                                                  "quiet": quiet})
        if check and not result.ok:
            raise RemoteCommandError(self.name, result.command, result.exit_status, result.stderr or result.stdout)
        return result

    async def upload(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        return await self.run(upload_file(path, mode, len(data)), input=data)

    async def open_tcp(self, host: str, port: int, timeout: float) -> tuple:
        raise HomelabError(f"{self.name}: probes of a worker host run on the host (a step), not from here")

    async def call(self, name: str, args: Sequence[Any], kwargs: dict) -> Any:
        with self.busy.running():
            return await self.session.call(name, args, kwargs)

    async def close(self) -> None:
        await self.session.end()


def worker_hosts(desired: DesiredState, hosts: Sequence[str] | None = None) -> list[str]:
    inv = desired.inventory
    return [h for h in (hosts or desired.targeted_hosts()) if inv.hosts[h].dispatch == "worker"]


@contextlib.asynccontextmanager
async def worker_transports(desired: DesiredState, parent_run_id: str,
                            hosts: Sequence[str] | None = None) -> AsyncIterator[dict[str, WorkerTransport]]:
    """Claim (or start) every worker host's run at once (their start-up overlaps), end them together."""
    inv = desired.inventory
    inbox = ReplyInbox(parent_run_id)
    sessions = {h: WorkerSession(h, host_pool(h, inv.hosts[h]).name, parent_run_id, read_key(h),
                                 inv.defaults.worker_start_timeout_s, inbox)
                for h in worker_hosts(desired, hosts)}
    transports = {h: WorkerTransport(s) for h, s in sessions.items()}
    try:
        await asyncio.gather(*(s.start() for s in sessions.values()))
        yield transports
    finally:
        await inbox.close()
        await asyncio.gather(*(s.end() for s in sessions.values()), return_exceptions=True)


def worker_runs(pool) -> dict[str, str]:
    """host -> its host-steps run, for the report (the host's logs and step states are there)."""
    return {name: t.session.child_run_id for name, t in pool.transports.items()
            if isinstance(t, WorkerTransport) and t.session.child_run_id}


# ---------------------------------------------------------------- steps sent whole


def _sent_whole(name: str, host_of, fallback):
    async def step(pool, *args, **kwargs):
        transport = pool[host_of(args, kwargs)]
        if isinstance(transport, WorkerTransport):
            return await transport.call(name, args, kwargs)
        return await fallback(pool, *args, **kwargs)
    step.__name__ = f"{name}_on_host"
    return step


def _undo_sent_whole(name: str, fallback):
    async def step(undo: StackUndo) -> None:
        transport = undo.pool[undo.host]
        if not isinstance(transport, WorkerTransport):
            return await fallback(undo)
        try:
            journal: RollbackJournal = await transport.call(name, (replace(undo, pool=None, journal=None),), {})
        except HomelabError as exc:
            undo.journal.note(undo.host, undo.stack, f"rollback FAILED: {exc}", ok=False)
            return None
        for key, text in journal.entries.items():
            undo.journal.note(*key, text, ok=key not in journal.failed)
    return step


def _first(args, kwargs) -> str:
    return args[0] if args else kwargs["host"]


def _record_host(args, kwargs) -> str:
    return (args[1] if len(args) > 1 else kwargs["record"]).host


def worker_steps(base: Steps) -> Steps:
    """``base`` with every host step sent whole to a worker host's run (SSH hosts keep ``base``)."""
    whole = {name: _sent_whole(name, _first, getattr(base, name))
             for name in ("survey", "stage", "start", "health_gate", "list_releases", "refresh_images", "hook",
                          "smoke")}
    return replace(base, **whole, record=_sent_whole("record", _record_host, base.record),
                   undo=_undo_sent_whole("undo", base.undo), restore=_undo_sent_whole("restore", base.restore))
