"""Accepting connections."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import trio

from cadenza.protocol import connection as sansio
from cadenza.protocol.budget import UNLIMITED, Budget, MemoryPool

from . import _transport
from ._connection import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    Handler,
    Identity,
    PeerConnection,
    Verifier,
)
from ._errors import ConnectionLost, HandshakeFailed
from ._gate import Gate, GateLimits, Refused
from ._util import single_errors

log = logging.getLogger("cadenza.net")


class OnConnection(Protocol):
    """Runs for the life of each authenticated connection (cancelled when it closes). The
    handlers of the peer's channels wait until it has called ``task_status.started()`` (it
    has taken the connection in: a request that came with the handshake finds it known) or
    returned (it refused the connection)."""

    def __call__(
        self, conn: PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> Awaitable[None]: ...


async def serve_connections(
    handler: Handler,
    *,
    identity: Identity | Callable[[], Identity],
    host: str | None = "127.0.0.1",
    port: int = 0,
    verify: Verifier | None = None,
    on_connection: OnConnection | None = None,
    keepalive: float = KEEPALIVE_INTERVAL,
    idle_timeout: float = IDLE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    gate: GateLimits | None = None,
    budget: Budget = UNLIMITED,
    pool: MemoryPool | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve every connection until cancelled.

    ``started`` with the listeners (their ``socket.getsockname()`` tells the port
    when ``port`` is 0). ``identity`` may be a function, asked for each connection (a
    speaker's handshake payload carries a certificate that is renewed). A peer that fails
    the handshake or ``verify`` is logged and dropped; it never reaches ``handler`` or
    ``on_connection``.

    ``gate`` caps connections per source address and in total, and strangers (not yet
    :meth:`~PeerConnection.admit`-ted by the application) harder; ``budget`` is what each
    new connection's peer may make us hold until it is admitted, ``pool`` what all of them
    together may (see :mod:`cadenza.protocol.budget`).
    """
    listeners = await _transport.open_tcp_listeners(port, host)
    the_gate = Gate(gate) if gate is not None else None

    async def serve_one(stream: trio.SocketStream) -> None:
        me = identity() if callable(identity) else identity
        conn = PeerConnection(
            stream,
            sansio.Connection(
                sansio.Role.RESPONDER, me.static, payload=me.payload, budget=budget, pool=pool
            ),
            handler=handler,
            verify=verify,
            keepalive=keepalive,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
        )
        if the_gate is not None:
            address = conn.remote_address[0] if conn.remote_address else ""
            try:
                victim = the_gate.arrive(conn, address, trio.current_time())
            except Refused as exc:
                log.info("refused connection from %s: %s", address, exc)
                conn.abort(f"refused: {exc}")
                await trio.aclose_forcefully(stream)
                return
            if isinstance(victim, PeerConnection):
                log.info("shed connection from %s: too many unauthenticated", victim.remote_address)
                victim.abort("shed: too many connections waiting to authenticate")
            conn._on_admit = partial(_admitted, the_gate, conn)
        try:
            if on_connection is not None:
                conn._hold_handlers()
            async with single_errors(), trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                if on_connection is not None:
                    await nursery.start(_watch, conn, on_connection)
                    conn._release_handlers()
        except HandshakeFailed as exc:
            log.info("refused connection from %s: %s", conn.remote_address, exc)
        except ConnectionLost as exc:
            log.debug("connection from %s lost: %s", conn.remote_address, exc)
        finally:
            conn.abort("server shutting down")
            if the_gate is not None:
                the_gate.left(conn)

    await trio.serve_listeners(serve_one, listeners, task_status=task_status)


def _admitted(gate: Gate, conn: PeerConnection) -> None:
    gate.authenticated(conn, trio.current_time())


async def _watch(
    conn: PeerConnection,
    on_connection: OnConnection,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        taken = _Taken()

        async def run() -> None:
            try:
                await on_connection(conn, task_status=taken)
            finally:
                taken.started()  # it returned without (it refused the connection)

        nursery.start_soon(run)
        await taken.event.wait()
        task_status.started()
        await conn.wait_closed()
        nursery.cancel_scope.cancel()


class _Taken:
    """The ``task_status`` given to on_connection (which may also return without it)."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: None = None) -> None:
        self.event.set()
