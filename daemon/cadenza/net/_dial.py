"""Opening connections: dial, handshake, authenticate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

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
from ._errors import HandshakeFailed
from ._util import single_errors

# TCP connect (including Happy Eyeballs across addresses); the handshake has its own deadline.
CONNECT_TIMEOUT: Final = 10.0


async def connect(
    nursery: trio.Nursery,
    host: str,
    port: int,
    *,
    identity: Identity,
    remote_static: bytes | None = None,
    verify: Verifier | None = None,
    handler: Handler | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    keepalive: float = KEEPALIVE_INTERVAL,
    idle_timeout: float = IDLE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    budget: Budget = UNLIMITED,
    pool: MemoryPool | None = None,
) -> PeerConnection:
    """Dial ``host:port`` and run the connection in ``nursery``; returns once authenticated.

    ``remote_static`` (the responder's known Noise key) selects the 1-RTT IK handshake
    and pins the peer's identity; without it, XX (and ``verify`` decides). ``budget`` and
    ``pool`` bound what the peer's own channels may make us hold (cadenza.protocol.budget).
    Raises :class:`HandshakeFailed` if the peer is unreachable or either side refuses.
    """
    try:
        with trio.fail_after(connect_timeout):
            stream = await _transport.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise HandshakeFailed(f"cannot reach {host}:{port}: timed out") from None
    except OSError as exc:
        raise HandshakeFailed(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    conn = PeerConnection(
        stream,
        sansio.Connection(
            sansio.Role.INITIATOR,
            identity.static,
            remote_static=remote_static,
            payload=identity.payload,
            budget=budget,
            pool=pool,
        ),
        handler=handler,
        verify=verify,
        keepalive=keepalive,
        idle_timeout=idle_timeout,
        handshake_timeout=handshake_timeout,
    )
    try:
        result: PeerConnection = await nursery.start(conn.run)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return result


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    *,
    identity: Identity,
    remote_static: bytes | None = None,
    verify: Verifier | None = None,
    handler: Handler | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    keepalive: float = KEEPALIVE_INTERVAL,
    idle_timeout: float = IDLE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> AsyncIterator[PeerConnection]:
    """``async with open_connection(...) as conn:``; graceful close on exit, abrupt on error."""
    async with single_errors(), trio.open_nursery() as nursery:
        conn = await connect(
            nursery,
            host,
            port,
            identity=identity,
            remote_static=remote_static,
            verify=verify,
            handler=handler,
            connect_timeout=connect_timeout,
            keepalive=keepalive,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
        )
        try:
            yield conn
        except BaseException:
            conn.abort("closed after an error")
            raise
        else:
            await conn.aclose()
