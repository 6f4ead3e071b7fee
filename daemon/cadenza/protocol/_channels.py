"""The channel layer of a connection: which channels exist, their credit, their messages.

Channels are the unit of multiplexing, flow control and cancellation (one per request, like
HTTP/2 streams). The initiator of the connection opens odd channel ids, the responder even
ones. Each side grants the other :data:`INITIAL_WINDOW` bytes of credit per channel and tops
it up as the application consumes what arrived (:meth:`Channels.consume`), so memory per
channel is bounded and a slow consumer on one channel never blocks another.

:class:`Channels` takes the decrypted DATA, WINDOW_UPDATE, RESET and GOAWAY frames of the
framing layer (:mod:`._framing`) and queues what it sends on the shared
:class:`~.scheduler.SendScheduler`; it knows nothing of Noise, of bytes on the wire, or of
whether the connection is open (:class:`~.connection.Connection` checks that before it asks).
:class:`Allowance` keeps what the channels the peer opened make us hold within their
:class:`~.budget.Budget` and the process's :class:`~.budget.MemoryPool`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from . import frames as fr
from . import messages
from ._events import (
    BulkReceived,
    ChannelEnded,
    ChannelReset,
    Event,
    GoAway,
    MessageReceived,
    MessageRejected,
)
from .budget import Budget, Member, MemoryPool
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .messages import Priority
from .scheduler import SendChannel, SendScheduler

# Per-channel credit. It must exceed what sits between the two applications (socket buffers
# plus the bandwidth-delay product) or an urgent channel stalls on credit while less urgent
# data fills the link; 512 KiB covers ~100 Mbit/s at 40 ms.
INITIAL_WINDOW: Final = 512 * 1024
# Channels a peer may have open towards us at once; more are refused, not queued. The
# connection's Budget (budget.py) lowers this, and bounds what those channels may hold.
MAX_CHANNELS: Final = 128
# The sum of all send queues; past this the caller is not applying backpressure.
MAX_QUEUED: Final = 64 * 1024 * 1024
# Remote channel ids remembered after they close (late frames are dropped, not reopened).
_REMEMBER_CLOSED: Final = 4096
# Answers the peer's frames make us queue (pongs, refusals of its channels) that it has not
# read yet. A peer that sends them faster than it reads the answers makes us hold memory for
# nothing (HTTP/2's ping and reset floods); a legitimate one has a handful outstanding.
MAX_ANSWERS_QUEUED: Final = 1024


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


class Allowance:
    """What the channels the peer opened make us hold (see budget.py), and the one place
    that lets them hold more: the per-connection budget and the process pool must agree on
    every byte, or the pool sheds the wrong connection."""

    def __init__(self, budget: Budget, pool: MemoryPool | None, member: Member) -> None:
        """``member`` is what the pool knows this connection by (and sheds)."""
        self.budget = budget
        self.held = 0  # bytes on the peer's channels not yet consumed
        self._pool = pool
        # The member is the connection that owns this allowance: kept only while in a pool,
        # and let go with it, so that the two are not a cycle for the collector to find.
        self._member = member if pool is not None else None

    def hold(self, rc: _RecvChannel, cid: int, n: int) -> None:
        """The peer's channel ``cid`` makes us hold ``n`` more bytes, within its budget."""
        if self.held + n > self.budget.held:
            raise RemoteProtocolError(
                f"peer made us hold more than its budget of {self.budget.held} bytes"
                f" (channel {cid})",
                code=ErrorCode.OVER_BUDGET,
            )
        pool, member = self._pool, self._member
        if pool is not None and member is not None:
            pool.charge(member, n)
        self.held += n
        rc.held += n

    def unhold(self, rc: _RecvChannel, n: int) -> None:
        if n > rc.held:
            n = rc.held
        if n:
            rc.held -= n
            self.held -= n
            pool, member = self._pool, self._member
            if pool is not None and member is not None:
                pool.release(member, n)

    def release_all(self) -> None:
        """The connection is closed: nothing it held counts any more, here or in the pool."""
        if self._pool is not None and self._member is not None:
            self._pool.leave(self._member)
        self._pool = self._member = None
        self.held = 0


class Channels:
    """The channel table, flow control both ways, reassembly, and who may open what."""

    def __init__(
        self,
        initiator: bool,
        events: deque[Event],
        sched: SendScheduler,
        allowance: Allowance,
    ) -> None:
        """``events`` and ``sched`` are the connection's, shared with the framing layer."""
        self._events = events
        self._sched = sched
        self.allowance = allowance
        self.table: dict[int, _Channel] = {}
        self._next_local = 1 if initiator else 2
        self.highest_remote = 0
        # Ids of the peer's channels that ended, so late frames are not taken for new channels.
        # The scheduler may send a later channel's first frame before an earlier one's, so ids
        # alone cannot tell; a reset races at most one window of frames, so recent is enough.
        self._recently_closed: set[int] = set()
        self._closed_order: deque[int] = deque()
        self._remote_open = 0
        self.local_open = 0
        # GOAWAY closes admission: sent, we refuse the peer's new channels; received, we open
        # none. Both ways it is a decision about channels, so it is kept here.
        self.goaway_sent = False
        self.goaway_received = False

    # --- receiving -----------------------------------------------------------------------------

    def on_data(self, flags: int, cid: int, payload: memoryview) -> None:
        if flags & ~fr.KNOWN_DATA_FLAGS:
            raise RemoteProtocolError(f"unknown DATA flags {flags:#x}")
        ch = self.table.get(cid)
        opened = False
        if ch is None:
            if cid == 0 or (cid & 1) == (self._next_local & 1):
                if cid == 0 or cid >= self._next_local:
                    raise RemoteProtocolError(f"DATA on channel {cid} that we never opened")
                return  # our channel, already closed or reset: late data is dropped
            if cid in self._recently_closed:
                return  # the peer's channel we already closed or reset: late data is dropped
            self.highest_remote = max(self.highest_remote, cid)
            budget = self.allowance.budget
            if self._remote_open >= min(MAX_CHANNELS, budget.channels) or self.goaway_sent:
                why = "shutting down" if self.goaway_sent else "too many channels"
                code = ErrorCode.REFUSED if self.goaway_sent else ErrorCode.TOO_MANY_CHANNELS
                self.answer(fr.reset(cid, code, why))
                self._remember_closed(cid)
                return
            ch = _Channel(SendChannel(cid, INITIAL_WINDOW), _RecvChannel(), local=False)
            self.table[cid] = ch
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
            self.allowance.hold(rc, cid, n)
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
        limit = messages.MAX_MESSAGE_SIZE if ch.local else self.allowance.budget.message
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
            self.maybe_forget(cid)
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
            self.maybe_forget(cid)

    def _reject(self, cid: int, error: str, size: int) -> None:
        self.consume(cid, size)
        if self._remove(cid) is not None:
            self.answer(fr.reset(cid, ErrorCode.PROTOCOL_ERROR, error[: fr.MAX_REASON]))
        self._events.append(MessageRejected(cid, error))

    def on_window_update(self, cid: int, payload: memoryview) -> None:
        if len(payload) != fr.U32.size:
            raise RemoteProtocolError("WINDOW_UPDATE must carry 4 bytes")
        (inc,) = fr.U32.unpack_from(payload)
        if inc == 0:
            raise RemoteProtocolError("WINDOW_UPDATE of zero")
        ch = self.table.get(cid)
        if ch is None:
            return  # channel already gone: the credit is moot
        if ch.send.window + inc > 2 * INITIAL_WINDOW:
            raise RemoteProtocolError(
                "WINDOW_UPDATE beyond the window", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        self._sched.grant(ch.send, inc)

    def on_reset(self, cid: int, payload: memoryview) -> None:
        if len(payload) < 1:
            raise RemoteProtocolError("RESET without a code")
        code = fr.parse_code(payload[0])
        reason = fr.parse_reason(payload[1:])
        if self._remove(cid) is None:
            return
        self._events.append(ChannelReset(cid, code, reason))

    def on_goaway(self, cid: int, payload: memoryview) -> None:
        if cid != 0 or len(payload) < 5:
            raise RemoteProtocolError("GOAWAY must be on channel 0 with at least 5 bytes")
        (last,) = fr.U32.unpack_from(payload)
        code = fr.parse_code(payload[4])
        reason = fr.parse_reason(payload[5:])
        self.goaway_received = True
        self._events.append(GoAway(last, code, reason))

    def answer(self, frame: bytes) -> None:
        """Queue a frame the peer's own frames asked for (a pong, a refusal), within
        :data:`MAX_ANSWERS_QUEUED`: the framing layer's pongs count here too, as they share
        the urgent queue."""
        if self._sched.urgent_frames >= MAX_ANSWERS_QUEUED:
            raise RemoteProtocolError(
                "peer sends pings or channels faster than it reads our answers",
                code=ErrorCode.OVER_BUDGET,
            )
        self._sched.push_urgent(frame)

    def maybe_forget(self, cid: int) -> None:
        """Drop ``cid`` once it has ended both ways and nothing of ours is left to send."""
        ch = self.table.get(cid)
        if ch is not None and ch.recv.ended and ch.send.closed and not ch.send.queue:
            self._remove(cid)

    def _remove(self, cid: int) -> _Channel | None:
        ch = self.table.pop(cid, None)
        if ch is None:
            return None
        self._sched.drop(ch.send)
        if ch.local:
            self.local_open -= 1
        else:
            self._remote_open -= 1
            self._remember_closed(cid)
            self.allowance.unhold(ch.recv, ch.recv.held)
        return ch

    def _remember_closed(self, cid: int) -> None:
        self._recently_closed.add(cid)
        self._closed_order.append(cid)
        if len(self._closed_order) > _REMEMBER_CLOSED:
            self._recently_closed.discard(self._closed_order.popleft())

    # --- sending (the caller has checked that the connection is open) ------------------------

    def open_channel(self) -> int:
        if self.goaway_received:
            raise LocalProtocolError("peer is going away: no new channels")
        if self.local_open >= MAX_CHANNELS:
            raise LocalProtocolError(f"{MAX_CHANNELS} channels already open: wait for one to end")
        cid = self._next_local
        if cid > fr.MAX_CHANNEL_ID:
            raise LocalProtocolError("channel ids exhausted: open a new connection")
        self._next_local += 2
        self.local_open += 1
        self.table[cid] = _Channel(SendChannel(cid, INITIAL_WINDOW), _RecvChannel(), local=True)
        return cid

    def queue(
        self, channel: int, body: bytes, priority: int, *, bulk: bool, end_channel: bool
    ) -> None:
        ch = self.table.get(channel)
        if ch is None:
            raise LocalProtocolError(f"channel {channel} is not open")
        if self._sched.queued_bytes + len(body) > MAX_QUEUED:
            raise LocalProtocolError("send queue full: wait for data_to_send() to drain it")
        self._sched.push(ch.send, body, priority, bulk=bulk, end_channel=end_channel)

    def set_priority(self, channel: int, priority: int) -> None:
        ch = self.table.get(channel)
        if ch is not None:
            self._sched.set_priority(ch.send, priority)

    def reset(self, channel: int, code: ErrorCode, reason: str, *, tell_peer: bool) -> None:
        """Abandon ``channel`` both ways; RESET goes out only if ``tell_peer`` (still open)."""
        if self._remove(channel) is None:
            return
        if tell_peer:
            self._sched.push_urgent(fr.reset(channel, code, reason))

    def consume(self, channel: int, nbytes: int) -> None:
        ch = self.table.get(channel)
        if ch is None or nbytes <= 0:
            return
        rc = ch.recv
        if not ch.local:
            self.allowance.unhold(rc, nbytes)
        rc.unacked += nbytes
        # Top up once half the window is used, not per message: a reply that fits in half a
        # window (a request for chunks) needs no update at all, and a long transfer still has
        # half a window of credit on its way while the update travels.
        if rc.unacked >= INITIAL_WINDOW // 2 and not rc.ended:
            rc.window += rc.unacked
            self._sched.push_urgent(fr.window_update(channel, rc.unacked))
            rc.unacked = 0

    def send_goaway(self, code: ErrorCode, reason: str) -> None:
        """Announce shutdown (once): the peer opens no new channels."""
        frame = self.last_goaway(code, reason)
        if frame is not None:
            self._sched.push_urgent(frame)

    def last_goaway(self, code: ErrorCode, reason: str) -> bytes | None:
        """The GOAWAY frame to send, or None if one went already; from now on we refuse."""
        if self.goaway_sent:
            return None
        self.goaway_sent = True
        return fr.goaway(self.highest_remote, code, reason)

    def queued_bytes(self, channel: int | None) -> int:
        if channel is None:
            return self._sched.queued_bytes
        ch = self.table.get(channel)
        return 0 if ch is None else ch.send.queued_bytes

    def send_window(self, channel: int) -> int:
        ch = self.table.get(channel)
        return 0 if ch is None else ch.send.window

    @property
    def can_open_channel(self) -> bool:
        return self.local_open < MAX_CHANNELS and not self.goaway_received
