"""Serving an ASGI app (Starlette) with hypercorn inside a trio nursery."""

from __future__ import annotations

import logging
from functools import partial
from typing import cast

import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

log = logging.getLogger("cadenza.net.http")


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP on ``host``:``port`` until cancelled.

    Reports ``(host, port)`` as bound through ``task_status`` once listening, so port 0
    (any free port) works: hypercorn's trio ``serve`` hands back the bound addresses.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    async with trio.open_nursery() as nursery:
        # Starlette's ASGI signature is looser than hypercorn's typed scopes; same protocol.
        asgi = cast(ASGIFramework, app)
        binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, asgi, config))
        task_status.started(_parse_bind(binds[0]))


def _parse_bind(bind: str) -> tuple[str, int]:
    # hypercorn reports "http://127.0.0.1:8080" or "http://[::1]:8080".
    host, _, port = bind.removeprefix("http://").rpartition(":")
    return host.strip("[]"), int(port)
