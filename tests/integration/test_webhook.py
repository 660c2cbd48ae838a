"""The GitHub webhook receiver under a real uvicorn, against the real Prefect test server.

The target deployment is registered without a work pool, so nothing ever executes its runs;
the tests look only at the runs the receiver creates and cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import threading
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from deployments.webhook import (
    MAX_BODY,
    WebhookSecretMissing,
    WebhookSettings,
    build_app,
    listen,
    load_secret,
    serve_webhook,
)
from deployments.webhook_deliveries import DeliveryStore
from model.actors import actor_for_run
from model.webhook_events import signature

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.asyncio(loop_scope="session")]

SECRET = b"It's a Secret to Everybody"  # GitHub's documented vector
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
BODY_MARKER = "body-text-that-must-not-reach-the-audit-log"
FLOW = "deploy-homelab"


def sha(n: int) -> str:
    return f"{n:040x}"


def push(after: str, ref: str = "refs/heads/main", **extra: object) -> dict:
    return {"ref": ref, "before": sha(0xBEEF), "after": after, "created": False, "deleted": False,
            "forced": False, "base_ref": None, "head_commit": {"id": after, "message": BODY_MARKER},
            "repository": {"full_name": "me/homelab"}, "pusher": {"name": "me"}, **extra}


PING = {"zen": "Keep it logically awesome.", "hook_id": 7, "hook": {"events": ["push"]}}


class Served:
    """serve_webhook in its own thread and loop, listening on a free loopback port."""

    def __init__(self, settings: WebhookSettings, api_url: str | None = None) -> None:
        self.settings, self.api_url = settings, api_url
        self.sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait(10)

    def _run(self) -> None:
        async def main() -> None:
            self.loop, self.task = asyncio.get_running_loop(), asyncio.current_task()
            self.started.set()
            with contextlib.ExitStack() as stack:
                if self.api_url:  # this thread only: settings live in a context variable
                    from prefect.settings import PREFECT_API_URL, temporary_settings

                    stack.enter_context(temporary_settings({PREFECT_API_URL: self.api_url}))
                await serve_webhook(self.settings, sock=self.sock)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)
        assert not self.thread.is_alive()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("webhook") / "audit.jsonl"
    before = os.environ.get("HOMELAB_AUDIT_LOG")
    os.environ["HOMELAB_AUDIT_LOG"] = str(path)
    yield path
    if before is None:
        os.environ.pop("HOMELAB_AUDIT_LOG")
    else:
        os.environ["HOMELAB_AUDIT_LOG"] = before


@pytest.fixture(scope="module")
async def deployment() -> tuple[str, object]:
    """A deployment of its own (no work pool: nothing runs), like the real one: concurrency 1."""
    from prefect import get_client

    name = f"webhook-test-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(FLOW)
        deployment_id = await client.create_deployment(flow_id=flow_id, name=name, concurrency_limit=1,
                                                       parameters={"ref": None}, entrypoint="flows/deploy.py:x")
    return f"{FLOW}/{name}", deployment_id


@pytest.fixture(scope="module")
def settings(deployment, tmp_path_factory: pytest.TempPathFactory) -> WebhookSettings:
    return WebhookSettings(secret=SECRET, deployment=deployment[0],
                           deliveries_path=tmp_path_factory.mktemp("deliveries") / "deliveries.sqlite3")


@pytest.fixture(scope="module")
def served(settings: WebhookSettings, audit_log: Path):
    server = Served(settings)
    yield server
    server.stop()


@pytest.fixture
async def http(served: Served):
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        yield client


@pytest.fixture
async def prefect():
    from prefect import get_client

    async with get_client() as client:
        yield client


async def post(http: httpx.AsyncClient, payload: object = None, *, event: str = "push", delivery: str | None = None,
               body: bytes | None = None, secret: bytes | None = SECRET, content_type: str = "application/json",
               path: str = "/", **headers: str) -> httpx.Response:
    body = json.dumps(payload).encode() if body is None else body
    sent = {"Content-Type": content_type, "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "User-Agent": "GitHub-Hookshot/test"}
    if secret is not None:
        sent["X-Hub-Signature-256"] = signature(secret, body)
    return await http.post(path, content=body, headers={**sent, **headers})


async def runs(prefect, deployment, *, delivery: str | None = None) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterIdempotencyKey

    flow_run_filter = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment[1]]))
    if delivery:
        flow_run_filter.idempotency_key = FlowRunFilterIdempotencyKey(any_=[delivery])
    return await prefect.read_flow_runs(flow_run_filter=flow_run_filter)


def audit_records(path: Path, event: str | None = None) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if event is None or r["event"] == event]


async def test_github_vector_end_to_end(http):
    # Signed right but not JSON: authenticated, then refused as a body (400, not 401).
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4())}
    answer = await http.post("/", content=b"Hello, World!",
                             headers={**headers, "X-Hub-Signature-256": VECTOR_SIGNATURE})
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    wrong = VECTOR_SIGNATURE[:-1] + "0"
    answer = await http.post("/", content=b"Hello, World!", headers={**headers, "X-Hub-Signature-256": wrong})
    assert answer.status_code == 401


async def test_ping_health_and_routes(http):
    assert (await post(http, PING, event="ping")).json() == {"pong": True}
    assert (await post(http, PING, event="ping", path="/webhook")).status_code == 200
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/")).status_code == 405
    assert (await post(http, PING, event="ping", path="/nope")).status_code == 404


async def test_a_push_to_the_branch_creates_a_run_of_the_pushed_commit(http, prefect, deployment):
    delivery = str(uuid.uuid4())
    answer = await post(http, push(sha(1)), delivery=delivery)
    assert answer.status_code == 202, answer.text
    run = await prefect.read_flow_run(answer.json()["flow_run_id"])
    assert run.parameters == {"ref": sha(1)}
    assert "webhook" in run.tags and run.idempotency_key == delivery and run.deployment_id == deployment[1]
    assert run.state.name == "Scheduled"
    # the run's audit records will name this delivery as their actor
    assert actor_for_run(run.tags, "deploy", "someone") == f"webhook:{delivery}"


async def test_a_form_encoded_push_works_too(http, prefect):
    body = urlencode({"payload": json.dumps(push(sha(2)))}).encode()
    answer = await post(http, body=body, content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 202, answer.text
    assert (await prefect.read_flow_run(answer.json()["flow_run_id"])).parameters == {"ref": sha(2)}


@pytest.mark.parametrize(("event", "payload", "reason"), [
    ("push", push(sha(3), "refs/tags/v1.0.0", base_ref="refs/heads/main"), "tag push 'refs/tags/v1.0.0'"),
    ("push", push("0" * 40, deleted=True), "branch 'main' was deleted"),
    ("push", push(sha(3), "refs/heads/feature"), "push to branch 'feature', not 'main'"),
    ("issues", {"action": "opened"}, "event 'issues' is not handled (only push and ping)"),
], ids=["tag", "delete", "other-branch", "other-event"])
async def test_ignored_deliveries_start_nothing(http, prefect, deployment, event, payload, reason):
    before = len(await runs(prefect, deployment))
    answer = await post(http, payload, event=event)
    assert (answer.status_code, answer.json()) == (202, {"ignored": reason})
    assert len(await runs(prefect, deployment)) == before


async def test_refusals(http, prefect, deployment, served):
    before = len(await runs(prefect, deployment))
    assert (await post(http, push(sha(4)), secret=None)).status_code == 401
    assert (await post(http, push(sha(4)), secret=b"not the secret")).status_code == 401
    assert (await post(http, body=b'{"ref": "refs/heads/main", "after": ')).status_code == 400
    assert (await post(http, push(sha(4)), content_type="text/plain")).status_code == 415
    assert (await post(http, push(sha(4)), **{"X-GitHub-Delivery": ""})).status_code == 400
    # Streamed (chunked, no Content-Length) one byte over the cap.
    async def chunks():
        for _ in range(25):
            yield b" " * (1024 * 1024)
        yield b" "

    answer = await http.post("/", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert await raw_status(served, f"Content-Length: {MAX_BODY + 1}") == 413  # refused before any byte is read
    assert await raw_status(served, "Content-Length: 12abc") in (400, 413)
    assert len(await runs(prefect, deployment)) == before


async def raw_status(served: Served, header: str) -> int:
    port = int(served.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{header}\r\n\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


async def test_a_redelivery_answers_with_the_first_run_even_after_a_restart(http, prefect, deployment, settings,
                                                                             audit_log):
    delivery = str(uuid.uuid4())
    first = (await post(http, push(sha(5)), delivery=delivery)).json()["flow_run_id"]
    again = await post(http, push(sha(5)), delivery=delivery)
    assert again.status_code == 202 and again.json()["flow_run_id"] == first
    restarted = Served(WebhookSettings(secret=SECRET, deployment=settings.deployment,
                                       deliveries_path=settings.deliveries_path))
    try:
        async with httpx.AsyncClient(base_url=restarted.url) as other:
            answer = await post(other, push(sha(5)), delivery=delivery)
    finally:
        restarted.stop()
    assert answer.json()["flow_run_id"] == first
    assert [str(r.id) for r in await runs(prefect, deployment, delivery=delivery)] == [first]
    assert DeliveryStore(settings.deliveries_path).get(delivery) == first
    assert len([r for r in audit_records(audit_log, "webhook.redelivery") if r["delivery"] == delivery]) == 2


async def test_a_burst_of_pushes_leaves_only_the_newest_scheduled(http, prefect, deployment):
    commits = [sha(0x1000 + n) for n in range(20)]

    async def send(n: int) -> httpx.Response:
        await asyncio.sleep(n * 0.01)  # arrival order = commit order; all in flight together
        return await post(http, push(commits[n]))

    answers = await asyncio.gather(*(send(n) for n in range(20)))
    assert [a.status_code for a in answers] == [202] * 20
    ids = {a.json()["flow_run_id"] for a in answers}
    assert answers[-1].json().get("superseded_by") is None
    # Pushes that waited together share the run of the newest of them, and say so.
    assert all(a.json().get("superseded_by") in (None, *commits[n + 1:]) for n, a in enumerate(answers))
    mine = [r for r in await runs(prefect, deployment) if str(r.id) in ids]
    assert len(mine) == len(ids) <= 20
    scheduled = [r for r in mine if r.state.type.value == "SCHEDULED"]
    assert [r.parameters["ref"] for r in scheduled] == [commits[-1]]
    assert str(scheduled[0].id) == answers[-1].json()["flow_run_id"]
    cancelled = [r for r in mine if r.state.name == "Cancelled"]
    assert len(cancelled) == len(mine) - 1
    assert all(r.state.message.startswith("superseded by push ") and "(delivery " in r.state.message
               for r in cancelled)
    every_waiting = [r for r in await runs(prefect, deployment) if r.state.type.value == "SCHEDULED"]
    assert [str(r.id) for r in every_waiting] == [str(scheduled[0].id)]


async def test_a_running_run_is_left_alone(http, prefect):
    from prefect.states import Running

    running = (await post(http, push(sha(6)))).json()["flow_run_id"]
    await prefect.set_flow_run_state(running, Running(), force=True)
    newer = (await post(http, push(sha(7)))).json()["flow_run_id"]
    assert (await prefect.read_flow_run(running)).state.name == "Running"
    assert (await prefect.read_flow_run(newer)).state.name == "Scheduled"


def fuzz_cases(rng: random.Random) -> list[dict]:
    """Malformed, mis-signed or unauthenticated deliveries; none of them may start a run."""
    good = json.dumps(push(sha(8))).encode()
    wrong_types = [1, None, [], {}, True, "", "HEAD", "x" * 300, sha(0xABC).upper(), "0x" + sha(8)[2:]]
    cases: list[dict] = []
    for _ in range(80):  # random bytes, signed or not
        body = rng.randbytes(rng.randrange(0, 3000))
        cases.append({"body": body, "secret": rng.choice([SECRET, None, b"wrong"]),
                      "content_type": rng.choice(["application/json", "application/x-www-form-urlencoded",
                                                  "text/plain", "", "application/json; charset=latin-1"])})
    for _ in range(70):  # signed, truncated JSON
        cases.append({"body": good[:rng.randrange(0, len(good))]})
    for value in wrong_types:  # signed, well-formed JSON of the wrong shape
        cases.append({"payload": push(value)})
        cases.append({"payload": {**push(sha(8)), "ref": value}})
        if value is not None and not isinstance(value, bool):  # null and a bool are valid 'deleted' values
            cases.append({"payload": {**push(sha(8)), "deleted": value}})
        cases.append({"payload": [push(sha(8))]})
        cases.append({"payload": value})
    for _ in range(40):  # signed valid push, but the headers are wrong
        cases.append({"payload": push(sha(8)), "event": rng.choice(["Push", "pushx", "issues", "", "x" * 2000, "p-u"]),
                      "delivery": rng.choice(["", "../../etc/passwd", "x" * 65, "a b", "ü".encode()])})
    for _ in range(40):  # valid body, mangled signature header
        sig = signature(SECRET, good)
        mangled = rng.choice([sig[:-1], sig + "a", sig.replace("sha256=", "sha1="), "sha256=" + "z" * 64,
                              "sha256=" + rng.randbytes(32).hex(), "x" * rng.randrange(1, 20000), sig.upper()])
        cases.append({"body": good, "secret": None, "headers": {"X-Hub-Signature-256": mangled}})
    for _ in range(20):  # form bodies without a usable payload field
        body = rng.choice([b"payload=", b"payload=%7B%22ref", b"a=b&c", b"payload=%ZZ", b"=" * 50,
                           urlencode({"payload": "[]"}).encode(), b"payload=" + rng.randbytes(20).hex().encode()])
        cases.append({"body": body, "content_type": "application/x-www-form-urlencoded"})
    cases.append({"payload": {"ref": "refs/heads/main", "after": sha(8), "nested": json.loads("[" * 500 + "]" * 500)},
                  "event": "other"})
    cases.append({"body": b"[" * 200000 + b"]" * 200000})
    return cases


async def test_fuzz_never_gives_a_5xx_or_starts_a_run(http, prefect, deployment):
    before = len(await runs(prefect, deployment))
    cases = fuzz_cases(random.Random(8787))
    assert len(cases) >= 300
    statuses = []
    for start in range(0, len(cases), 25):
        batch = cases[start:start + 25]
        answers = await asyncio.gather(*(fuzz_send(http, case) for case in batch))
        statuses += answers
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert {400, 401, 415} <= set(statuses)
    assert len(await runs(prefect, deployment)) == before


async def fuzz_send(http: httpx.AsyncClient, case: dict) -> int:
    try:
        answer = await post(http, case.get("payload"), body=case.get("body"), secret=case.get("secret", SECRET),
                            event=case.get("event", "push"), content_type=case.get("content_type", "application/json"),
                            delivery=case.get("delivery"), **case.get("headers", {}))
    except httpx.LocalProtocolError:  # a header httpx itself refuses to send (not a server answer)
        return 400
    return answer.status_code


async def test_the_allowlist(http, settings):
    try:
        settings.allow_from = (ipaddress.ip_network("10.0.0.0/8"),)
        assert (await post(http, PING, event="ping")).status_code == 403
        assert (await http.get("/healthz")).status_code == 200
        settings.allow_from = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
        assert (await post(http, PING, event="ping")).status_code == 200
    finally:
        settings.allow_from = ()


async def test_the_receiver_refuses_to_start_without_a_secret(prefect, monkeypatch):
    from prefect.blocks.system import Secret

    with pytest.raises(WebhookSecretMissing, match="HOMELAB_WEBHOOK_SECRET"):
        build_app(WebhookSettings(secret=b""))
    with pytest.raises(WebhookSecretMissing):
        await serve_webhook(WebhookSettings(secret=b""), port=free_port())
    monkeypatch.delenv("HOMELAB_WEBHOOK_SECRET", raising=False)
    with pytest.raises(WebhookSecretMissing, match="github-webhook-secret"):
        await asyncio.to_thread(load_secret)
    await Secret(value="from-the-block").save("github-webhook-secret", overwrite=True)
    try:
        assert await asyncio.to_thread(load_secret) == b"from-the-block"
        monkeypatch.setenv("HOMELAB_WEBHOOK_SECRET", "from-the-env")
        assert await asyncio.to_thread(load_secret) == b"from-the-env"
    finally:
        await prefect.delete_block_document((await prefect.read_block_document_by_name(
            "github-webhook-secret", "secret")).id)


async def test_prefect_failures_are_the_only_5xx(deployment, settings, audit_log):
    missing = Served(WebhookSettings(secret=SECRET, deployment=f"{FLOW}/not-registered",
                                     deliveries_path=settings.deliveries_path))
    down = Served(WebhookSettings(secret=SECRET, deployment=settings.deployment,
                                  deliveries_path=settings.deliveries_path),
                  api_url=f"http://127.0.0.1:{free_port()}/api")
    try:
        async with httpx.AsyncClient(base_url=missing.url) as http:
            answer = await post(http, push(sha(9)))
        assert answer.status_code == 503 and "not registered" in answer.json()["error"]
        async with httpx.AsyncClient(base_url=down.url, timeout=30) as http:
            answer = await post(http, push(sha(9)))
            assert (await post(http, PING, event="ping")).status_code == 200  # no Prefect needed
        assert answer.status_code == 503 and "Prefect API" in answer.json()["error"]
    finally:
        missing.stop()
        down.stop()
    assert audit_records(audit_log, "webhook.unavailable")


async def test_serving_in_the_main_thread_leaves_signal_handlers_alone(settings):
    handler = signal.getsignal(signal.SIGINT)
    sock = listen("127.0.0.1", 0)
    task = asyncio.create_task(serve_webhook(settings, sock=sock))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as http:
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
        assert signal.getsignal(signal.SIGINT) is handler
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert signal.getsignal(signal.SIGINT) is handler


async def test_every_decision_is_audited_and_the_secret_never(http, audit_log):
    await post(http, PING, event="ping")
    await post(http, push(sha(10)), secret=b"wrong")
    await post(http, {"action": "opened"}, event="issues")
    text = audit_log.read_text()
    events = {r["event"] for r in audit_records(audit_log)}
    assert {"webhook.deploy", "webhook.redelivery", "webhook.ping", "webhook.ignored", "webhook.invalid",
            "webhook.rejected"} <= events
    deploy = audit_records(audit_log, "webhook.deploy")[-1]
    assert {"delivery", "github_event", "ref", "flow_run_id", "reason"} <= deploy.keys()
    assert SECRET.decode() not in text and BODY_MARKER not in text and "from-the-block" not in text
