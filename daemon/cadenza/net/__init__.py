"""Cadenza's trio layer around :mod:`cadenza.protocol`: dial, accept, channels, requests."""

from ._connection import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    REQUEST_TIMEOUT,
    Bulk,
    Channel,
    Handler,
    Identity,
    Item,
    PeerConnection,
    Verifier,
)
from ._dial import connect, open_connection
from ._errors import (
    ChannelEnded,
    ChannelReset,
    ConnectionLost,
    HandshakeFailed,
    NetError,
    RequestError,
    RequestFailed,
)
from ._gate import PEER_GATE, SERVICE_GATE, GateLimits
from ._serve import OnConnection, serve_connections
from ._util import single_errors

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "IDLE_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "PEER_GATE",
    "REQUEST_TIMEOUT",
    "SERVICE_GATE",
    "Bulk",
    "Channel",
    "ChannelEnded",
    "ChannelReset",
    "ConnectionLost",
    "GateLimits",
    "Handler",
    "HandshakeFailed",
    "Identity",
    "Item",
    "NetError",
    "OnConnection",
    "PeerConnection",
    "RequestError",
    "RequestFailed",
    "Verifier",
    "connect",
    "open_connection",
    "serve_connections",
    "single_errors",
]
