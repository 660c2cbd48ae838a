"""``homelab webhook serve``: the GitHub webhook receiver on its own (``homelab serve`` also hosts it)."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from deployments.cli.app import webhook_app
from deployments.cli.common import fail, prefect_api
from model.errors import HomelabError


@webhook_app.command("serve")
def webhook_serve(
        host: Annotated[str, typer.Option(help="address to listen on (put a TLS proxy in front for GitHub)")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port to listen on")] = 8787,
        branch: Annotated[str, typer.Option(help="pushes to this branch deploy")] = "main",
        allow_from: Annotated[str, typer.Option(
            "--allow-from", help="comma-separated client CIDRs (the TCP peer); others get 403")] = "",
) -> None:
    """Receive GitHub push webhooks: a signed push to BRANCH starts a deploy of the pushed commit.
    The secret comes from HOMELAB_WEBHOOK_SECRET or the Prefect Secret block github-webhook-secret."""
    prefect_api()  # before Prefect is imported: it reads PREFECT_API_URL once
    from deployments import webhook

    try:
        settings = webhook.WebhookSettings(secret=webhook.load_secret(), branch=branch,
                                           allow_from=webhook.parse_networks(allow_from))
        sock = webhook.listen(host, port)
    except HomelabError as exc:
        raise fail(exc) from None
    print(f"webhook receiver on http://{host}:{port}/ (branch {branch})", file=sys.stderr)
    try:
        asyncio.run(webhook.serve_webhook(settings, sock=sock))
    except KeyboardInterrupt:
        pass
    except HomelabError as exc:
        raise fail(exc) from None
