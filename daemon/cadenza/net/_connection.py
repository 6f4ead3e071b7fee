"""A live Cadenza connection over a trio stream.

One reader task feeds the sans-IO :class:`~cadenza.protocol.connection.Connection`
and dispatches its events; one writer task drains it onto the stream; one
keepalive task drops a dead link; on the dialling side it also pings an idle one. Every channel the
peer opens runs the connection's handler in a task of its own, inside a
cancel scope that a RESET from the peer cancels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from cadenza.protocol import connection as sansio
from cadenza.protocol.budget import Budget
from cadenza.protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from cadenza.protocol.messages import ErrorReply, Message, Priority
from cadenza.protocol.noise import KeyPair

from ._errors import (
    ChannelEnded,
    ChannelReset,
    ConnectionLost,
    HandshakeFailed,
    RequestError,
    RequestFailed,
    fresh,
)
from ._util import single_errors

log = logging.getLogger("cadenza.net")

# Each phase has its own deadline; a handshake is 1.5 round trips plus two X25519s.
HANDSHAKE_TIMEOUT: Final = 10.0
# Ping a link that has been silent this long. TCP mappings in NATs must live at least
# 2 h 4 min (RFC 5382), and Spotify's access points ping every 2 minutes; a dead link in use
# shows sooner anyway (requests time out, the streaming engine drops slow peers). Only the side
# that dialled pings (it is the one behind a NAT, and a service with 10,000 sessions should not
# ping 10,000 times every interval); the PONG refreshes the mapping both ways, and the side that
# accepted drops a link silent for the idle timeout. Every ping wakes both ends.
KEEPALIVE_INTERVAL: Final = 120.0
# A link silent for the interval less this much is due a ping: the ping that answered the last
# one came back a round trip after it left, so the next one is due then, and waking once more
# a round trip later for it would be one more wake-up per interval for nothing.
PING_SLACK: Final = 5.0
# Give up on a link that has been silent this long (on the dialling side, despite pings).
IDLE_TIMEOUT: Final = 300.0
# A request that gets no answer in this time is abandoned (and its channel reset).
REQUEST_TIMEOUT: Final = 30.0
# Graceful close waits this long for open channels to finish.
CLOSE_GRACE: Final = 5.0
# One read from the socket; a few full transport messages.
READ_SIZE: Final = 256 * 1024
# One write to the socket. Small enough that a control message never waits behind much.
WRITE_SIZE: Final = 64 * 1024
# Unsent bytes the kernel may hold per socket: beyond this, urgency is decided by us, not by a
# FIFO in the kernel (TCP_NOTSENT_LOWAT); 64 KiB keeps a 100 MB/s link busy for ~0.6 ms.
NOTSENT_LOWAT: Final = 64 * 1024
TCP_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
# A channel's sender waits while this much of its data is still queued.
CHANNEL_SEND_BUFFER: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class Bulk:
    """A bulk payload received on a channel."""

    kind: int
    index: int
    data: memoryview
    priority: Priority


Item = Message | Bulk


@dataclass(frozen=True)
class Identity:
    """Who we are on the wire: our Noise static key pair and our handshake payload."""

    static: KeyPair
    payload: bytes = b""


Verifier = Callable[[bytes, bytes], Any]
"""``verify(remote_static, remote_payload) -> peer_info``; raise ProtocolError to refuse."""

Handler = Callable[["PeerConnection", "Channel"], Awaitable[None]]
"""Runs once per channel the peer opens; ``await channel.receive()`` gets the first message."""


@dataclass(eq=False)
class Channel:
    """One logical channel: a request and its responses, or a stream of chunks."""

    conn: PeerConnection
    id: int
    priority: int
    _inbox: deque[tuple[Item, int]] = field(default_factory=deque)
    _ended: bool = False  # the peer has ended its side
    _sent_end: bool = False
    _reset: ChannelReset | None = None
    _lost: ConnectionLost | None = None
    _waiter: trio.Event = field(default_factory=trio.Event)
    _scope: trio.CancelScope | None = None

    # --- receiving ---

    async def receive(self) -> Item:
        """The next message or bulk payload; raises ChannelEnded when the peer is done."""
        while True:
            if self._inbox:
                item, size = self._inbox.popleft()
                self.conn._consume(self.id, size)
                return item
            if self._reset is not None:
                raise fresh(self._reset)
            if self._ended:
                raise ChannelEnded(f"channel {self.id} ended")
            if self._lost is not None:
                raise fresh(self._lost)
            await self._waiter.wait()
            self._waiter = trio.Event()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Item]:
        while True:
            try:
                yield await self.receive()
            except ChannelEnded:
                return

    # --- sending ---

    async def send(self, msg: Message, *, end: bool = False) -> None:
        await self.conn._wait_send_room(self)
        self._check_sendable()
        self.conn._sansio.send_message(self.id, msg, priority=self.priority, end_channel=end)
        self._sent_end = self._sent_end or end
        self.conn._kick()

    async def send_bulk(
        self, kind: int, index: int, data: bytes | bytearray | memoryview, *, end: bool = False
    ) -> None:
        await self.conn._wait_send_room(self)
        self._check_sendable()
        self.conn._sansio.send_bulk(
            self.id, kind, index, data, priority=self.priority, end_channel=end
        )
        self._sent_end = self._sent_end or end
        self.conn._kick()

    async def end(self) -> None:
        """Half-close: nothing more from us on this channel."""
        if self._sent_end or self._reset is not None or self._lost is not None:
            return
        self._check_sendable()
        self._sent_end = True
        self.conn._sansio.end_channel(self.id)
        self.conn._kick()

    def reset(self, code: ErrorCode = ErrorCode.CANCELLED, reason: str = "") -> None:
        """Abandon the channel both ways (cancels the peer's handler). Idempotent."""
        if self._reset is None:
            self._reset = ChannelReset(code, reason)
            self.conn._reset_channel(self, code, reason)

    def set_priority(self, priority: int) -> None:
        self.priority = priority
        self.conn._sansio.set_priority(self.id, priority)
        self.conn._kick()

    @property
    def finished(self) -> bool:
        return (self._ended and self._sent_end) or self._reset is not None or self._lost is not None

    def _check_sendable(self) -> None:
        if self._reset is not None:
            raise fresh(self._reset)
        if self._lost is not None:
            raise fresh(self._lost)
        if self._sent_end:
            raise ChannelEnded(f"channel {self.id}: already ended our side")

    def _wake(self) -> None:
        self._waiter.set()


class PeerConnection:
    """An established, authenticated connection. Create with open_connection/serve_connections.

    Why one class of this length: it is the thin trio shell of one sans-IO
    :class:`~cadenza.protocol.connection.Connection` (which is split into framing and channels);
    its reader, writer, keepalive and channel streams share the sans-IO object, the table of
    open channels, and the events that wake the writer and end the connection (admission, idle
    and keepalive timers, refusal); splitting them would pass that state around.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        sansio_conn: sansio.Connection,
        *,
        handler: Handler | None,
        verify: Verifier | None,
        keepalive: float = KEEPALIVE_INTERVAL,
        idle_timeout: float = IDLE_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._stream = stream
        self._handshake_timeout = handshake_timeout
        self._sansio = sansio_conn
        self._handler = handler
        # Set while the handlers of the peer's channels must wait (serve_connections: until
        # its on_connection has taken the connection in).
        self._handlers_held: trio.Event | None = None
        self._verify = verify
        self._keepalive = keepalive
        self._idle_timeout = idle_timeout
        self._channels: dict[int, Channel] = {}
        self._want_write = trio.Event()
        self._progress = trio.lowlevel.ParkingLot()
        self._closed = trio.Event()
        self._accepted = trio.Event()
        self._last_rx = trio.current_time()  # bytes: when the next keepalive ping is due
        self._last_progress = self._last_rx  # whole messages: when a silent peer is dropped
        self._ping_sent_at: float | None = None
        self._pong = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._lost: ConnectionLost | None = None
        self._refusal: str | None = None
        # Told when the application admits the peer (the listener's gate counts strangers).
        self._on_admit: Callable[[], None] | None = None
        sansio_conn.on_shed = self.abort
        self.remote_static = b""
        self.remote_payload = b""
        self.peer_info: Any = None
        self.rtt: float | None = None
        self.goaway: sansio.GoAway | None = None
        try:
            self.remote_address: Any = stream.socket.getpeername()
        except OSError:
            self.remote_address = None

    # --- public API ---

    @asynccontextmanager
    async def open_channel(self, priority: int = Priority.CONTROL) -> AsyncIterator[Channel]:
        """A new channel; reset on exit unless both sides finished it."""
        ch = await self._new_local_channel(priority)
        try:
            yield ch
        finally:
            if not ch.finished:
                ch.reset(ErrorCode.CANCELLED)
            self._channels.pop(ch.id, None)

    async def request(
        self,
        msg: Message,
        *,
        priority: int = Priority.CONTROL,
        timeout: float | None = REQUEST_TIMEOUT,
    ) -> Message:
        """Send ``msg`` and return the single reply. Cancelling resets the channel at once."""
        async with self.open_channel(priority) as ch:
            await ch.send(msg, end=True)
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                reply = await ch.receive()
            if isinstance(reply, Bulk):
                raise RemoteProtocolError("expected a message in reply, got bulk data")
            if isinstance(reply, ErrorReply):
                raise RequestFailed(reply.code, reply.message)
            return reply

    async def notify(self, msg: Message, *, priority: int = Priority.CONTROL) -> None:
        """One-way message (server push): no reply is expected."""
        ch = await self._new_local_channel(priority)
        await ch.send(msg, end=True)
        # The peer's handler ends its side; we keep no state beyond the sans-IO channel.
        self._channels.pop(ch.id, None)

    async def ping(self) -> float:
        """Round-trip time of a PING (shares the keepalive's outstanding ping if any)."""
        if self._lost is not None:
            raise fresh(self._lost)
        if self._ping_sent_at is None:
            self._ping_sent_at = trio.current_time()
            self._sansio.send_ping(os.urandom(8))
            self._kick()
        pong = self._pong
        await pong.wait()
        if self._lost is not None:
            raise fresh(self._lost)
        assert self.rtt is not None
        return self.rtt

    async def aclose(self, reason: str = "") -> None:
        """Graceful close: GOAWAY, let open channels finish (briefly), then close the socket."""
        if self._closed.is_set():
            return
        self._sansio.send_goaway(ErrorCode.NO_ERROR, reason)
        self._kick()
        with trio.move_on_after(CLOSE_GRACE):
            while any(not ch.finished for ch in self._channels.values()):
                await self._progress.park()
            while self._sansio.wants_write and self._lost is None:
                await self._progress.park()
        self._shutdown(ConnectionLost(f"closed by us{': ' + reason if reason else ''}"))

    def abort(self, reason: str = "aborted") -> None:
        """Abrupt close: drop the socket now; everything pending fails with ConnectionLost."""
        self._shutdown(ConnectionLost(reason))

    def admit(self, budget: Budget | None = None) -> None:
        """The application takes the peer in (it logged in, or was admitted as a neighbour):
        it is no longer a stranger at the listener, and may hold ``budget`` from now on."""
        if budget is not None:
            self._sansio.set_budget(budget)
        on_admit, self._on_admit = self._on_admit, None
        if on_admit is not None:
            on_admit()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def bytes_sent(self) -> int:
        return self._sansio.bytes_out

    @property
    def bytes_received(self) -> int:
        return self._sansio.bytes_in

    # --- lifecycle ---

    async def run(
        self, *, task_status: trio.TaskStatus[PeerConnection] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Handshake, then serve until closed. ``started`` once the peer is authenticated."""
        try:
            _set_notsent_lowat(self._stream)
            async with single_errors(), trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                try:
                    with trio.fail_after(self._handshake_timeout):
                        await self._handshake()
                except trio.TooSlowError:
                    raise HandshakeFailed("handshake timed out") from None
                self._last_progress = self._last_rx
                nursery.start_soon(self._reader)
                nursery.start_soon(self._keepalive_loop)
                task_status.started(self)
                await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._shutdown(self._lost or ConnectionLost("connection closed"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)

    async def _handshake(self) -> None:
        conn = self._sansio
        initiator = conn.role is sansio.Role.INITIATOR
        self._kick()
        while True:
            data = await self._read()
            conn.receive_data(data)
            while True:
                try:
                    ev = conn.next_event()
                except ProtocolError as exc:
                    raise HandshakeFailed(f"handshake failed: {exc}") from None
                if ev is sansio.NEED_DATA:
                    break
                if isinstance(ev, sansio.HandshakeComplete):
                    self.remote_static = ev.remote_static
                    self.remote_payload = ev.remote_payload
                    await self._check_peer(ev)
                    if not initiator:
                        # Our accept: the first frame after the handshake is a PING. Its PONG
                        # is also what proves an IK initiator live (below).
                        conn.send_ping(b"accepted")
                        self._kick()
                        if conn.peer_proven:
                            return
                elif isinstance(ev, sansio.PeerProven):
                    # Not a replay of someone's first IK message: only the key holder could
                    # encrypt to the ephemeral key of our reply. Frames that came with the
                    # proof stay queued for the reader.
                    return
                elif isinstance(ev, sansio.GoAway):
                    raise HandshakeFailed(f"refused by peer: {ev.reason or ev.code.name}")
                elif isinstance(ev, sansio.PingReceived) and initiator:
                    self._kick()
                    return
                elif isinstance(ev, sansio.ConnectionClosed):
                    raise HandshakeFailed("peer closed the connection during the handshake")
                else:
                    raise HandshakeFailed(f"unexpected {type(ev).__name__} during the handshake")
            self._kick()
            if not data:
                raise HandshakeFailed("peer closed the connection during the handshake")

    async def _check_peer(self, ev: sansio.HandshakeComplete) -> None:
        if self._verify is None:
            return
        try:
            self.peer_info = self._verify(ev.remote_static, ev.remote_payload)
        except ProtocolError as exc:
            await self._say_goodbye(ErrorCode.AUTHENTICATION_FAILED, str(exc))
            raise HandshakeFailed(f"peer refused: {exc}") from None

    async def _say_goodbye(self, code: ErrorCode, reason: str) -> None:
        """What is queued (a last reply), then a GOAWAY saying why, each given a moment
        (bounded) to leave: a GOAWAY is urgent and would overtake the reply."""
        with trio.move_on_after(1.0):
            while self._sansio.wants_write and self._lost is None:
                self._kick()
                await self._progress.park()
            self._sansio.send_goaway(code, reason)
            while self._sansio.wants_write and self._lost is None:
                self._kick()
                await self._progress.park()

    async def refuse(self, code: ErrorCode, reason: str) -> None:
        """Hang up on the peer now, telling it why: what is already queued (a last reply)
        leaves first, then a GOAWAY with ``code``; open channels are not waited for."""
        await self._say_goodbye(code, reason)
        self.abort(reason)

    async def _read(self) -> bytes:
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(f"connection lost: {exc}") from None
        self._last_rx = trio.current_time()
        return bytes(data)

    async def _reader(self) -> None:
        conn = self._sansio
        eof = False
        seen = conn.messages_in
        try:
            while True:
                # Drain first: bytes that arrived with the handshake's last message are buffered.
                while True:
                    ev = conn.next_event()
                    if ev is sansio.NEED_DATA:
                        break
                    self._dispatch(ev)
                if conn.messages_in != seen:
                    seen = conn.messages_in
                    self._last_progress = self._last_rx
                # Channels may have ended: whoever waits for a free channel slot looks again.
                self._progress.unpark_all()
                if conn.wants_write:
                    self._kick()
                if eof or self._closed.is_set():
                    if self._lost is None:
                        self._lost = ConnectionLost("peer closed the connection")
                    break
                data = await self._read()
                conn.receive_data(data)
                eof = not data
        except RemoteProtocolError as exc:
            log.warning("protocol error from %s: %s", self.remote_address, exc)
            self._lost = ConnectionLost(f"peer broke the protocol: {exc}")
            # The sans-IO layer queued a last GOAWAY saying why; give it a moment to leave.
            self._kick()
            with trio.move_on_after(1.0):
                while conn.wants_write:
                    await self._progress.park()
        except ConnectionLost as exc:
            # Kept to raise to whoever uses the connection next: a copy, without this frame
            # in its traceback nor the socket's error as its context (their frames hold the
            # connection, which holds it: a cycle only the cyclic collector frees).
            self._lost = self._lost or fresh(exc)
        self._shutdown(self._lost or ConnectionLost("connection closed"))

    def _dispatch(self, ev: sansio.Event) -> None:
        if isinstance(ev, sansio.MessageReceived | sansio.BulkReceived):
            ch = self._channels.get(ev.channel)
            if ch is None:
                if not ev.opened:
                    self._sansio.consume(ev.channel, ev.size)
                    return  # a channel we gave up on: drop late data
                ch = self._accept_channel(ev.channel, ev.priority)
            if isinstance(ev, sansio.MessageReceived):
                item: Item = ev.message
            else:
                item = Bulk(ev.kind, ev.index, ev.data, ev.priority)
            ch._inbox.append((item, ev.size))
            if ev.end_channel:
                ch._ended = True
            ch._wake()
        elif isinstance(ev, sansio.ChannelEnded):
            ch = self._channels.get(ev.channel)
            if ch is not None:
                ch._ended = True
                ch._wake()
        elif isinstance(ev, sansio.ChannelReset):
            ch = self._channels.pop(ev.channel, None)
            if ch is not None:
                ch._reset = ChannelReset(ev.code, ev.reason)
                ch._wake()
                if ch._scope is not None:
                    ch._scope.cancel()
            self._progress.unpark_all()
        elif isinstance(ev, sansio.PongReceived):
            if self._ping_sent_at is not None:
                self.rtt = trio.current_time() - self._ping_sent_at
                self._ping_sent_at = None
                self._pong.set()
                self._pong = trio.Event()
        elif isinstance(ev, sansio.GoAway):
            self.goaway = ev
            if ev.code is not ErrorCode.NO_ERROR:
                self._lost = ConnectionLost(f"peer is going away ({ev.code.name}): {ev.reason}")
                self._shutdown(self._lost)
        elif isinstance(ev, sansio.MessageRejected):
            log.warning("rejected a message from %s: %s", self.remote_address, ev.error)
        elif isinstance(ev, sansio.ConnectionClosed):
            self._lost = ConnectionLost("peer closed the connection")
        # PingReceived is answered by the sans-IO layer; HandshakeComplete cannot recur.

    async def _writer(self) -> None:
        conn = self._sansio
        stream = self._stream
        while True:
            data = conn.data_to_send(WRITE_SIZE) if conn.wants_write else b""
            # Wake the senders waiting for room now, so that they refill their queues while
            # this write yields (every send_all does) and before the scheduler picks the next
            # frames; otherwise a fast link drains an urgent channel's queue and fills the gap
            # with less urgent data while its producer never got to run.
            self._progress.unpark_all()
            if not data:
                # Nothing to send: wait for a kick. The event is made anew only now, so the
                # kicks of frames this loop already sent do not wake it for nothing.
                self._want_write = trio.Event()
                await self._want_write.wait()
                continue
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._shutdown(ConnectionLost(f"connection lost: {exc}"))
                return

    async def _keepalive_loop(self) -> None:
        # The dialling side pings an idle link; the accepting side only watches for silence.
        # Silence is the absence of whole messages (progress), not of bytes: a peer trickling
        # one message a byte at a time is silent.
        pings = self._sansio.role is sansio.Role.INITIATOR
        slack = min(PING_SLACK, self._keepalive / 10)

        def next_wake() -> float:
            if pings:
                return self._last_rx + self._keepalive
            return self._last_progress + self._idle_timeout

        deadline = next_wake()
        while True:
            await trio.sleep_until(deadline)
            now = trio.current_time()
            # Compared as sums, the way the deadline was computed: ``now - last >= interval``
            # can be false by a rounding error at the very deadline, and the loop would spin.
            if now >= self._last_progress + self._idle_timeout:
                silent = now - self._last_progress
                self._lost = ConnectionLost(f"peer silent for {silent:.0f} s")
                self._shutdown(self._lost)
                return
            if pings and now >= self._last_rx + self._keepalive - slack:
                if self._ping_sent_at is None:
                    self._ping_sent_at = now
                    self._sansio.send_ping(os.urandom(8))
                    self._kick()
                # Check again after another interval (capped by the idle deadline): the next
                # ping is due then if nothing but this one's pong came meanwhile.
                left = self._idle_timeout - (now - self._last_progress)
                deadline = now + min(self._keepalive, left)
            else:
                deadline = next_wake()

    # --- internals used by Channel ---

    def _kick(self) -> None:
        self._want_write.set()

    def _consume(self, cid: int, size: int) -> None:
        self._sansio.consume(cid, size)
        if self._sansio.wants_write:
            self._kick()

    async def _new_local_channel(self, priority: int) -> Channel:
        while not self._sansio.can_open_channel and self._lost is None:
            if self._sansio.goaway_received:
                raise ConnectionLost("peer is going away: no new requests")
            await self._progress.park()
        if self._lost is not None:
            raise fresh(self._lost)
        try:
            cid = self._sansio.open_channel()
        except ProtocolError as exc:
            raise ConnectionLost(str(exc)) from None
        ch = Channel(self, cid, priority)
        self._channels[cid] = ch
        return ch

    def _accept_channel(self, cid: int, priority: int) -> Channel:
        ch = Channel(self, cid, priority)
        self._channels[cid] = ch
        if self._handler is None or self._nursery is None:
            self._sansio.reset_channel(cid, ErrorCode.REFUSED, "no handler")
            ch._reset = ChannelReset(ErrorCode.REFUSED)
            return ch
        self._nursery.start_soon(self._run_handler, ch)
        return ch

    def _hold_handlers(self) -> None:
        self._handlers_held = trio.Event()

    def _release_handlers(self) -> None:
        if self._handlers_held is not None:
            self._handlers_held.set()
            self._handlers_held = None

    async def _run_handler(self, ch: Channel) -> None:
        assert self._handler is not None
        with trio.CancelScope() as scope:
            ch._scope = scope
            try:
                if self._handlers_held is not None:
                    await self._handlers_held.wait()
                await self._handler(self, ch)
                await ch.end()
            except RequestError as exc:
                if not ch.finished and not ch._sent_end:
                    await ch.send(ErrorReply(exc.code, exc.message), end=True)
            except (ChannelReset, ConnectionLost, ChannelEnded):
                pass
            except ProtocolError as exc:
                ch.reset(exc.code, str(exc))
            except Exception as exc:
                log.exception("handler failed on channel %d", ch.id)
                ch.reset(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        self._channels.pop(ch.id, None)
        self._progress.unpark_all()

    def _reset_channel(self, ch: Channel, code: ErrorCode, reason: str) -> None:
        self._sansio.reset_channel(ch.id, code, reason)
        self._channels.pop(ch.id, None)
        ch._wake()
        self._kick()
        self._progress.unpark_all()

    async def _wait_send_room(self, ch: Channel) -> None:
        conn = self._sansio
        while conn.queued_bytes(ch.id) >= CHANNEL_SEND_BUFFER and not ch.finished:
            if self._lost is not None:
                raise fresh(self._lost)
            await self._progress.park()
        if self._lost is not None:
            raise fresh(self._lost)

    def _shutdown(self, reason: ConnectionLost) -> None:
        if self._closed.is_set():
            return
        self._lost = self._lost or reason
        self._sansio.close()
        # Both point back at us: no cycle may outlive the connection.
        self._sansio.on_shed = None
        self._on_admit = None
        for ch in list(self._channels.values()):
            ch._lost = self._lost
            ch._wake()
            if ch._scope is not None:
                ch._scope.cancel()
        self._channels.clear()
        self._closed.set()
        self._pong.set()
        self._progress.unpark_all()
        # Closing the socket wakes the reader and writer; run() then tears the tasks down.
        self._stream.socket.close()


def _set_notsent_lowat(stream: trio.SocketStream) -> None:
    # Not Linux, or not TCP: then the kernel's FIFO decides, which is slower but correct.
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
