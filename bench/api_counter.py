"""Run the `homelab` CLI with every Prefect API request counted (bench only, not the product).

    python bench/api_counter.py OUT.json deploy -i INV --ref v1 --json

Counts each HTTP request that this process's httpx clients send to $PREFECT_API_URL, by
method and route (ids folded to ``{id}``), and writes the counts to OUT.json at exit. The
flow runs in this process when no control process serves the inventory, so these are the
deploy's API calls (events go over a websocket and are not counted).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import sys

import httpx

_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
counts: collections.Counter[str] = collections.Counter()


def _route(request: httpx.Request) -> str | None:
    api = os.environ.get("PREFECT_API_URL", "")
    url = str(request.url)
    if not api or not url.startswith(api):
        return None
    return f"{request.method} {_ID.sub('/{id}', url[len(api):].split('?')[0])}"


def _wrap(cls: type) -> None:
    original = cls.send

    if cls is httpx.AsyncClient:
        async def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            if (route := _route(request)) is not None:
                counts[route] += 1
            return await original(self, request, *args, **kwargs)
    else:
        def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            if (route := _route(request)) is not None:
                counts[route] += 1
            return original(self, request, *args, **kwargs)

    cls.send = send


def _write(path: str) -> None:
    with open(path, "w") as out:
        json.dump({"total": sum(counts.values()), "routes": dict(counts.most_common())}, out, indent=1)


if __name__ == "__main__":
    out_path = sys.argv.pop(1)
    _wrap(httpx.AsyncClient)
    _wrap(httpx.Client)
    atexit.register(_write, out_path)
    real_exit = os._exit  # the CLI ends with os._exit after flushing Prefect's workers

    def _exit_after_writing(code: int) -> None:
        _write(out_path)
        real_exit(code)

    os._exit = _exit_after_writing
    from deployments.cli import main

    sys.argv[0] = "homelab"
    main()
