"""A raw Cadenza wire client for hostile-client tests and benches (issue 17).

It speaks the protocol a speaker speaks to the access point (and peers to each other),
but it is written *without importing anything from ``cadenza``*, on purpose: an attacker
does not use our code, so neither does this client. Everything is built by hand from the
wire format as documented (docs/architecture.md, the docstrings of
``cadenza/protocol/frames.py`` and ``messages.py``):

* ``CDZ``, version 1 and the pattern (1: XX, 2: IK) in clear, then Noise handshake
  messages, then Noise transport messages; each Noise message is preceded by its length
  as a big-endian u16. Noise is ``Noise_{XX,IK}_25519_ChaChaPoly_SHA256`` with the
  prologue ``cadenza/1``, done by the independent ``noiseprotocol`` package; each
  direction rekeys after every 2**20 transport messages.
* The plaintext of a transport message is frames back to back:
  ``type u8 | flags u8 | channel u32 | length u16 | payload``.
* Control messages are msgpack ``[type_id, {field: value}]`` (built with ``msgpack``).

So the client carries none of our implementation's assumptions or limits: it sends what
it is told to, including what a well-behaved peer never would (unfinished messages on a
hundred channels, a message one byte at a time, a replayed first flight), and it reads
what the other side answers without trusting it to be well-formed.

Importing it: the folder has no ``__init__.py``. Under pytest, ``tests/hostile`` is on
``sys.path`` for the tests in it (rootdir-relative "prepend" import mode), so they say
``import wire``; from elsewhere (a bench, a scratch script) put the folder on the path
first::

    sys.path.insert(0, str(REPO / "tests" / "hostile"))
    import wire

Using it (trio)::

    peer = await wire.RawPeer.connect("127.0.0.1", port, source="127.0.0.7")
    remote_static, hello = await peer.handshake_xx(wire.hello("attacker"))
    await peer.wait_admitted()                  # the responder's first PING
    kind, fields = await peer.request(wire.login_password("alice", "guess"))
    # ("ErrorReply", {"code": "auth-failed", "message": ...})

One task reads and one sends at a time per peer (sends are serialised by a lock, so a
reader answering PINGs and an attacking sender may share a peer; two readers may not).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

import msgpack
import trio
from noise.connection import Keypair, NoiseConnection  # type: ignore[import-untyped]

# --- the wire format, written down independently -----------------------------------------------

MAGIC = b"CDZ"
VERSION = 1
PATTERN_XX = 1
PATTERN_IK = 2
PROLOGUE = b"cadenza/1"
NOISE_XX = b"Noise_XX_25519_ChaChaPoly_SHA256"
NOISE_IK = b"Noise_IK_25519_ChaChaPoly_SHA256"
# Both ends rekey a direction after this many transport messages, with no signal: a
# client that did not would be unreadable after the millionth message of a flood.
REKEY_INTERVAL = 1 << 20
TAG = 16
MAX_NOISE_MESSAGE = 65535  # what a u16 length can say
MAX_PLAINTEXT = MAX_NOISE_MESSAGE - TAG

LENGTH = struct.Struct(">H")
FRAME_HEADER = struct.Struct(">BBIH")
U32 = struct.Struct(">I")
BULK_HEADER = struct.Struct(">BI")  # kind, index

DATA, WINDOW_UPDATE, RESET, PING, GOAWAY = 0, 1, 2, 3, 4
FRAME_NAMES = {DATA: "DATA", WINDOW_UPDATE: "WINDOW_UPDATE", RESET: "RESET", PING: "PING",
               GOAWAY: "GOAWAY"}  # fmt: skip
END_MESSAGE, END_CHANNEL, BULK = 0x01, 0x02, 0x04
PRIORITY_SHIFT = 4
ACK = 0x01  # on PING

# Codes in RESET and GOAWAY; a number not listed here is shown as such.
ERROR_CODES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "CANCELLED",
    5: "REFUSED",
    6: "TOO_MANY_CHANNELS",
    7: "AUTHENTICATION_FAILED",
    8: "TIMEOUT",
    9: "MESSAGE_TOO_LARGE",
    10: "OVER_BUDGET",
}

# Control message type ids, for naming what arrives (any id can be sent with message()).
MESSAGE_NAMES = {
    1: "ErrorReply",
    2: "Hello",
    3: "Echo",
    10: "Login",
    11: "LoginOk",
    12: "RenewCertificate",
    13: "CertificateReply",
    14: "Logout",
    15: "Ack",
    20: "Lookup",
    21: "LookupReply",
    22: "Search",
    23: "SearchReply",
    30: "GetManifest",
    31: "ManifestReply",
    32: "GetChunks",
    40: "Announce",
    41: "Withdraw",
    42: "FindPeers",
    43: "PeersReply",
    44: "ReportPeer",
    60: "PeerBanned",
    61: "SessionEnded",
    80: "SearchQuery",
    81: "SearchHit",
}
MESSAGE_IDS = {name: type_id for type_id, name in MESSAGE_NAMES.items()}

# What one receive_some asks for; the server writes up to 64 KiB Noise messages.
READ_SIZE = 256 * 1024
# Return credit on a channel the server streams to us once this much has arrived (the
# server grants 512 KiB per channel; half keeps it from stalling).
CREDIT_STEP = 256 * 1024


# --- control messages (msgpack by hand) ---------------------------------------------------------


def message(type_id: int, fields: dict[str, Any]) -> bytes:
    """Any control message: ``[type_id, fields]`` in msgpack (bytes as bin, str as str)."""
    data: bytes = msgpack.packb([type_id, fields], use_bin_type=True)
    return data


def hello(
    agent: str, certificate: bytes | None = None, *, protocol: int = 1, features: Sequence[str] = ()
) -> bytes:
    """The handshake payload: a Hello (type 2)."""
    return message(
        2,
        {
            "agent": agent,
            "protocol": protocol,
            "certificate": certificate,
            "features": list(features),
        },
    )


def login_password(user: str, password: str, device_name: str = "x", p2p_port: int = 0) -> bytes:
    return message(
        10,
        {"username": user, "password": password, "device_name": device_name, "p2p_port": p2p_port},
    )


def login_device(credential: bytes, p2p_port: int = 0) -> bytes:
    return message(10, {"device_credential": credential, "p2p_port": p2p_port})


Decoded: TypeAlias = tuple[str | int, dict[str, Any]]


def decode_message(data: bytes) -> Decoded:
    """``(name, fields)`` of a control message; ``name`` is the type id when unknown.

    Lenient on purpose (this is the attacker's reader): anything that is not a
    ``[type, map]`` pair raises ValueError.
    """
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], dict)):
        raise ValueError(f"not a [type, fields] pair: {obj!r:.200}")
    type_id: Any = obj[0]
    fields: dict[str, Any] = obj[1]
    name: str | int = MESSAGE_NAMES.get(type_id, type_id)
    return name, fields


# --- frames ------------------------------------------------------------------------------------


def frame(
    ftype: int, flags: int, channel: int, payload: bytes = b"", *, length: int | None = None
) -> bytes:
    """Any frame; ``length`` may lie about the payload's size (malformed-frame tests)."""
    size = len(payload) if length is None else length
    return FRAME_HEADER.pack(ftype, flags, channel, size) + payload


def data_frame(
    channel: int,
    payload: bytes,
    *,
    end_message: bool = True,
    end_channel: bool = False,
    bulk: bool = False,
    priority: int = 0,
) -> bytes:
    flags = (
        (priority << PRIORITY_SHIFT)
        | (BULK if bulk else 0)
        | (END_MESSAGE if end_message else 0)
        | (END_CHANNEL if end_channel else 0)
    )
    return frame(DATA, flags, channel, payload)


def ping_frame(payload8: bytes, *, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload8)


def window_update(channel: int, n: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, channel, U32.pack(n))


def reset_frame(channel: int, code: int, reason: str = "") -> bytes:
    return frame(RESET, 0, channel, bytes([code]) + reason.encode())


def goaway_frame(last_channel: int, code: int, reason: str = "") -> bytes:
    return frame(GOAWAY, 0, 0, U32.pack(last_channel) + bytes([code]) + reason.encode())


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    flags: int
    channel: int
    payload: bytes

    @property
    def name(self) -> str:
        return FRAME_NAMES.get(self.type, f"type-{self.type}")


def parse_frames(plain: bytes) -> list[Frame]:
    """Every frame in one transport message's plaintext; ValueError if they do not fit."""
    out = []
    pos = 0
    while pos < len(plain):
        if len(plain) - pos < FRAME_HEADER.size:
            raise ValueError("truncated frame header")
        ftype, flags, channel, length = FRAME_HEADER.unpack_from(plain, pos)
        start = pos + FRAME_HEADER.size
        if start + length > len(plain):
            raise ValueError("frame longer than its transport message")
        out.append(Frame(ftype, flags, channel, plain[start : start + length]))
        pos = start + length
    return out


# --- what the other side says ------------------------------------------------------------------


def code_name(code: int) -> str:
    return ERROR_CODES.get(code, str(code))


@dataclass(frozen=True, slots=True)
class Message:
    """A whole control message on ``channel`` (DATA ending with END_MESSAGE)."""

    channel: int
    kind: str | int  # the type's name, or its id when unknown
    fields: dict[str, Any]
    end_channel: bool

    @property
    def decoded(self) -> Decoded:
        return self.kind, self.fields


@dataclass(frozen=True, slots=True)
class Bulk:
    channel: int
    kind: int
    index: int
    data: bytes
    end_channel: bool


@dataclass(frozen=True, slots=True)
class Garbage:
    """A message on ``channel`` that is not msgpack [type, map] (or a short bulk)."""

    channel: int
    data: bytes
    error: str


@dataclass(frozen=True, slots=True)
class ChannelEnd:
    """An empty END_CHANNEL: the other side sends nothing more on ``channel``."""

    channel: int


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes
    ack: bool  # a PONG (the answer to ours)


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    channel: int
    increment: int


@dataclass(frozen=True, slots=True)
class Reset:
    channel: int
    code: int
    reason: str

    @property
    def code_name(self) -> str:
        return code_name(self.code)


@dataclass(frozen=True, slots=True)
class GoAway:
    last_channel: int
    code: int
    reason: str

    @property
    def code_name(self) -> str:
        return code_name(self.code)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame this client cannot make sense of (unknown type, bad length), as it came."""

    frame: Frame


Event: TypeAlias = (
    Message | Bulk | Garbage | ChannelEnd | Ping | WindowUpdate | Reset | GoAway | Unknown
)


@dataclass(frozen=True, slots=True)
class Closed:
    """How and when the connection ended (``hold``'s answer, and PeerClosed's)."""

    reason: str  # "eof", "eof mid-message", "reset", "closed locally", or the socket's error
    elapsed: float  # seconds since the TCP connection was made
    goaway: GoAway | None  # the last GOAWAY seen before, if any
    bytes_received: int


class WireError(Exception):
    """The other side said something this client cannot read (bad handshake, bad tag)."""


class PeerClosed(WireError):
    """The connection is gone; ``closed`` says how and when."""

    def __init__(self, closed: Closed) -> None:
        goaway = closed.goaway
        why = f" after GOAWAY {goaway.code_name}: {goaway.reason}" if goaway else ""
        super().__init__(f"connection closed ({closed.reason}) at {closed.elapsed:.3f} s{why}")
        self.closed = closed


class ChannelRefused(WireError):
    """The other side reset the request's channel instead of replying."""

    def __init__(self, reset: Reset) -> None:
        super().__init__(f"channel {reset.channel} reset: {reset.code_name} {reset.reason}")
        self.reset = reset


class HandshakeResult(NamedTuple):
    remote_static: bytes
    payload: bytes  # the responder's handshake payload (its Hello)


# --- the peer ----------------------------------------------------------------------------------


@dataclass(eq=False)
class RawPeer:
    """One TCP connection speaking the Cadenza protocol by hand; see the module docstring."""

    stream: trio.SocketStream
    connected_at: float
    local_address: tuple[str, int]
    # Reading: answer the other side's PINGs, and return credit on channels it streams to us.
    answer_pings: bool = True
    grant_credit: bool = True
    static_private: bytes = b""
    static_public: bytes = b""
    # Exactly what handshake_ik put on the wire before any reply (replay tests).
    ik_first_flight: bytes = b""
    bytes_sent: int = 0
    bytes_received: int = 0
    goaway: GoAway | None = None
    closed: Closed | None = None
    _noise: Any = None
    _remote_static: bytes | None = None
    _sent_messages: int = 0
    _received_messages: int = 0
    _rbuf: bytearray = field(default_factory=bytearray)
    _frames: deque[Frame] = field(default_factory=deque)
    _fragments: dict[int, bytearray] = field(default_factory=dict)
    _bulk: dict[int, bool] = field(default_factory=dict)
    _unacked: dict[int, int] = field(default_factory=dict)
    _next_channel: int = 1
    _send_lock: trio.StrictFIFOLock = field(default_factory=trio.StrictFIFOLock)

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str | None = None) -> RawPeer:
        """TCP to ``host:port``, from ``source`` (e.g. "127.0.0.7": loopback has 2**24
        addresses, so one machine can appear as many clients) if given."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            if source is not None:
                await sock.bind((source, 0))
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        local = sock.getsockname()
        return cls(trio.SocketStream(sock), trio.current_time(), (local[0], local[1]))

    async def __aenter__(self) -> RawPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def elapsed(self) -> float:
        return trio.current_time() - self.connected_at

    @property
    def handshake_done(self) -> bool:
        return self._noise is not None and bool(self._noise.handshake_finished)

    async def aclose(self) -> None:
        """Close our side (FIN)."""
        if self.closed is None:
            self._close("closed locally")
        await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed or vanished client would."""
        with contextlib.suppress(OSError):
            self.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.aclose()

    def _close(self, reason: str) -> Closed:
        if self.closed is None:
            self.closed = Closed(reason, self.elapsed, self.goaway, self.bytes_received)
        return self.closed

    # --- raw bytes ---

    async def send_raw(self, data: bytes) -> None:
        """Put ``data`` on the wire as it is; PeerClosed if the other side is gone."""
        if self.closed is not None:
            raise PeerClosed(self.closed)
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise PeerClosed(self._close(_why(exc))) from None
        self.bytes_sent += len(data)

    async def receive_raw(self, max_bytes: int = READ_SIZE) -> bytes:
        """Bytes as they arrive (b"" at EOF), bypassing Noise: what is already buffered
        first. For a peer that only replays recorded bytes."""
        if self._rbuf:
            out = bytes(self._rbuf[:max_bytes])
            del self._rbuf[:max_bytes]
            return out
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise PeerClosed(self._close(_why(exc))) from None
        self.bytes_received += len(data)
        if not data:
            self._close("eof")
        return bytes(data)

    async def _fill(self, n: int) -> None:
        while len(self._rbuf) < n:
            if self.closed is not None:
                raise PeerClosed(self.closed)
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise PeerClosed(self._close(_why(exc))) from None
            if not data:
                raise PeerClosed(self._close("eof mid-message" if self._rbuf else "eof"))
            self.bytes_received += len(data)
            self._rbuf += data

    async def _read_noise_message(self) -> bytes:
        await self._fill(LENGTH.size)
        (n,) = LENGTH.unpack_from(self._rbuf)
        await self._fill(LENGTH.size + n)
        body = bytes(self._rbuf[LENGTH.size : LENGTH.size + n])
        del self._rbuf[: LENGTH.size + n]
        return body

    # --- handshake ---

    def _start_noise(self, name: bytes, static: bytes | None, remote_static: bytes | None) -> Any:
        noise = NoiseConnection.from_name(name)
        noise.set_as_initiator()
        noise.set_prologue(PROLOGUE)
        self.static_private = static if static is not None else os.urandom(32)
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.static_private)
        self.static_public = bytes(noise.noise_protocol.keypairs["s"].public_bytes)
        if remote_static is not None:
            noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
        noise.start_handshake()
        # noiseprotocol deletes its handshake state, and the remote static key with it, as
        # the last handshake message is processed: catch the key on the way out.
        protocol = noise.noise_protocol
        done = protocol.handshake_done

        def capture_then_done() -> None:
            self._remote_static = bytes(protocol.handshake_state.rs.public_bytes)
            done()

        protocol.handshake_done = capture_then_done
        return noise

    async def _read_handshake_message(self, noise: Any) -> bytes:
        msg = await self._read_noise_message()
        try:
            return bytes(noise.read_message(msg))
        except Exception as exc:  # noiseprotocol raises several types on a bad message
            raise WireError(f"bad handshake message ({len(msg)} bytes): {exc!r}") from None

    async def handshake_xx(self, payload: bytes, static: bytes | None = None) -> HandshakeResult:
        """XX as initiator: ``-> e``, ``<- e, ee, s, es`` (+ the responder's payload),
        ``-> s, se`` + ``payload``. ``static``: our 32-byte private key (random if None)."""
        noise = self._start_noise(NOISE_XX, static, None)
        first = bytes(noise.write_message(b""))
        await self.send_raw(_preamble(PATTERN_XX) + LENGTH.pack(len(first)) + first)
        remote_payload = await self._read_handshake_message(noise)
        third = bytes(noise.write_message(payload))
        await self.send_raw(LENGTH.pack(len(third)) + third)
        assert noise.handshake_finished and self._remote_static is not None
        self._noise = noise
        return HandshakeResult(self._remote_static, remote_payload)

    async def handshake_ik(
        self, remote_static: bytes, payload: bytes, static: bytes | None = None
    ) -> HandshakeResult:
        """IK as initiator, knowing the responder's key: ``-> e, es, s, ss`` + ``payload``,
        ``<- e, ee, se`` + the responder's payload. The first flight (preamble and first
        message) is kept as ``ik_first_flight``."""
        noise = self._start_noise(NOISE_IK, static, remote_static)
        first = bytes(noise.write_message(payload))
        self.ik_first_flight = _preamble(PATTERN_IK) + LENGTH.pack(len(first)) + first
        await self.send_raw(self.ik_first_flight)
        remote_payload = await self._read_handshake_message(noise)
        assert noise.handshake_finished
        self._noise = noise
        return HandshakeResult(self._remote_static or remote_static, remote_payload)

    # --- transport ---

    def seal(self, plaintext: bytes) -> bytes:
        """One transport message for the wire (length + ciphertext). Every call uses a nonce:
        what is sealed must be sent, in order, or the other side cannot decrypt the rest."""
        if self._noise is None:
            raise WireError("no handshake yet")
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"{len(plaintext)} bytes do not fit one Noise message")
        ct = bytes(self._noise.encrypt(bytes(plaintext)))
        self._sent_messages += 1
        if self._sent_messages % REKEY_INTERVAL == 0:
            self._noise.rekey_outbound_cipher()
        return LENGTH.pack(len(ct)) + ct

    async def send_frames(self, frames: Iterable[bytes]) -> None:
        """Frames packed into ONE transport message."""
        await self.send_raw(self.seal(b"".join(frames)))

    async def send_sealed(self, plaintexts: Iterable[bytes], *, batch: int = 1 << 20) -> None:
        """Many transport messages, written in batches of about ``batch`` bytes (floods)."""
        pending: list[bytes] = []
        size = 0
        for plain in plaintexts:
            sealed = self.seal(plain)
            pending.append(sealed)
            size += len(sealed)
            if size >= batch:
                await self.send_raw(b"".join(pending))
                pending, size = [], 0
        if pending:
            await self.send_raw(b"".join(pending))

    def next_channel(self) -> int:
        """A new channel id of ours (the initiator's are odd)."""
        cid = self._next_channel
        self._next_channel += 2
        return cid

    async def receive_frame(self) -> Frame:
        """The next frame from the other side (decrypting a transport message when needed).
        GOAWAY frames are also recorded in ``goaway``; PeerClosed when the connection ends."""
        while not self._frames:
            if self._noise is None:
                raise WireError("no handshake yet")
            ct = await self._read_noise_message()
            try:
                plain = bytes(self._noise.decrypt(ct))
            except Exception as exc:
                raise WireError(f"undecryptable transport message: {exc!r}") from None
            self._received_messages += 1
            if self._received_messages % REKEY_INTERVAL == 0:
                self._noise.rekey_inbound_cipher()
            try:
                self._frames.extend(parse_frames(plain))
            except ValueError as exc:
                raise WireError(f"malformed transport message: {exc}") from None
        f = self._frames.popleft()
        if f.type == GOAWAY and f.channel == 0 and len(f.payload) >= 5:
            (last,) = U32.unpack_from(f.payload)
            self.goaway = GoAway(last, f.payload[4], f.payload[5:].decode("utf-8", "replace"))
        return f

    async def receive_event(self) -> Event:
        """The next thing the other side says, a whole message at a time. PINGs are answered
        (``answer_pings``) and credit returned (``grant_credit``) before they are returned."""
        while True:
            f = await self.receive_frame()
            ev = await self._event(f)
            if ev is not None:
                return ev

    async def _event(self, f: Frame) -> Event | None:
        if f.type == PING and len(f.payload) == 8 and f.channel == 0:
            ack = bool(f.flags & ACK)
            if not ack and self.answer_pings:
                await self.send_frames([ping_frame(f.payload, ack=True)])
            return Ping(f.payload, ack)
        if f.type == WINDOW_UPDATE and len(f.payload) == 4:
            return WindowUpdate(f.channel, U32.unpack(f.payload)[0])
        if f.type == RESET and f.payload:
            self._fragments.pop(f.channel, None)
            return Reset(f.channel, f.payload[0], f.payload[1:].decode("utf-8", "replace"))
        if f.type == GOAWAY and self.goaway is not None and f.channel == 0:
            return self.goaway
        if f.type != DATA:
            return Unknown(f)
        await self._credit(f.channel, len(f.payload))
        cid = f.channel
        frag = self._fragments.get(cid)
        if frag is None:
            frag = self._fragments[cid] = bytearray()
            self._bulk[cid] = bool(f.flags & BULK)
        frag += f.payload
        if not f.flags & END_MESSAGE:
            return None
        body = bytes(frag)
        bulk = self._bulk.pop(cid, False)
        del self._fragments[cid]
        end_channel = bool(f.flags & END_CHANNEL)
        if not body and end_channel:
            return ChannelEnd(cid)
        if bulk:
            if len(body) < BULK_HEADER.size:
                return Garbage(cid, body, "bulk message shorter than its header")
            kind, index = BULK_HEADER.unpack_from(body)
            return Bulk(cid, kind, index, body[BULK_HEADER.size :], end_channel)
        try:
            kind_name, fields = decode_message(body)
        except Exception as exc:
            return Garbage(cid, body, repr(exc))
        return Message(cid, kind_name, fields, end_channel)

    async def _credit(self, channel: int, n: int) -> None:
        if not self.grant_credit or n == 0:
            return
        unacked = self._unacked.get(channel, 0) + n
        if unacked >= CREDIT_STEP:
            await self.send_frames([window_update(channel, unacked)])
            unacked = 0
        self._unacked[channel] = unacked

    async def wait_admitted(self) -> Ping:
        """Read until the responder's first PING (its "accepted"); PeerClosed if it refuses."""
        while True:
            ev = await self.receive_event()
            if isinstance(ev, Ping) and not ev.ack:
                return ev
            if isinstance(ev, GoAway) and ev.code != 0:
                raise PeerClosed(self._close(f"refused: GOAWAY {ev.code_name}: {ev.reason}"))

    # --- requests ---

    async def request(self, msg: bytes, *, priority: int = 0) -> Decoded:
        """Send ``msg`` on a new channel (END_MESSAGE|END_CHANNEL) and return the reply's
        ``(name, fields)``; ChannelRefused if the channel is reset, PeerClosed if the
        connection ends. Other frames are ignored (PINGs answered)."""
        [reply] = await self.request_many([msg], priority=priority)
        if isinstance(reply, Reset):
            raise ChannelRefused(reply)
        return reply.decoded

    async def send_requests(self, msgs: Sequence[bytes], *, priority: int = 0) -> list[int]:
        """Each message on a new channel of its own, packed into as few transport messages as
        fit (all "at once"); returns the channel ids."""
        channels: list[int] = []
        plains: list[bytes] = []
        current: list[bytes] = []
        room = MAX_PLAINTEXT
        for msg in msgs:
            cid = self.next_channel()
            channels.append(cid)
            f = data_frame(cid, msg, end_channel=True, priority=priority)
            if len(f) > room and current:
                plains.append(b"".join(current))
                current, room = [], MAX_PLAINTEXT
            current.append(f)
            room -= len(f)
        if current:
            plains.append(b"".join(current))
        await self.send_sealed(plains)
        return channels

    async def collect(self, channels: Sequence[int]) -> dict[int, Message | Reset]:
        """The first reply (or RESET) on each of ``channels``, in any order of arrival."""
        waiting = set(channels)
        out: dict[int, Message | Reset] = {}
        while waiting:
            ev = await self.receive_event()
            if isinstance(ev, Message | Reset) and ev.channel in waiting:
                out[ev.channel] = ev
                waiting.discard(ev.channel)
            elif isinstance(ev, GoAway) and ev.code != 0:
                # The other side is hanging up on us: say so now, not at EOF.
                raise PeerClosed(self._close(f"GOAWAY {ev.code_name}: {ev.reason}"))
        return out

    async def request_many(
        self, msgs: Sequence[bytes], *, priority: int = 0
    ) -> list[Message | Reset]:
        """send_requests, then collect: the replies in the order of ``msgs``."""
        channels = await self.send_requests(msgs, priority=priority)
        replies = await self.collect(channels)
        return [replies[cid] for cid in channels]

    # --- attacks ---

    async def open_channels_with_fragments(
        self, n_channels: int, bytes_per_channel: int, fragment_size: int = 16000
    ) -> list[int]:
        """Open ``n_channels`` new channels and send ``bytes_per_channel`` on each as DATA
        fragments without END_MESSAGE: messages that never finish, which the other side must
        hold or refuse. Fragments are packed several to a transport message."""
        filler = os.urandom(fragment_size)
        channels = [self.next_channel() for _ in range(n_channels)]

        def plaintexts() -> Iterable[bytes]:
            current: list[bytes] = []
            room = MAX_PLAINTEXT
            for cid in channels:
                left = bytes_per_channel
                while left > 0:
                    n = min(fragment_size, left)
                    left -= n
                    f = data_frame(cid, filler[:n], end_message=False)
                    if len(f) > room:
                        yield b"".join(current)
                        current, room = [], MAX_PLAINTEXT
                    current.append(f)
                    room -= len(f)
            if current:
                yield b"".join(current)

        await self.send_sealed(plaintexts())
        return channels

    async def trickle(self, data: bytes, interval: float, *, seal: bool = True) -> float:
        """Send one transport message (``data`` is its plaintext: frames) a byte at a time,
        ``interval`` seconds apart; ``seal=False`` trickles ``data`` as raw bytes instead
        (a handshake, a preamble). Returns the seconds it took; PeerClosed if cut off."""
        wire = self.seal(data) if seal else data
        start = trio.current_time()
        for i in range(len(wire)):
            await self.send_raw(wire[i : i + 1])
            if i + 1 < len(wire):
                await trio.sleep(interval)
        return trio.current_time() - start

    async def hold(self) -> Closed:
        """Keep the connection open, answering nothing, reading and discarding what arrives,
        until the other side closes it; returns how and when (and its GOAWAY, if any).
        Bound it with ``trio.move_on_after`` to stop holding."""
        self.answer_pings = False
        self.grant_credit = False
        try:
            while True:
                if self.handshake_done:
                    try:
                        await self.receive_frame()
                        continue
                    except WireError as exc:
                        if isinstance(exc, PeerClosed):
                            return exc.closed
                        # Unreadable after all: go on discarding bytes.
                        self._noise = None
                if not await self.receive_raw():
                    return self._close("eof")
        except PeerClosed as exc:
            return exc.closed


def _preamble(pattern: int) -> bytes:
    return MAGIC + bytes([VERSION, pattern])


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if isinstance(cause, OSError) and cause.errno == errno.ECONNRESET:
        return "reset"
    if isinstance(exc, trio.ClosedResourceError):
        return "closed locally"
    return f"{type(cause).__name__}: {cause}"
