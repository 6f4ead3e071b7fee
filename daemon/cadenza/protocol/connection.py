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
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from . import frames as fr
from . import messages
from .budget import UNLIMITED, Budget, MemoryPool
from .errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from .frames import FRAME_HEADER, LENGTH_PREFIX, MAX_PLAINTEXT, FrameType, Pattern
from .messages import Message, Priority
from .noise import HandshakeState, KeyPair, NoiseTransport
from .scheduler import SendChannel, SendScheduler

PROTOCOL_NAMES: Final = {
    Pattern.XX: "Noise_XX_25519_ChaChaPoly_SHA256",
    Pattern.IK: "Noise_IK_25519_ChaChaPoly_SHA256",
}
# Binds both sides to this protocol and version: a mismatch fails the handshake.
PROLOGUE: Final = b"cadenza/1"
# Per-channel credit. It must exceed what sits between the two applications (socket buffers
# plus the bandwidth-delay product) or an urgent channel stalls on credit while less urgent
# data fills the link; 512 KiB covers ~100 Mbit/s at 40 ms.
INITIAL_WINDOW: Final = 512 * 1024
# Channels a peer may have open towards us at once; more are refused, not queued. The
# connection's Budget (budget.py) lowers this, and bounds what those channels may hold.
MAX_CHANNELS: Final = 128
# The sum of all send queues; past this the caller is not applying backpressure.
MAX_QUEUED: Final = 64 * 1024 * 1024
# Unparsed received bytes; a well-behaved reader drains after every read.
MAX_RECEIVE_BUFFER: Final = 4 * 1024 * 1024
# Remote channel ids remembered after they close (late frames are dropped, not reopened).
_REMEMBER_CLOSED: Final = 4096
# Compact the receive buffer once this much has been consumed from its front.
_COMPACT_AT: Final = 256 * 1024
# Answers the peer's frames make us queue (pongs, refusals of its channels) that it has not
# read yet. A peer that sends them faster than it reads the answers makes us hold memory for
# nothing (HTTP/2's ping and reset floods); a legitimate one has a handful outstanding.
MAX_ANSWERS_QUEUED: Final = 1024


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""next_event() has nothing more until more bytes arrive."""


# --- events -------------------------------------------------------------------------------------


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


class _RecvChannel:
    __slots__ = ("bulk", "ended", "frag", "held", "priority", "unacked", "window")

    def __init__(self) -> None:
        self.window = INITIAL_WINDOW  # credit we still grant the peer
        self.unacked = 0  # consumed but not yet returned as WINDOW_UPDATE
        # The unfinished message: one buffer, so that a peer sending tiny fragments costs us
        # the bytes it sent and not an object per fragment.
        self.frag = bytearray()
        self.held = 0  # received and not yet consumed (on the peer's channels only)
        self.bulk = False
        self.priority = 0
        self.ended = False


@dataclass(eq=False)
class _Channel:
    send: SendChannel
    recv: _RecvChannel
    local: bool  # we opened it


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
        self.state = State.HANDSHAKE
        self._static = static
        self._ephemeral = ephemeral
        self._payload = payload
        self._pattern: Pattern | None = None
        self._hs: HandshakeState | None = None
        self._transport: NoiseTransport | None = None
        self._remote_payload = b""
        self._rbuf = bytearray()
        self._rpos = 0
        self._eof = False
        self._plain: memoryview | None = None
        self._ppos = 0
        self._events: deque[Event] = deque()
        self._out: list[bytes] = []  # handshake bytes and fully built transport messages
        self._sched = SendScheduler()
        self._channels: dict[int, _Channel] = {}
        self._next_local = 1 if role is Role.INITIATOR else 2
        self._highest_remote = 0
        # Ids of the peer's channels that ended, so late frames are not taken for new channels.
        # The scheduler may send a later channel's first frame before an earlier one's, so ids
        # alone cannot tell; a reset races at most one window of frames, so recent is enough.
        self._recently_closed: set[int] = set()
        self._closed_order: deque[int] = deque()
        self._remote_open = 0
        self._local_open = 0
        self.goaway_sent = False
        self.goaway_received = False
        self.bytes_in = 0
        self.bytes_out = 0
        # Whole Noise messages read: progress, which an idle timer should count (a peer that
        # trickles a message a byte at a time sends bytes, and makes none).
        self.messages_in = 0
        self.budget = budget
        self.held = 0  # bytes on the peer's channels not yet consumed (see budget.py)
        self._pool = pool
        # Called when the pool sheds this connection, with why (the I/O layer closes it).
        self.on_shed: Callable[[str], None] | None = None
        # An IK responder has the peer's word (its first message) but not yet proof that the
        # peer is live: a recorded first message replays byte for byte. Proof is the first
        # transport message, which needs the ephemeral key of our reply.
        self._proven = True
        if pool is not None:
            pool.join(self)
        if role is Role.INITIATOR:
            self._pattern = Pattern.IK if remote_static is not None else Pattern.XX
            self._hs = HandshakeState(
                PROTOCOL_NAMES[self._pattern],
                initiator=True,
                prologue=PROLOGUE,
                s=static,
                e=ephemeral,
                rs=remote_static,
            )
            first = self._hs.write_message(payload if self._pattern is Pattern.IK else b"")
            self._out.append(fr.PREAMBLE.pack(fr.MAGIC, fr.VERSION, self._pattern))
            self._out.append(LENGTH_PREFIX.pack(len(first)) + first)
        elif remote_static is not None:
            raise LocalProtocolError("only the initiator may know the remote static key in advance")

    # --- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the transport; ``b""`` means EOF."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after EOF")
        if len(self._rbuf) - self._rpos + len(data) > MAX_RECEIVE_BUFFER:
            raise LocalProtocolError("receive buffer full: call next_event() until NEED_DATA")
        if self._rpos >= _COMPACT_AT:
            del self._rbuf[: self._rpos]
            self._rpos = 0
        self._rbuf += data
        self.bytes_in += len(data)

    def next_event(self) -> Event | Literal[_Sentinel.NEED_DATA]:
        """The next event, or NEED_DATA; RemoteProtocolError if the peer broke the protocol."""
        try:
            while not self._events:
                if self.state is State.CLOSED:
                    return NEED_DATA
                if self._plain is not None:
                    self._next_frame()
                    continue
                span = self._next_noise_message()
                if span is None:
                    if self._events:
                        break
                    return NEED_DATA
                start, end = span
                self.messages_in += 1
                # Decrypt straight out of the receive buffer; the views are released before
                # the buffer is touched again.
                with memoryview(self._rbuf) as view, view[start:end] as msg:
                    if self.state is State.HANDSHAKE:
                        self._handshake_step(msg)
                    else:
                        assert self._transport is not None
                        self._plain = memoryview(self._transport.decrypt(msg))
                        self._ppos = 0
                        if not self._proven:
                            self._proven = True
                            self._events.append(PeerProven())
            return self._events.popleft()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        except ProtocolError:
            self.state = State.CLOSED
            self._release_all()
            raise

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Tell the peer why we are hanging up (a last GOAWAY), then stop."""
        if self.state is State.OPEN and self._transport is not None and not self.goaway_sent:
            self.goaway_sent = True
            frame = fr.goaway(self._highest_remote, exc.code, str(exc))
            try:
                ct = self._transport.encrypt(frame)
            except ProtocolError:
                ct = None
            if ct is not None:
                self._out.append(LENGTH_PREFIX.pack(len(ct)) + ct)
        self.state = State.CLOSED
        self._release_all()

    def _next_noise_message(self) -> tuple[int, int] | None:
        buf = self._rbuf
        pos = self._rpos
        if pos and pos == len(buf):
            # All read: let the memory go now, not at the next compaction (a stranger's
            # connection would otherwise park up to _COMPACT_AT of spent bytes).
            buf.clear()
            self._rpos = pos = 0
        avail = len(buf) - pos
        if self.role is Role.RESPONDER and self._pattern is None:
            if avail < fr.PREAMBLE.size:
                self._check_eof(avail, "in the preamble")
                return None
            magic, version, pattern = fr.PREAMBLE.unpack_from(buf, pos)
            if magic != fr.MAGIC:
                raise RemoteProtocolError("not a Cadenza peer (bad magic)")
            if version != fr.VERSION:
                raise RemoteProtocolError(f"unsupported protocol version {version}")
            try:
                self._pattern = Pattern(pattern)
            except ValueError:
                raise RemoteProtocolError(f"unknown handshake pattern {pattern}") from None
            self._hs = HandshakeState(
                PROTOCOL_NAMES[self._pattern],
                initiator=False,
                prologue=PROLOGUE,
                s=self._static,
                e=self._ephemeral,
            )
            pos += fr.PREAMBLE.size
            self._rpos = pos
            avail -= fr.PREAMBLE.size
        if avail < LENGTH_PREFIX.size:
            self._check_eof(avail, "in a message length")
            return None
        (n,) = LENGTH_PREFIX.unpack_from(buf, pos)
        if avail < LENGTH_PREFIX.size + n:
            self._check_eof(avail, "in a message")
            return None
        start = pos + LENGTH_PREFIX.size
        self._rpos = start + n
        return start, start + n

    def _check_eof(self, avail: int, where: str) -> None:
        """Out of bytes: fine unless the peer has closed; a clean EOF becomes an event."""
        if not self._eof:
            return
        if avail == 0 and self.state is State.OPEN:
            self.state = State.CLOSED
            self._events.append(ConnectionClosed())
            return
        if self.state is State.HANDSHAKE:
            raise RemoteProtocolError("peer closed the connection during the handshake")
        raise RemoteProtocolError(f"connection closed by peer {where}")

    def _handshake_step(self, msg: memoryview) -> None:
        hs = self._hs
        assert hs is not None and self._pattern is not None
        payload = hs.read_message(msg)
        if payload:
            self._remote_payload = payload
        if not hs.complete:
            # Our static key goes out now (XX: messages 2, 3; IK: reply), and our payload with it.
            reply = hs.write_message(self._payload)
            self._out.append(LENGTH_PREFIX.pack(len(reply)) + reply)
        if hs.complete:
            self._finish_handshake()

    def _finish_handshake(self) -> None:
        hs = self._hs
        assert hs is not None and self._pattern is not None
        send, recv = hs.split()
        self._transport = NoiseTransport(send, recv)
        remote = hs.remote_static
        if remote is None:
            raise RemoteProtocolError("handshake completed without a remote static key")
        self.state = State.OPEN
        self._proven = not (self.role is Role.RESPONDER and self._pattern is Pattern.IK)
        self._events.append(
            HandshakeComplete(bytes(remote), self._remote_payload, hs.handshake_hash, self._pattern)
        )
        self._hs = None

    def _next_frame(self) -> None:
        plain = self._plain
        assert plain is not None
        pos = self._ppos
        if len(plain) - pos < FRAME_HEADER.size:
            if len(plain) != pos:
                raise RemoteProtocolError("truncated frame header")
            self._plain = None
            return
        ftype, flags, channel, length = FRAME_HEADER.unpack_from(plain, pos)
        start = pos + FRAME_HEADER.size
        end = start + length
        if end > len(plain):
            raise RemoteProtocolError("frame longer than its transport message")
        self._ppos = end
        payload = plain[start:end]
        if ftype == FrameType.DATA:
            self._on_data(flags, channel, payload)
        elif ftype == FrameType.WINDOW_UPDATE:
            self._on_window_update(channel, payload)
        elif ftype == FrameType.RESET:
            self._on_reset(channel, payload)
        elif ftype == FrameType.PING:
            self._on_ping(flags, channel, payload)
        elif ftype == FrameType.GOAWAY:
            self._on_goaway(channel, payload)
        else:
            raise RemoteProtocolError(f"unknown frame type {ftype}")

    def _on_data(self, flags: int, cid: int, payload: memoryview) -> None:
        if flags & ~fr.KNOWN_DATA_FLAGS:
            raise RemoteProtocolError(f"unknown DATA flags {flags:#x}")
        ch = self._channels.get(cid)
        opened = False
        if ch is None:
            if cid == 0 or (cid & 1) == (self._next_local & 1):
                if cid == 0 or cid >= self._next_local:
                    raise RemoteProtocolError(f"DATA on channel {cid} that we never opened")
                return  # our channel, already closed or reset: late data is dropped
            if cid in self._recently_closed:
                return  # the peer's channel we already closed or reset: late data is dropped
            self._highest_remote = max(self._highest_remote, cid)
            if self._remote_open >= min(MAX_CHANNELS, self.budget.channels) or self.goaway_sent:
                why = "shutting down" if self.goaway_sent else "too many channels"
                code = ErrorCode.REFUSED if self.goaway_sent else ErrorCode.TOO_MANY_CHANNELS
                self._answer(fr.reset(cid, code, why))
                self._remember_closed(cid)
                return
            ch = _Channel(SendChannel(cid, INITIAL_WINDOW), _RecvChannel(), local=False)
            self._channels[cid] = ch
            self._remote_open += 1
            opened = True
        rc = ch.recv
        if rc.ended:
            raise RemoteProtocolError(f"DATA on channel {cid} after its end")
        n = len(payload)
        if n > rc.window:
            raise RemoteProtocolError(
                f"peer overran the flow-control window on channel {cid}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        rc.window -= n
        if not ch.local:
            self._hold(rc, cid, n)
        frag = rc.frag
        if not frag:
            rc.bulk = bool(flags & fr.BULK)
            rc.priority = (flags & fr.PRIORITY_MASK) >> fr.PRIORITY_SHIFT
        end_message = bool(flags & fr.END_MESSAGE)
        end_channel = bool(flags & fr.END_CHANNEL)
        if end_channel and not end_message:
            raise RemoteProtocolError("END_CHANNEL without END_MESSAGE")
        if end_channel:
            rc.ended = True
        limit = messages.MAX_MESSAGE_SIZE if ch.local else self.budget.message
        if not end_message:
            if n == 0:
                raise RemoteProtocolError("empty non-final fragment")
            frag += payload
            if len(frag) > limit:
                raise RemoteProtocolError(
                    f"message on channel {cid} exceeds the size limit ({limit} bytes)",
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                )
            return
        if frag:
            frag += payload
            body = memoryview(frag)
            size = len(frag)
            rc.frag = bytearray()
        else:
            body = payload
            size = n
        if size > limit:
            raise RemoteProtocolError(
                f"message on channel {cid} exceeds the size limit ({limit} bytes)",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        if size == 0 and end_channel:
            self._events.append(ChannelEnded(cid, opened))
            self._maybe_forget(cid)
            return
        prio = Priority(rc.priority)
        if rc.bulk:
            if len(body) < messages.BULK_HEADER.size:
                self._reject(cid, "bulk message shorter than its header", size)
                return
            kind, index = messages.BULK_HEADER.unpack_from(body)
            data = body[messages.BULK_HEADER.size :]
            self._events.append(
                BulkReceived(cid, kind, index, data, prio, end_channel, opened, size)
            )
        else:
            try:
                msg = messages.decode(body)
            except RemoteProtocolError as exc:
                self._reject(cid, str(exc), size)
                return
            self._events.append(MessageReceived(cid, msg, prio, end_channel, opened, size))
        if end_channel:
            self._maybe_forget(cid)

    def _hold(self, rc: _RecvChannel, cid: int, n: int) -> None:
        """The peer's channel ``cid`` makes us hold ``n`` more bytes, within its budget."""
        if self.held + n > self.budget.held:
            raise RemoteProtocolError(
                f"peer made us hold more than its budget of {self.budget.held} bytes"
                f" (channel {cid})",
                code=ErrorCode.OVER_BUDGET,
            )
        if self._pool is not None:
            self._pool.charge(self, n)
        self.held += n
        rc.held += n

    def _unhold(self, rc: _RecvChannel, n: int) -> None:
        if n > rc.held:
            n = rc.held
        if n:
            rc.held -= n
            self.held -= n
            if self._pool is not None:
                self._pool.release(self, n)

    def set_budget(self, budget: Budget) -> None:
        """What the peer may make us hold from now on (after login or admission)."""
        self.budget = budget

    def shed(self, reason: str) -> None:
        """The process-wide pool drops this connection to make room (see budget.py)."""
        self._fail(RemoteProtocolError(reason, code=ErrorCode.OVER_BUDGET))
        self._release_all()
        if self.on_shed is not None:
            self.on_shed(reason)

    def _release_all(self) -> None:
        if self._pool is not None:
            self._pool.leave(self)
            self._pool = None
        self.held = 0

    @property
    def peer_proven(self) -> bool:
        """False only while an IK initiator has not yet shown it is live (see PeerProven)."""
        return self.state is State.OPEN and self._proven

    def _reject(self, cid: int, error: str, size: int) -> None:
        self.consume(cid, size)
        if self._remove(cid) is not None:
            self._answer(fr.reset(cid, ErrorCode.PROTOCOL_ERROR, error[: fr.MAX_REASON]))
        self._events.append(MessageRejected(cid, error))

    def _on_window_update(self, cid: int, payload: memoryview) -> None:
        if len(payload) != fr.U32.size:
            raise RemoteProtocolError("WINDOW_UPDATE must carry 4 bytes")
        (inc,) = fr.U32.unpack_from(payload)
        if inc == 0:
            raise RemoteProtocolError("WINDOW_UPDATE of zero")
        ch = self._channels.get(cid)
        if ch is None:
            return  # channel already gone: the credit is moot
        if ch.send.window + inc > 2 * INITIAL_WINDOW:
            raise RemoteProtocolError(
                "WINDOW_UPDATE beyond the window", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        self._sched.grant(ch.send, inc)

    def _on_reset(self, cid: int, payload: memoryview) -> None:
        if len(payload) < 1:
            raise RemoteProtocolError("RESET without a code")
        code = fr.parse_code(payload[0])
        reason = fr.parse_reason(payload[1:])
        if self._remove(cid) is None:
            return
        self._events.append(ChannelReset(cid, code, reason))

    def _on_ping(self, flags: int, cid: int, payload: memoryview) -> None:
        if cid != 0 or len(payload) != 8:
            raise RemoteProtocolError("PING must be on channel 0 with 8 bytes")
        if flags & fr.ACK:
            self._events.append(PongReceived(bytes(payload)))
        else:
            self._answer(fr.ping(bytes(payload), ack=True))
            self._events.append(PingReceived(bytes(payload)))

    def _on_goaway(self, cid: int, payload: memoryview) -> None:
        if cid != 0 or len(payload) < 5:
            raise RemoteProtocolError("GOAWAY must be on channel 0 with at least 5 bytes")
        (last,) = fr.U32.unpack_from(payload)
        code = fr.parse_code(payload[4])
        reason = fr.parse_reason(payload[5:])
        self.goaway_received = True
        self._events.append(GoAway(last, code, reason))

    def _answer(self, frame: bytes) -> None:
        if self._sched.urgent_frames >= MAX_ANSWERS_QUEUED:
            raise RemoteProtocolError(
                "peer sends pings or channels faster than it reads our answers",
                code=ErrorCode.OVER_BUDGET,
            )
        self._sched.push_urgent(frame)

    def _maybe_forget(self, cid: int) -> None:
        ch = self._channels.get(cid)
        if ch is not None and ch.recv.ended and ch.send.closed and not ch.send.queue:
            self._remove(cid)

    def _remove(self, cid: int) -> _Channel | None:
        ch = self._channels.pop(cid, None)
        if ch is None:
            return None
        self._sched.drop(ch.send)
        if ch.local:
            self._local_open -= 1
        else:
            self._remote_open -= 1
            self._remember_closed(cid)
            self._unhold(ch.recv, ch.recv.held)
        return ch

    def _remember_closed(self, cid: int) -> None:
        self._recently_closed.add(cid)
        self._closed_order.append(cid)
        if len(self._closed_order) > _REMEMBER_CLOSED:
            self._recently_closed.discard(self._closed_order.popleft())

    # --- sending -------------------------------------------------------------------------------

    def open_channel(self) -> int:
        """Allocate a new channel id of ours; messages sent on it open it at the peer."""
        self._require_open()
        if self.goaway_received:
            raise LocalProtocolError("peer is going away: no new channels")
        if self._local_open >= MAX_CHANNELS:
            raise LocalProtocolError(f"{MAX_CHANNELS} channels already open: wait for one to end")
        cid = self._next_local
        if cid > fr.MAX_CHANNEL_ID:
            raise LocalProtocolError("channel ids exhausted: open a new connection")
        self._next_local += 2
        self._local_open += 1
        self._channels[cid] = _Channel(SendChannel(cid, INITIAL_WINDOW), _RecvChannel(), local=True)
        return cid

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
        self._require_open()
        ch = self._channels.get(channel)
        if ch is None:
            raise LocalProtocolError(f"channel {channel} is not open")
        if self._sched.queued_bytes + len(body) > MAX_QUEUED:
            raise LocalProtocolError("send queue full: wait for data_to_send() to drain it")
        self._sched.push(ch.send, body, priority, bulk=bulk, end_channel=end_channel)

    def set_priority(self, channel: int, priority: int) -> None:
        ch = self._channels.get(channel)
        if ch is not None:
            self._sched.set_priority(ch.send, priority)

    def reset_channel(
        self, channel: int, code: ErrorCode = ErrorCode.CANCELLED, reason: str = ""
    ) -> None:
        """Abandon ``channel`` both ways; queued data for it is dropped. Idempotent."""
        if self._remove(channel) is None:
            return
        if self.state is State.OPEN:
            self._sched.push_urgent(fr.reset(channel, code, reason))

    def consume(self, channel: int, nbytes: int) -> None:
        """The application is done with ``nbytes`` received on ``channel``: grant more credit."""
        ch = self._channels.get(channel)
        if ch is None or nbytes <= 0:
            return
        rc = ch.recv
        if not ch.local:
            self._unhold(rc, nbytes)
        rc.unacked += nbytes
        # Top up once half the window is used, not per message: a reply that fits in half a
        # window (a request for chunks) needs no update at all, and a long transfer still has
        # half a window of credit on its way while the update travels.
        if rc.unacked >= INITIAL_WINDOW // 2 and not rc.ended:
            rc.window += rc.unacked
            self._sched.push_urgent(fr.window_update(channel, rc.unacked))
            rc.unacked = 0

    def send_ping(self, payload: bytes) -> None:
        self._require_open()
        if len(payload) != 8:
            raise LocalProtocolError("PING payload must be 8 bytes")
        self._sched.push_urgent(fr.ping(payload))

    def send_goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Announce shutdown: the peer opens no new channels; channels open now may finish."""
        if self.state is not State.OPEN or self.goaway_sent:
            return
        self.goaway_sent = True
        self._sched.push_urgent(fr.goaway(self._highest_remote, code, reason))

    def queued_bytes(self, channel: int | None = None) -> int:
        """Bytes waiting to be sent on ``channel`` (or on all channels)."""
        if channel is None:
            return self._sched.queued_bytes
        ch = self._channels.get(channel)
        return 0 if ch is None else ch.send.queued_bytes

    def send_window(self, channel: int) -> int:
        ch = self._channels.get(channel)
        return 0 if ch is None else ch.send.window

    def is_open(self, channel: int) -> bool:
        return channel in self._channels

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    @property
    def can_open_channel(self) -> bool:
        """False while the peer's limit of open channels from us is reached."""
        return self._local_open < MAX_CHANNELS and not self.goaway_received

    @property
    def wants_write(self) -> bool:
        return bool(self._out) or (self.state is State.OPEN and self._sched.has_sendable())

    def data_to_send(self, max_bytes: int = 256 * 1024) -> bytes:
        """Bytes for the wire, most urgent first; at most about ``max_bytes`` (b"" if none)."""
        out = self._out
        total = sum(len(b) for b in out)
        transport = self._transport
        if self.state is State.OPEN and transport is not None:
            sched = self._sched
            ended: list[int] = []
            while total < max_bytes and sched.has_sendable():
                parts: list[bytes | memoryview] = []
                room = MAX_PLAINTEXT
                while True:
                    item = sched.next_frame(room)
                    if item is None:
                        break
                    head, payload = item
                    if payload is not None and head[1] & fr.END_CHANNEL:
                        ended.append(int.from_bytes(head[2:6], "big"))
                    parts.append(head)
                    room -= len(head)
                    if payload is not None:
                        parts.append(payload)
                        room -= len(payload)
                if not parts:
                    break
                ct = transport.encrypt(b"".join(parts))
                out.append(LENGTH_PREFIX.pack(len(ct)))
                out.append(ct)
                total += LENGTH_PREFIX.size + len(ct)
            # Channels whose last frame just left may now be forgotten.
            for cid in ended:
                self._maybe_forget(cid)
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.bytes_out += len(data)
        return data

    def _require_open(self) -> None:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"connection is {self.state.value}, not open")

    def close(self) -> None:
        """Mark the connection closed locally (after an error or the transport went away)."""
        self.state = State.CLOSED
        self._release_all()
