"""The framing layer on its own (cadenza.protocol._framing): the handshake, Noise transport
messages and the frames inside them, PING, the end of the stream. Each side's channel layer is
a bare one; what goes to it is seen in the events and the send queue."""

from __future__ import annotations

from collections import deque

import pytest

from cadenza.protocol import frames as fr
from cadenza.protocol._channels import Allowance, Channels
from cadenza.protocol._events import (
    ConnectionClosed,
    Event,
    GoAway,
    HandshakeComplete,
    MessageReceived,
    PeerProven,
    PingReceived,
    PongReceived,
)
from cadenza.protocol._framing import MAX_RECEIVE_BUFFER, NEED_DATA, Framing, Role, State
from cadenza.protocol.budget import UNLIMITED, MemoryPool
from cadenza.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cadenza.protocol.frames import Pattern
from cadenza.protocol.messages import Echo, Priority, encode
from cadenza.protocol.noise import KeyPair
from cadenza.protocol.scheduler import SendScheduler

SERVER_KEY = KeyPair.generate()
CLIENT_KEY = KeyPair.generate()


class _Member:
    def shed(self, reason: str) -> None:
        raise AssertionError("not shed in these tests")


def _side(
    role: Role,
    key: KeyPair,
    remote: bytes | None = None,
    payload: bytes = b"",
    pool: MemoryPool | None = None,
) -> Framing:
    events: deque[Event] = deque()
    sched = SendScheduler()
    member = _Member()
    if pool is not None:
        pool.join(member)
    chans = Channels(role is Role.INITIATOR, events, sched, Allowance(UNLIMITED, pool, member))
    return Framing(role, key, remote, payload, None, events, sched, chans)


def _drain(side: Framing) -> list[object]:
    out = []
    while (ev := side.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def _pump(a: Framing, b: Framing) -> tuple[list[object], list[object]]:
    ea: list[object] = []
    eb: list[object] = []
    while True:
        moved = False
        for src, dst, sink in ((a, b, eb), (b, a, ea)):
            data = src.data_to_send(1 << 30)
            if data:
                moved = True
                dst.receive_data(data)
            sink.extend(_drain(dst))
        if not moved:
            return ea, eb


def _open(ik: bool = False) -> tuple[Framing, Framing]:
    client = _side(Role.INITIATOR, CLIENT_KEY, SERVER_KEY.public if ik else None, b"c-cert")
    server = _side(Role.RESPONDER, SERVER_KEY, payload=b"s-cert")
    _pump(client, server)
    return client, server


def _send_raw(sender: Framing, receiver: Framing, plain: bytes) -> None:
    """``plain`` as one transport message, however wrong its frames."""
    assert sender.transport is not None
    ct = sender.transport.encrypt(plain)
    receiver.receive_data(fr.LENGTH_PREFIX.pack(len(ct)) + ct)


@pytest.mark.parametrize("ik", [False, True], ids=["XX", "IK"])
def test_the_handshake_opens_both_sides(ik: bool) -> None:
    client = _side(Role.INITIATOR, CLIENT_KEY, SERVER_KEY.public if ik else None, b"c-cert")
    server = _side(Role.RESPONDER, SERVER_KEY, payload=b"s-cert")
    assert client.wants_write and not server.wants_write
    first = client.data_to_send(1 << 30)
    assert first[: fr.PREAMBLE.size] == fr.PREAMBLE.pack(
        fr.MAGIC, fr.VERSION, Pattern.IK if ik else Pattern.XX
    )
    server.receive_data(first)
    ec, es = _pump(client, server)
    es = [*_drain(server), *es]
    [hc] = ec
    [hs] = [e for e in es if isinstance(e, HandshakeComplete)]
    assert isinstance(hc, HandshakeComplete)
    assert (hc.remote_static, hc.remote_payload) == (SERVER_KEY.public, b"s-cert")
    assert (hs.remote_static, hs.remote_payload) == (CLIENT_KEY.public, b"c-cert")
    assert client.state is server.state is State.OPEN
    # An IK responder has the peer's word, not yet its proof; XX has both.
    assert server.peer_proven is not ik and client.peer_proven
    client.send_ping(b"12345678")
    _, es = _pump(client, server)
    assert es == ([PeerProven()] if ik else []) + [PingReceived(b"12345678")]
    assert server.peer_proven


def test_the_preamble_is_checked_before_any_noise() -> None:
    for junk, why in (
        (b"GET / HTTP/1.1\r\n", "magic"),
        (fr.PREAMBLE.pack(fr.MAGIC, 9, 1), "version"),
        (fr.PREAMBLE.pack(fr.MAGIC, fr.VERSION, 77), "pattern"),
    ):
        server = _side(Role.RESPONDER, SERVER_KEY)
        server.receive_data(junk)
        with pytest.raises(RemoteProtocolError, match=why):
            server.next_event()
        assert server.state is State.CLOSED and server.data_to_send(1 << 30) == b""
    with pytest.raises(LocalProtocolError, match="only the initiator"):
        _side(Role.RESPONDER, SERVER_KEY, CLIENT_KEY.public)


def test_frames_in_one_message_go_to_their_owners_in_order() -> None:
    client, server = _open()
    data = fr.encode_frame(
        fr.FrameType.DATA,
        fr.data_flags(Priority.CONTROL, bulk=False, end_message=True, end_channel=False),
        1,
        encode(Echo(b"x")),
    )
    goaway = fr.goaway(0, ErrorCode.NO_ERROR, "later")
    _send_raw(client, server, fr.ping(b"abcdefgh") + data + fr.ping(b"ABCDEFGH", ack=True) + goaway)
    before = server.messages_in
    events = _drain(server)
    assert server.messages_in == before + 1
    assert [type(e) for e in events] == [PingReceived, MessageReceived, PongReceived, GoAway]
    # The ping was answered, by the framing layer, through the shared send queue.
    client.receive_data(server.data_to_send(1 << 30))
    assert _drain(client) == [PongReceived(b"abcdefgh")]


@pytest.mark.parametrize(
    ("plain", "why"),
    [
        (fr.FRAME_HEADER.pack(9, 0, 0, 0), "unknown frame type"),
        (fr.ping(bytes(8))[:5], "truncated frame header"),
        (fr.FRAME_HEADER.pack(fr.FrameType.PING, 0, 0, 100) + bytes(8), "longer than"),
        (fr.encode_frame(fr.FrameType.PING, 0, 1, bytes(8)), "PING must be"),
    ],
)
def test_a_broken_frame_ends_the_connection_with_a_goaway(plain: bytes, why: str) -> None:
    client, server = _open()
    _send_raw(client, server, plain)
    with pytest.raises(RemoteProtocolError, match=why):
        _drain(server)
    assert server.state is State.CLOSED and server.next_event() is NEED_DATA
    client.receive_data(server.data_to_send(1 << 30))
    [goaway] = _drain(client)
    assert isinstance(goaway, GoAway) and goaway.code is ErrorCode.PROTOCOL_ERROR
    assert why in goaway.reason


def test_what_to_send_is_packed_into_transport_messages_within_max_bytes() -> None:
    client, server = _open()
    cid = client._chan.open_channel()
    for _ in range(8):
        client._chan.queue(cid, bytes(16_000), Priority.PLAYING, bulk=True, end_channel=False)
    sent = client.bytes_out
    first = client.data_to_send(1)  # one transport message at least, however small the ask
    (n,) = fr.LENGTH_PREFIX.unpack_from(first)
    assert len(first) == fr.LENGTH_PREFIX.size + n and n <= fr.MAX_NOISE_MESSAGE
    rest = client.data_to_send(1 << 30)
    assert client.bytes_out == sent + len(first) + len(rest)
    assert not client.wants_write and client.data_to_send(1 << 30) == b""
    server.receive_data(first + rest)
    assert len(_drain(server)) == 8


def test_eof_is_clean_between_messages_and_an_error_inside_one() -> None:
    client, server = _open()
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="after EOF"):
        server.receive_data(b"x")
    client, server = _open()
    client.send_ping(bytes(8))
    wire = client.data_to_send(1 << 30)
    server.receive_data(wire[:-1])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed by peer in a message"):
        server.next_event()
    handshaking = _side(Role.RESPONDER, SERVER_KEY)
    handshaking.receive_data(b"CD")
    handshaking.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        handshaking.next_event()


def test_the_receive_buffer_is_bounded_and_let_go_once_read() -> None:
    client, server = _open()
    with pytest.raises(LocalProtocolError, match="receive buffer full"):
        server.receive_data(bytes(MAX_RECEIVE_BUFFER + 1))
    client.send_ping(bytes(8))
    server.receive_data(client.data_to_send(1 << 30))
    _drain(server)
    assert len(server.rbuf) == 0 and server.rpos == 0


def test_closing_lets_go_of_what_the_peer_made_us_hold() -> None:
    pool = MemoryPool(1 << 20)
    client = _side(Role.INITIATOR, CLIENT_KEY)
    server = _side(Role.RESPONDER, SERVER_KEY, pool=pool)
    _pump(client, server)
    flags = fr.data_flags(0, bulk=False, end_message=False, end_channel=False)
    _send_raw(client, server, fr.encode_frame(fr.FrameType.DATA, flags, 1, bytes(500)))
    _drain(server)
    assert pool.total == 500
    server.close()
    assert pool.total == 0 and server.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="closed, not open"):
        server.send_ping(bytes(8))
    client.require_open()
    with pytest.raises(LocalProtocolError, match="8 bytes"):
        client.send_ping(b"short")
