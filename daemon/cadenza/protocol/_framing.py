"""The framing layer of a connection: bytes on the wire to frames and back.

The initiator sends a preamble (magic, version, handshake pattern), then both sides exchange
length-prefixed Noise messages: the handshake's, then transport messages each carrying one or
more frames. :class:`Framing` owns the connection's state (handshake, open, closed), the
receive buffer, Noise, the bytes to send and PING. Frames about channels (DATA, WINDOW_UPDATE,
RESET, GOAWAY) it hands to the channel layer (:mod:`._channels`) as it decodes them, without
copying; what to send it takes from the shared :class:`~.scheduler.SendScheduler`.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Literal

from . import frames as fr
from ._channels import Channels
from ._events import (
    ConnectionClosed,
    Event,
    HandshakeComplete,
    PeerProven,
    PingReceived,
    PongReceived,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .frames import FRAME_HEADER, LENGTH_PREFIX, MAX_PLAINTEXT, FrameType, Pattern
from .noise import HandshakeState, KeyPair, NoiseTransport
from .scheduler import SendScheduler

PROTOCOL_NAMES: Final = {
    Pattern.XX: "Noise_XX_25519_ChaChaPoly_SHA256",
    Pattern.IK: "Noise_IK_25519_ChaChaPoly_SHA256",
}
# Binds both sides to this protocol and version: a mismatch fails the handshake.
PROLOGUE: Final = b"cadenza/1"
# Unparsed received bytes; a well-behaved reader drains after every read.
MAX_RECEIVE_BUFFER: Final = 4 * 1024 * 1024
# Compact the receive buffer once this much has been consumed from its front.
_COMPACT_AT: Final = 256 * 1024


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


class Framing:
    """Handshake, Noise transport, frame decoding and encoding, PING, and the connection's
    state; see the module docstring. Some 300 lines, as one class: the receive path and the
    send path share the Noise transport and the state, and this is the only class that may
    change either."""

    def __init__(
        self,
        role: Role,
        static: KeyPair,
        remote_static: bytes | None,
        payload: bytes,
        ephemeral: KeyPair | None,
        events: deque[Event],
        sched: SendScheduler,
        channels: Channels,
    ) -> None:
        """``events`` and ``sched`` are the connection's, shared with ``channels``."""
        self.role = role
        self.state = State.HANDSHAKE
        self._static = static
        self._ephemeral = ephemeral
        self._payload = payload
        self._pattern: Pattern | None = None
        self._hs: HandshakeState | None = None
        self.transport: NoiseTransport | None = None
        self._remote_payload = b""
        self.rbuf = bytearray()
        self.rpos = 0
        self._eof = False
        self._plain: memoryview | None = None
        self._ppos = 0
        self._events = events
        self._out: list[bytes] = []  # handshake bytes and fully built transport messages
        self._sched = sched
        self._chan = channels
        self.bytes_in = 0
        self.bytes_out = 0
        # Whole Noise messages read: progress, which an idle timer should count (a peer that
        # trickles a message a byte at a time sends bytes, and makes none).
        self.messages_in = 0
        # An IK responder has the peer's word (its first message) but not yet proof that the
        # peer is live: a recorded first message replays byte for byte. Proof is the first
        # transport message, which needs the ephemeral key of our reply.
        self._proven = True
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
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after EOF")
        if len(self.rbuf) - self.rpos + len(data) > MAX_RECEIVE_BUFFER:
            raise LocalProtocolError("receive buffer full: call next_event() until NEED_DATA")
        if self.rpos >= _COMPACT_AT:
            del self.rbuf[: self.rpos]
            self.rpos = 0
        self.rbuf += data
        self.bytes_in += len(data)

    def next_event(self) -> Event | Literal[_Sentinel.NEED_DATA]:
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
                with memoryview(self.rbuf) as view, view[start:end] as msg:
                    if self.state is State.HANDSHAKE:
                        self._handshake_step(msg)
                    else:
                        assert self.transport is not None
                        self._plain = memoryview(self.transport.decrypt(msg))
                        self._ppos = 0
                        if not self._proven:
                            self._proven = True
                            self._events.append(PeerProven())
            return self._events.popleft()
        except RemoteProtocolError as exc:
            self.fail(exc)
            raise
        except ProtocolError:
            self.close()
            raise

    def fail(self, exc: RemoteProtocolError) -> None:
        """Tell the peer why we are hanging up (a last GOAWAY), then stop."""
        if self.state is State.OPEN and self.transport is not None:
            frame = self._chan.last_goaway(exc.code, str(exc))
            if frame is not None:
                try:
                    ct = self.transport.encrypt(frame)
                except ProtocolError:
                    ct = None
                if ct is not None:
                    self._out.append(LENGTH_PREFIX.pack(len(ct)) + ct)
        self.close()

    def close(self) -> None:
        self.state = State.CLOSED
        self._chan.allowance.release_all()

    def _next_noise_message(self) -> tuple[int, int] | None:
        buf = self.rbuf
        pos = self.rpos
        if pos and pos == len(buf):
            # All read: let the memory go now, not at the next compaction (a stranger's
            # connection would otherwise park up to _COMPACT_AT of spent bytes).
            buf.clear()
            self.rpos = pos = 0
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
            self.rpos = pos
            avail -= fr.PREAMBLE.size
        if avail < LENGTH_PREFIX.size:
            self._check_eof(avail, "in a message length")
            return None
        (n,) = LENGTH_PREFIX.unpack_from(buf, pos)
        if avail < LENGTH_PREFIX.size + n:
            self._check_eof(avail, "in a message")
            return None
        start = pos + LENGTH_PREFIX.size
        self.rpos = start + n
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
        self.transport = NoiseTransport(send, recv)
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
            self._chan.on_data(flags, channel, payload)
        elif ftype == FrameType.WINDOW_UPDATE:
            self._chan.on_window_update(channel, payload)
        elif ftype == FrameType.RESET:
            self._chan.on_reset(channel, payload)
        elif ftype == FrameType.PING:
            self._on_ping(flags, channel, payload)
        elif ftype == FrameType.GOAWAY:
            self._chan.on_goaway(channel, payload)
        else:
            raise RemoteProtocolError(f"unknown frame type {ftype}")

    def _on_ping(self, flags: int, cid: int, payload: memoryview) -> None:
        if cid != 0 or len(payload) != 8:
            raise RemoteProtocolError("PING must be on channel 0 with 8 bytes")
        if flags & fr.ACK:
            self._events.append(PongReceived(bytes(payload)))
        else:
            self._chan.answer(fr.ping(bytes(payload), ack=True))
            self._events.append(PingReceived(bytes(payload)))

    @property
    def peer_proven(self) -> bool:
        return self.state is State.OPEN and self._proven

    # --- sending -------------------------------------------------------------------------------

    def require_open(self) -> None:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"connection is {self.state.value}, not open")

    def send_ping(self, payload: bytes) -> None:
        self.require_open()
        if len(payload) != 8:
            raise LocalProtocolError("PING payload must be 8 bytes")
        self._sched.push_urgent(fr.ping(payload))

    @property
    def wants_write(self) -> bool:
        return bool(self._out) or (self.state is State.OPEN and self._sched.has_sendable())

    def data_to_send(self, max_bytes: int) -> bytes:
        out = self._out
        total = sum(len(b) for b in out)
        transport = self.transport
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
                self._chan.maybe_forget(cid)
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.bytes_out += len(data)
        return data
