"""One Cadenza connection, sans-IO: Noise handshake, then multiplexed channels.

Feed received bytes with :meth:`Connection.receive_data` (``b""`` at EOF),
pull events with :meth:`Connection.next_event` until it returns
:data:`NEED_DATA`, queue outgoing messages with the ``send_*`` methods and put
whatever :meth:`Connection.data_to_send` returns on the wire.

Channels are the unit of multiplexing, flow control and cancellation (one per
request, like HTTP/2 streams). The initiator of the connection opens odd
channel ids, the responder even ones. Each side grants the other
:data:`INITIAL_WINDOW` bytes of credit per channel and tops it up as the
application consumes what arrived (:meth:`Connection.consume`), so memory per
channel is bounded and a slow consumer on one channel never blocks another.

:class:`Connection` is the one public face of two layers, each the only owner of its
decisions: :mod:`._framing` (the connection's state, the handshake, Noise, frames, PING) and
:mod:`._channels` (the channel table, credit, reassembly, GOAWAY's admission of new channels,
and what the peer's channels may make us hold). They share one event queue and one
:class:`~.scheduler.SendScheduler`; everything an application needs is imported from here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

from . import messages
from ._channels import (
    _REMEMBER_CLOSED,
    INITIAL_WINDOW,
    MAX_ANSWERS_QUEUED,
    MAX_CHANNELS,
    MAX_QUEUED,
    Allowance,
    Channels,
    _Channel,
    _RecvChannel,
)
from ._events import (
    BulkReceived,
    ChannelEnded,
    ChannelReset,
    ConnectionClosed,
    Event,
    GoAway,
    HandshakeComplete,
    MessageReceived,
    MessageRejected,
    Payload,
    PeerProven,
    PingReceived,
    PongReceived,
)
from ._framing import (
    _COMPACT_AT,
    MAX_RECEIVE_BUFFER,
    NEED_DATA,
    PROLOGUE,
    PROTOCOL_NAMES,
    Framing,
    Role,
    State,
    _Sentinel,
)
from .budget import UNLIMITED, Budget, MemoryPool
from .errors import ErrorCode, RemoteProtocolError
from .messages import Message, Priority
from .noise import KeyPair, NoiseTransport
from .scheduler import SendScheduler

__all__ = [
    "INITIAL_WINDOW",
    "MAX_ANSWERS_QUEUED",
    "MAX_CHANNELS",
    "MAX_QUEUED",
    "MAX_RECEIVE_BUFFER",
    "NEED_DATA",
    "PROLOGUE",
    "PROTOCOL_NAMES",
    "_COMPACT_AT",
    "_REMEMBER_CLOSED",
    "BulkReceived",
    "ChannelEnded",
    "ChannelReset",
    "Connection",
    "ConnectionClosed",
    "Event",
    "GoAway",
    "HandshakeComplete",
    "MessageReceived",
    "MessageRejected",
    "Payload",
    "PeerProven",
    "PingReceived",
    "PongReceived",
    "Role",
    "State",
    "_Channel",
    "_RecvChannel",
    "_Sentinel",
]


class Connection:
    """A Cadenza connection; see the module docstring for the calling pattern."""

    def __init__(
        self,
        role: Role,
        static: KeyPair,
        *,
        remote_static: bytes | None = None,
        payload: bytes = b"",
        ephemeral: KeyPair | None = None,
        budget: Budget = UNLIMITED,
        pool: MemoryPool | None = None,
    ) -> None:
        """``remote_static`` (initiator only) selects IK; without it, XX.

        ``payload`` is sent encrypted in the handshake message that also
        carries our static key (the membership certificate rides here).
        ``budget`` limits the channels the peer opens (raise it with :meth:`set_budget` as
        the peer earns trust); ``pool`` is the process-wide bound they all count against.
        """
        self.role = role
        events: deque[Event] = deque()
        sched = SendScheduler()
        self._allowance = Allowance(budget, pool, self)
        self._chan = Channels(role is Role.INITIATOR, events, sched, self._allowance)
        # Called when the pool sheds this connection, with why (the I/O layer closes it).
        self.on_shed: Callable[[str], None] | None = None
        if pool is not None:
            pool.join(self)
        self._framing = Framing(
            role, static, remote_static, payload, ephemeral, events, sched, self._chan
        )

    # --- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the transport; ``b""`` means EOF."""
        self._framing.receive_data(data)

    def next_event(self) -> Event | Literal[_Sentinel.NEED_DATA]:
        """The next event, or NEED_DATA; RemoteProtocolError if the peer broke the protocol."""
        return self._framing.next_event()

    def set_budget(self, budget: Budget) -> None:
        """What the peer may make us hold from now on (after login or admission)."""
        self._allowance.budget = budget

    def shed(self, reason: str) -> None:
        """The process-wide pool drops this connection to make room (see budget.py)."""
        self._framing.fail(RemoteProtocolError(reason, code=ErrorCode.OVER_BUDGET))
        if self.on_shed is not None:
            self.on_shed(reason)

    @property
    def peer_proven(self) -> bool:
        """False only while an IK initiator has not yet shown it is live (see PeerProven)."""
        return self._framing.peer_proven

    # --- sending -------------------------------------------------------------------------------

    def open_channel(self) -> int:
        """Allocate a new channel id of ours; messages sent on it open it at the peer."""
        self._framing.require_open()
        return self._chan.open_channel()

    def send_message(
        self,
        channel: int,
        msg: Message,
        *,
        priority: int = Priority.CONTROL,
        end_channel: bool = False,
    ) -> None:
        self._queue(channel, messages.encode(msg), priority, bulk=False, end_channel=end_channel)

    def send_bulk(
        self,
        channel: int,
        kind: int,
        index: int,
        data: bytes | bytearray | memoryview,
        *,
        priority: int = Priority.PLAYING,
        end_channel: bool = False,
    ) -> None:
        # One copy here (header + data) is cheaper than a second frame per chunk.
        body = messages.BULK_HEADER.pack(kind, index) + data
        self._queue(channel, body, priority, bulk=True, end_channel=end_channel)

    def end_channel(self, channel: int) -> None:
        """Half-close: we send nothing more on ``channel``."""
        self._queue(channel, b"", Priority.CONTROL, bulk=False, end_channel=True)

    def _queue(
        self, channel: int, body: bytes, priority: int, *, bulk: bool, end_channel: bool
    ) -> None:
        self._framing.require_open()
        self._chan.queue(channel, body, priority, bulk=bulk, end_channel=end_channel)

    def set_priority(self, channel: int, priority: int) -> None:
        self._chan.set_priority(channel, priority)

    def reset_channel(
        self, channel: int, code: ErrorCode = ErrorCode.CANCELLED, reason: str = ""
    ) -> None:
        """Abandon ``channel`` both ways; queued data for it is dropped. Idempotent."""
        self._chan.reset(channel, code, reason, tell_peer=self._framing.state is State.OPEN)

    def consume(self, channel: int, nbytes: int) -> None:
        """The application is done with ``nbytes`` received on ``channel``: grant more credit."""
        self._chan.consume(channel, nbytes)

    def send_ping(self, payload: bytes) -> None:
        self._framing.send_ping(payload)

    def send_goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Announce shutdown: the peer opens no new channels; channels open now may finish."""
        if self._framing.state is State.OPEN:
            self._chan.send_goaway(code, reason)

    def queued_bytes(self, channel: int | None = None) -> int:
        """Bytes waiting to be sent on ``channel`` (or on all channels)."""
        return self._chan.queued_bytes(channel)

    def send_window(self, channel: int) -> int:
        return self._chan.send_window(channel)

    def is_open(self, channel: int) -> bool:
        return channel in self._chan.table

    @property
    def open_channels(self) -> int:
        return len(self._chan.table)

    @property
    def can_open_channel(self) -> bool:
        """False while the peer's limit of open channels from us is reached."""
        return self._chan.can_open_channel

    @property
    def wants_write(self) -> bool:
        return self._framing.wants_write

    def data_to_send(self, max_bytes: int = 256 * 1024) -> bytes:
        """Bytes for the wire, most urgent first; at most about ``max_bytes`` (b"" if none)."""
        return self._framing.data_to_send(max_bytes)

    def close(self) -> None:
        """Mark the connection closed locally (after an error or the transport went away)."""
        self._framing.close()

    # --- the state the layers own, read here -----------------------------------------------------

    @property
    def state(self) -> State:
        return self._framing.state

    @property
    def bytes_in(self) -> int:
        return self._framing.bytes_in

    @property
    def bytes_out(self) -> int:
        return self._framing.bytes_out

    @property
    def messages_in(self) -> int:
        """Whole Noise messages read: progress, which an idle timer should count (a peer that
        trickles a message a byte at a time sends bytes, and makes none)."""
        return self._framing.messages_in

    @property
    def goaway_sent(self) -> bool:
        return self._chan.goaway_sent

    @property
    def goaway_received(self) -> bool:
        return self._chan.goaway_received

    @property
    def budget(self) -> Budget:
        return self._allowance.budget

    @property
    def held(self) -> int:
        """Bytes on the peer's channels not yet consumed (see budget.py)."""
        return self._allowance.held

    # --- reached into by tests/unit/test_protocol_connection.py, to misbehave like a broken peer

    @property
    def _channels(self) -> dict[int, _Channel]:
        return self._chan.table

    @property
    def _local_open(self) -> int:
        return self._chan.local_open

    @_local_open.setter
    def _local_open(self, value: int) -> None:
        self._chan.local_open = value

    @property
    def _transport(self) -> NoiseTransport | None:
        return self._framing.transport

    @property
    def _rbuf(self) -> bytearray:
        return self._framing.rbuf

    @property
    def _rpos(self) -> int:
        return self._framing.rpos
