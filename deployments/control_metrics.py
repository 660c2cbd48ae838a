"""The control process's own metrics, scraped at ``/metrics`` (``homelab serve --metrics-port``,
and the webhook receiver's port): webhook requests by outcome, signature failures, the pushes
waiting for a run, how long a push waits for its run, and notices that failed to go out.
Deploy runs push their own series to the Pushgateway (``tasks/engine/metrics.py``)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from model.errors import ServerError
from tasks.engine.notify import METRICS as NOTIFY_METRICS

CONTENT_TYPE = CONTENT_TYPE_LATEST
REGISTRY = CollectorRegistry()
WEBHOOK_REQUESTS = Counter("homelab_webhook_requests", "Webhook requests, by what the receiver decided.",
                           ["outcome"], registry=REGISTRY)
SIGNATURE_FAILURES = Counter("homelab_webhook_signature_failures",
                             "Webhook requests refused for a missing or wrong X-Hub-Signature-256.", registry=REGISTRY)
QUEUE_DEPTH = Gauge("homelab_webhook_queue_depth", "Pushes waiting to be turned into a run.", registry=REGISTRY)
RUN_START_LATENCY = Histogram("homelab_run_start_latency_seconds", "From a push's arrival to its flow run created.",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY)


def exposition() -> bytes:
    """Every series of this process, in Prometheus's text format."""
    return generate_latest(REGISTRY) + generate_latest(NOTIFY_METRICS)


def serve_metrics(host: str, port: int):
    """``/metrics`` on its own port, in a daemon thread; returns the server (``shutdown()`` stops it)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
            pass


    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ServerError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}; pick another "
                          "--metrics-port (0: off) or stop the process using it") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
