"""Where connections come from: TCP, or the swarm simulator's network.

:func:`open_tcp_stream` and :func:`open_tcp_listeners` are trio's, unless the calling task runs
inside :func:`use` (the simulator gives each simulated host its own network binding; trio tasks
inherit it from the task that started them, so a speaker's every connection is its host's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import trio


class Transport(Protocol):
    async def open_tcp_stream(self, host: str, port: int) -> trio.abc.Stream: ...

    async def open_tcp_listeners(self, port: int, host: str | None) -> Sequence[Any]: ...


_current: ContextVar[Transport | None] = ContextVar("cadenza_transport", default=None)


@contextmanager
def use(transport: Transport) -> Iterator[None]:
    """Tasks started inside this block (and their children) connect through ``transport``."""
    token = _current.set(transport)
    try:
        yield
    finally:
        _current.reset(token)


async def open_tcp_stream(host: str, port: int) -> Any:
    t = _current.get()
    if t is None:
        return await trio.open_tcp_stream(host, port)
    return await t.open_tcp_stream(host, port)


async def open_tcp_listeners(port: int, host: str | None) -> Any:
    t = _current.get()
    if t is None:
        return await trio.open_tcp_listeners(port, host=host)
    return await t.open_tcp_listeners(port, host)
