"""What :meth:`cadenza.protocol.connection.Connection.next_event` returns.

A module of their own because both halves of the connection make them: the framing layer
(:mod:`._framing`: handshake, pings, the end of the stream) and the channel layer
(:mod:`._channels`: messages, ends, resets, going away). :mod:`.connection` re-exports them;
import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .errors import ErrorCode
from .frames import Pattern
from .messages import Message, Priority


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    remote_static: bytes
    remote_payload: bytes
    handshake_hash: bytes
    pattern: Pattern


@dataclass(frozen=True, slots=True)
class PeerProven:
    """The peer of an IK handshake we answered is live: its first transport message
    decrypted. Until then it may be a recording of someone else's first message (a replay),
    and must not be taken in. (XX proves liveness within the handshake: no such event.)"""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    channel: int
    message: Message
    priority: Priority
    end_channel: bool
    opened: bool  # first message on a channel the peer opened
    size: int  # bytes of credit to hand back with consume()


# A received payload: a view into the decrypted message, not a copy. Named, because mypyc
# (cadenza.sim.native) looks a bare ``memoryview`` in a compiled dataclass up among the module's
# globals at import, and fails.
Payload: TypeAlias = memoryview


@dataclass(frozen=True, slots=True)
class BulkReceived:
    channel: int
    kind: int
    index: int
    data: Payload  # the raw payload, not copied
    priority: Priority
    end_channel: bool
    opened: bool
    size: int


@dataclass(frozen=True, slots=True)
class ChannelEnded:
    """The peer will send nothing more on ``channel`` (half close)."""

    channel: int
    opened: bool


@dataclass(frozen=True, slots=True)
class ChannelReset:
    channel: int
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message on ``channel`` failed to decode; the channel was reset, the connection lives on."""

    channel: int
    error: str


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged us (already answered). A responder's first PING means "accepted"."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class GoAway:
    last_channel: int
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the transport cleanly (EOF between messages)."""


Event = (
    HandshakeComplete
    | PeerProven
    | MessageReceived
    | BulkReceived
    | ChannelEnded
    | ChannelReset
    | MessageRejected
    | PingReceived
    | PongReceived
    | GoAway
    | ConnectionClosed
)
