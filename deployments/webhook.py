"""The GitHub webhook receiver: a signed push to the deploy branch becomes a run of the
deploy deployment with the pushed commit as its ``ref``.

Checks run cheapest first and nothing starts before the signature matched: client allowlist
(403), Content-Length and streamed size (413), content type (415), ``X-Hub-Signature-256``
(401), body (400). Deliveries are deduplicated on ``X-GitHub-Delivery`` (persisted, see
``webhook_deliveries``). In a burst of pushes the newest (the last to arrive) wins: pushes that
arrive while a run is being created are served together by one run of the newest of them,
and creating a run cancels the webhook runs of the deployment still waiting in a scheduled
state. A run already executing is left to finish.

No input gives a 5xx. The only 5xx answers are about Prefect: 503 when its API is unreachable,
times out or lacks the deployment, 502 when it refuses a request. GitHub does not retry on its
own; redeliver from the hook's page once Prefect is back (the same delivery id is safe).

Prefect is imported only when the app is built: call ``deployments.server.ensure_api()`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments import control_metrics
from deployments.webhook_deliveries import DeliveryStore
from model.actors import DELIVERY_TAG_PREFIX
from model.errors import ServerError, UsageError
from model.masking import MASKER
from model.triggers import WEBHOOK_TAG
from model.webhook_events import Decision, PayloadError, classify, media_type, parse_body, verify_signature
from tasks.engine import audit

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger("homelab.webhook")

SECRET_ENV = "HOMELAB_WEBHOOK_SECRET"
SECRET_BLOCK = "github-webhook-secret"
MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
DEADLINE_S = 8.0  # GitHub gives up after 10 s
# A newer push supersedes older pushes' runs that have not started, and those that wait for
# approval ("Paused"): approving an older push later would deploy an older commit.
SUPERSEDABLE = ("Scheduled", "Late", "AwaitingConcurrencySlot", "Paused")
TAG = WEBHOOK_TAG  # the flow reads its trigger from it (approval policy)
ACCEPTED_TYPES = ("application/json", "application/x-www-form-urlencoded")
_DELIVERY = re.compile(r"[A-Za-z0-9-]{1,64}")  # GitHub sends a GUID
_EVENT = re.compile(r"[a-z_]{1,64}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookSecretMissing(UsageError):
    """The receiver has no secret to check signatures with, so it does not start."""


class PrefectUnavailable(Exception):
    """Prefect could not take the run; ``status`` is the HTTP answer (502 or 503)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass
class WebhookSettings:
    secret: bytes
    branch: str = "main"
    allow_from: tuple[Network, ...] = ()  # empty: any client; checked against the TCP peer
    deployment: str = "deploy-homelab/deploy"
    deliveries_path: Path | None = None  # default: webhook-deliveries.sqlite3 in the state dir


def load_secret() -> bytes:
    """The webhook secret: env HOMELAB_WEBHOOK_SECRET, else the Prefect Secret block
    ``github-webhook-secret``. Registered with the masker; never logged."""
    value = os.environ.get(SECRET_ENV)
    if not value:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(SECRET_BLOCK, _sync=True).get()
        except (ValueError, LookupError) as exc:  # "Unable to find block document named ..."
            raise _missing_secret() from exc
        except Exception as exc:  # the server: unreachable, refused
            raise ServerError(f"webhook: could not read the Prefect Secret block {SECRET_BLOCK!r}: "
                              f"{type(exc).__name__}; is the Prefect server up (homelab server up)?") from None
        if not isinstance(value, str) or not value:
            raise _missing_secret()
    MASKER.add(value)
    return value.encode()


def _missing_secret() -> WebhookSecretMissing:
    return WebhookSecretMissing(
        f"webhook: no secret configured; set {SECRET_ENV} or create a Prefect Secret block named "
        f"{SECRET_BLOCK!r} (the value of the GitHub hook's 'Secret' field), then start the receiver again")


class _Throttle:
    """At most one audit record per reason and interval for unauthenticated rejections, so a
    flood of junk cannot fill the audit log; each record counts the ones it stands for."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, reason: str) -> int | None:
        """None to skip this one, else the number suppressed since the last record."""
        now = time.monotonic()
        if now - self._last.get(reason, -self.interval_s) < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return None
        self._last[reason] = now
        return self._suppressed.pop(reason, 0)


class Triggered(NamedTuple):
    run_id: str
    redelivery: bool
    cancelled: list[str]  # the older waiting runs this one superseded
    ref: str  # what the run deploys: the newest push served with this one


@dataclass
class _Waiting:
    delivery: str
    ref: str
    answer: asyncio.Future


def _answer_once(answer: asyncio.Future, outcome: Triggered | BaseException) -> None:
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
        answer.exception()  # retrieved: a caller that timed out must not leave a warning behind
    else:
        answer.set_result(outcome)


class Receiver:
    """The side effects: the delivery store, the Prefect client, the audit log."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()  # cancel-older + create is one step within this process
        self._queue: list[_Waiting] = []
        self._dispatcher: asyncio.Task | None = None
        self._throttle = _Throttle()
        self._deployment_id: Any = None
        self.store: DeliveryStore | None = None
        self.client: PrefectClient | None = None

    async def start(self) -> None:
        """Open the store and the Prefect client; a second call does nothing."""
        if self.client is not None:
            return
        from prefect.client.orchestration import get_client

        self.store = await asyncio.to_thread(DeliveryStore, self.settings.deliveries_path)
        client = get_client()
        await client.__aenter__()
        self.client = client

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.__aexit__(None, None, None)
        if self.store is not None:
            self.store.close()
            self.store = None

    async def audit(self, decision: str, **fields: object) -> None:
        if decision != "rejected":  # rejections are counted before their (throttled) record
            control_metrics.WEBHOOK_REQUESTS.labels(outcome=decision).inc()
        try:
            await asyncio.to_thread(audit.append, f"webhook.{decision}", **fields)
        except OSError as exc:  # the run exists; a failed answer would only hide it
            log.error("webhook: could not write the audit log: %s", exc)

    async def rejected(self, status: int, reason: str, client: str) -> JSONResponse:
        """An unauthenticated rejection: audited (throttled), nothing else happens."""
        control_metrics.WEBHOOK_REQUESTS.labels(outcome="rejected").inc()
        if status == 401:
            control_metrics.SIGNATURE_FAILURES.inc()
        suppressed = self._throttle.admit(reason)
        if suppressed is not None:
            await self.audit("rejected", status=status, reason=reason, client=client, suppressed=suppressed)
        return _answer(status, {"error": reason})

    async def trigger(self, delivery: str, ref: str) -> Triggered:
        """Start (or find) the run of this delivery.

        Pushes that arrive while a run is being created wait and are then served together
        (group commit): only the newest of them gets a run, and the others are answered with
        it. One run is created per round trip to Prefect instead of one per push, so a burst
        cannot queue up behind the server."""
        try:
            async with asyncio.timeout(DEADLINE_S):
                known = await asyncio.to_thread(self.store.get, delivery)
                if known:
                    return Triggered(known, True, [], ref)
                waiting = _Waiting(delivery, ref, asyncio.get_running_loop().create_future())
                self._queue.append(waiting)
                control_metrics.QUEUE_DEPTH.set(len(self._queue))
                if self._dispatcher is None or self._dispatcher.done():
                    self._dispatcher = asyncio.create_task(self._dispatch())
                return await asyncio.shield(waiting.answer)
        except TimeoutError:
            raise PrefectUnavailable(503, f"the Prefect API did not answer within {DEADLINE_S:g}s") from None
        except PrefectUnavailable:
            raise
        except Exception as exc:
            raise _prefect_failure(exc) from None

    async def _dispatch(self) -> None:
        """Serve the waiting pushes in batches: the last to arrive gets the run."""
        while self._queue:
            batch, self._queue = self._queue, []
            control_metrics.QUEUE_DEPTH.set(0)
            newest = batch[-1]
            try:
                async with self._lock:
                    run_id, redelivery, cancelled = await self._supersede_and_create(newest.delivery, newest.ref)
                for older in batch[:-1]:
                    older_id = await asyncio.to_thread(self.store.put, older.delivery, run_id)
                    _answer_once(older.answer, Triggered(older_id, False, [], newest.ref))
                _answer_once(newest.answer, Triggered(run_id, redelivery, cancelled, newest.ref))
            except Exception as exc:
                for waiting in batch:
                    _answer_once(waiting.answer, exc)

    async def _supersede_and_create(self, delivery: str, ref: str) -> tuple[str, bool, list[str]]:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Cancelled, Cancelling

        client = self.client
        deployment_id = await self._deployment()
        waiting = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=list(SUPERSEDABLE))),
                                tags=FlowRunFilterTags(all_=[TAG]))
        # Read, create, then cancel: a crash in between leaves two waiting runs, never none. The
        # read comes first so that it cannot see the new run.
        older = await client.read_flow_runs(flow_run_filter=waiting, limit=200)
        try:
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"ref": ref},
                                                               tags=[TAG, f"{DELIVERY_TAG_PREFIX}{delivery}"],
                                                               idempotency_key=delivery)
        except ObjectNotFound:
            self._deployment_id = None  # re-registered since we looked it up; the next delivery retries
            raise
        older_ids = {r.id for r in older}
        # The idempotency key found an existing run (the store lost its row): start nothing more.
        if run.id in older_ids or run.state is None or run.state.name != "Scheduled":
            return await asyncio.to_thread(self.store.put, delivery, str(run.id)), True, []
        message = f"superseded by push {ref[:7]} (delivery {delivery})"
        # A paused run's process is alive (it waits for the answer): Cancelling has its runner end it.
        results = await asyncio.gather(*(client.set_flow_run_state(
            r.id, (Cancelling if r.state and r.state.is_paused() else Cancelled)(message=message))
            for r in older), return_exceptions=True)
        cancelled = []
        for older_run, result in zip(older, results, strict=True):
            if isinstance(result, BaseException) or result.status != SetStateStatus.ACCEPT:
                # It started meanwhile (or Prefect said no): it runs first, ours waits for the slot.
                log.warning("webhook: could not cancel superseded run %s: %s", older_run.id,
                            getattr(result, "details", result))
            else:
                cancelled.append(str(older_run.id))
        return await asyncio.to_thread(self.store.put, delivery, str(run.id)), False, cancelled

    async def _deployment(self) -> Any:
        if self._deployment_id is None:
            self._deployment_id = (await self.client.read_deployment_by_name(self.settings.deployment)).id
        return self._deployment_id


def _prefect_failure(exc: Exception) -> PrefectUnavailable:
    import httpx
    from prefect.exceptions import ObjectNotFound

    if isinstance(exc, ObjectNotFound):
        return PrefectUnavailable(503, "the deploy deployment is not registered on the Prefect server; "
                                       "start `homelab serve`, then redeliver")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return PrefectUnavailable(503 if code >= 500 else 502, f"the Prefect API answered {code}")
    if isinstance(exc, httpx.TransportError | OSError):
        return PrefectUnavailable(503, f"the Prefect API is unreachable ({type(exc).__name__})")
    log.exception("webhook: unexpected failure while creating the run")
    return PrefectUnavailable(502, f"the Prefect API call failed ({type(exc).__name__})")


def _answer(status: int, body: dict) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _allowed(settings: WebhookSettings, host: str | None) -> bool:
    if not settings.allow_from:
        return True
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in settings.allow_from)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_BODY (a chunked body has no Content-Length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _handle(receiver: Receiver, request: Request) -> JSONResponse:
    received = time.monotonic()
    settings = receiver.settings
    client = request.client.host if request.client else "?"
    if not _allowed(settings, request.client.host if request.client else None):
        return await receiver.rejected(403, "client address not allowed", client)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return await receiver.rejected(413, f"body over {MAX_BODY} bytes", client)
    if media_type(request.headers.get("content-type")) not in ACCEPTED_TYPES:
        return await receiver.rejected(415, "content type must be application/json", client)
    try:
        body = await _read_body(request)
    except ClientDisconnect:
        return _answer(400, {"error": "client disconnected"})
    if body is None:
        return await receiver.rejected(413, f"body over {MAX_BODY} bytes", client)
    if not verify_signature(settings.secret, body, request.headers.get("x-hub-signature-256")):
        return await receiver.rejected(401, "missing or wrong X-Hub-Signature-256", client)
    # Authenticated from here on: every decision gets its own audit record.
    delivery = request.headers.get("x-github-delivery", "")
    event = request.headers.get("x-github-event", "")
    if not _DELIVERY.fullmatch(delivery) or not _EVENT.fullmatch(event):
        return await _invalid(receiver, delivery, event, "missing or malformed X-GitHub-Delivery or X-GitHub-Event")
    try:
        payload = parse_body(request.headers.get("content-type"), body)
    except PayloadError as exc:
        return await _invalid(receiver, delivery, event, str(exc))
    decision = classify(event, payload, settings.branch)
    return await _decide(receiver, delivery, event, decision, received)


async def _invalid(receiver: Receiver, delivery: str, event: str, reason: str) -> JSONResponse:
    await receiver.audit("invalid", delivery=delivery[:64], github_event=event[:64], reason=reason)
    return _answer(400, {"error": reason})


async def _decide(receiver: Receiver, delivery: str, event: str, decision: Decision,
                  received: float) -> JSONResponse:
    if decision.action == "reject":
        return await _invalid(receiver, delivery, event, decision.reason)
    if decision.action == "pong":
        await receiver.audit("ping", delivery=delivery, github_event=event)
        return _answer(200, {"pong": True})
    if decision.action == "ignore":
        await receiver.audit("ignored", delivery=delivery, github_event=event, reason=decision.reason)
        return _answer(202, {"ignored": decision.reason})
    try:
        run_id, redelivery, cancelled, deployed = await receiver.trigger(delivery, decision.ref)
    except PrefectUnavailable as exc:
        await receiver.audit("unavailable", delivery=delivery, github_event=event, ref=decision.ref, reason=str(exc))
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers={"Retry-After": "30"})
    if redelivery:
        await receiver.audit("redelivery", delivery=delivery, github_event=event, ref=decision.ref, flow_run_id=run_id)
        return _answer(202, {"flow_run_id": run_id, "redelivery": True})
    control_metrics.RUN_START_LATENCY.observe(time.monotonic() - received)
    newer = {"superseded_by": deployed} if deployed != decision.ref else {}
    await receiver.audit("deploy", delivery=delivery, github_event=event, ref=decision.ref, flow_run_id=run_id,
                         reason=decision.reason, superseded=cancelled, **newer)
    return _answer(202, {"flow_run_id": run_id, **newer})


def build_app(settings: WebhookSettings) -> Starlette:
    """The ASGI app. Refuses to build without a secret or without a Prefect API to talk to."""
    if not settings.secret:
        raise _missing_secret()
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise ServerError("webhook: PREFECT_API_URL is not set; call deployments.server.ensure_api() first")
    receiver = Receiver(settings)

    async def webhook(request: Request) -> JSONResponse:
        return await _handle(receiver, request)

    async def healthz(request: Request) -> JSONResponse:
        return _answer(200, {"ok": True})

    async def metrics(request: Request) -> Response:
        return Response(control_metrics.exposition(), media_type=control_metrics.CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await receiver.start()
        try:
            yield
        finally:
            await receiver.stop()

    app = Starlette(routes=[Route("/", webhook, methods=["POST"]), Route("/webhook", webhook, methods=["POST"]),
                            Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])],
                    lifespan=lifespan)
    app.state.receiver = receiver
    return app


def _server(config: Any) -> Any:
    """uvicorn's server without its signal handlers: the process that awaits us owns them."""
    import uvicorn

    class Server(uvicorn.Server):
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

    return Server(config)


def listen(host: str, port: int) -> socket.socket:
    """A bound listening socket (port 0: any free one); a clear error if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"webhook: cannot listen on {host}:{port}: {exc.strerror}; "
                          "pick another --port or stop the process using it") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_webhook(settings: WebhookSettings, host: str = "127.0.0.1", port: int = 8787,
                        sock: socket.socket | None = None) -> None:
    """Serve until cancelled, inside the caller's running loop; in-flight requests finish.
    ``sock``: an already listening socket (see ``listen``) instead of host and port."""
    import uvicorn

    app = build_app(settings)
    receiver: Receiver = app.state.receiver
    sock = sock or listen(host, port)
    # Started here, not in uvicorn's lifespan: a failing lifespan makes uvicorn call sys.exit.
    await receiver.start()
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=int(DEADLINE_S) + 1)
    server = _server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # stop accepting, let in-flight requests answer
        with contextlib.suppress(Exception):
            await serving
        raise
    finally:
        sock.close()
        await receiver.stop()


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,192.30.252.0/22`` -> networks; a UsageError names the bad entry."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UsageError(f"--allow-from: {item!r} is not an IP network (like 192.30.252.0/22)") from None
    return tuple(networks)
