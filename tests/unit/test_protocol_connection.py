"""The sans-IO connection: two of them joined by a fake link, no sockets."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.protocol import frames as fr
from cadenza.protocol.budget import Budget, MemoryPool
from cadenza.protocol.connection import (
    INITIAL_WINDOW,
    MAX_CHANNELS,
    NEED_DATA,
    BulkReceived,
    ChannelEnded,
    ChannelReset,
    Connection,
    ConnectionClosed,
    GoAway,
    HandshakeComplete,
    MessageReceived,
    MessageRejected,
    PeerProven,
    PingReceived,
    PongReceived,
    Role,
    State,
)
from cadenza.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cadenza.protocol.frames import Pattern
from cadenza.protocol.messages import BulkKind, Echo, ErrorReply, Priority, encode
from cadenza.protocol.noise import KeyPair

SERVER_KEY = KeyPair.generate()
CLIENT_KEY = KeyPair.generate()


def drain(conn: Connection) -> list[object]:
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def pump(a: Connection, b: Connection, *, byte_at_a_time: bool = False) -> tuple[list, list]:
    """Move bytes both ways until quiet; return (events at a, events at b)."""
    ea: list[object] = []
    eb: list[object] = []
    for _ in range(1000):
        moved = False
        for src, dst, sink in ((a, b, eb), (b, a, ea)):
            data = src.data_to_send(1 << 30)
            if data:
                moved = True
                if byte_at_a_time:
                    for i in range(len(data)):
                        dst.receive_data(data[i : i + 1])
                        sink.extend(drain(dst))
                else:
                    dst.receive_data(data)
            sink.extend(drain(dst))
        if not moved:
            return ea, eb
    raise AssertionError("link never went quiet")


def pair(ik: bool = False, **kw: object) -> tuple[Connection, Connection, list, list]:
    client = Connection(
        Role.INITIATOR,
        CLIENT_KEY,
        remote_static=SERVER_KEY.public if ik else None,
        payload=b"client-cert",
    )
    server = Connection(Role.RESPONDER, SERVER_KEY, payload=b"server-cert")
    ec, es = pump(client, server, **kw)  # type: ignore[arg-type]
    return client, server, ec, es


@pytest.mark.parametrize("ik", [False, True], ids=["XX", "IK"])
@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])
def test_handshake_exchanges_keys_and_payloads(ik: bool, byte_at_a_time: bool) -> None:
    client, server, ec, es = pair(ik, byte_at_a_time=byte_at_a_time)
    assert client.state is State.OPEN and server.state is State.OPEN
    [hc] = ec
    [hs] = es
    assert isinstance(hc, HandshakeComplete) and isinstance(hs, HandshakeComplete)
    assert hc.remote_static == SERVER_KEY.public and hs.remote_static == CLIENT_KEY.public
    assert hc.remote_payload == b"server-cert" and hs.remote_payload == b"client-cert"
    assert hc.handshake_hash == hs.handshake_hash
    assert hc.pattern is hs.pattern is (Pattern.IK if ik else Pattern.XX)


def test_ik_with_wrong_server_key_fails_at_the_responder() -> None:
    client = Connection(Role.INITIATOR, CLIENT_KEY, remote_static=KeyPair.generate().public)
    server = Connection(Role.RESPONDER, SERVER_KEY)
    server.receive_data(client.data_to_send())
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.state is State.CLOSED


def test_not_a_cadenza_peer() -> None:
    server = Connection(Role.RESPONDER, SERVER_KEY)
    server.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="magic"):
        server.next_event()


def test_messages_and_bulk_both_ways() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    client.send_message(cid, Echo(b"ping"), priority=Priority.CONTROL)
    _, es = pump(client, server)
    [ev] = es
    assert isinstance(ev, MessageReceived)
    assert ev.channel == cid and ev.opened and ev.message == Echo(b"ping") and not ev.end_channel
    chunk = bytes(range(256)) * 64
    server.send_bulk(cid, BulkKind.CHUNK, 7, chunk, priority=Priority.PREFETCH, end_channel=True)
    ec, _ = pump(client, server)
    [bulk] = ec
    assert isinstance(bulk, BulkReceived)
    assert (bulk.kind, bulk.index, bytes(bulk.data)) == (BulkKind.CHUNK, 7, chunk)
    assert bulk.priority is Priority.PREFETCH and bulk.end_channel
    client.end_channel(cid)
    pump(client, server)
    assert not client.is_open(cid) and not server.is_open(cid)


def test_large_message_is_fragmented_and_reassembled() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    payload = bytes(200_000)
    client.send_message(cid, Echo(payload), end_channel=True)
    _, es = pump(client, server)
    [ev] = es
    assert isinstance(ev, MessageReceived) and ev.message == Echo(payload)


def test_unknown_message_resets_only_that_channel() -> None:
    client, server, _, _ = pair()
    good = client.open_channel()
    bad = client.open_channel()
    # A message type nobody registered, sent raw as if by a newer peer.
    import msgpack

    client._queue(bad, msgpack.packb([9999, {}]), 0, bulk=False, end_channel=False)
    client.send_message(good, Echo(b"still here"))
    ec, es = pump(client, server)
    assert any(isinstance(e, MessageRejected) and e.channel == bad for e in es)
    assert any(isinstance(e, MessageReceived) and e.channel == good for e in es)
    assert any(isinstance(e, ChannelReset) and e.channel == bad for e in ec)
    assert server.state is State.OPEN and client.state is State.OPEN


def test_reset_drops_queued_data_and_reaches_peer() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    client.send_message(cid, Echo(b"x"))
    pump(client, server)
    server.send_bulk(cid, BulkKind.OPAQUE, 0, bytes(100_000))
    server.reset_channel(cid, ErrorCode.CANCELLED, "changed track")
    assert server.queued_bytes(cid) == 0
    ec, _ = pump(client, server)
    assert [type(e) for e in ec] == [ChannelReset]
    assert ec[0].code is ErrorCode.CANCELLED and ec[0].reason == "changed track"


def test_flow_control_parks_a_channel_without_blocking_others() -> None:
    client, server, _, _ = pair()
    bulk = client.open_channel()
    ctl = client.open_channel()
    for i in range(40):  # 40 x 16 KiB = 640 KiB, more than one window
        client.send_bulk(bulk, BulkKind.OPAQUE, i, bytes(16384))
    _, es = pump(client, server)
    got = [e for e in es if isinstance(e, BulkReceived)]
    # The receiver consumed nothing: the sender stopped at the window.
    assert sum(e.size for e in got) <= INITIAL_WINDOW
    assert client.queued_bytes(bulk) > 0
    client.send_message(ctl, Echo(b"control"))
    _, es = pump(client, server)
    assert [e.message for e in es if isinstance(e, MessageReceived)] == [Echo(b"control")]
    # Consuming grants credit and the rest flows.
    for e in got:
        server.consume(bulk, e.size)
    total = len(got)
    for _ in range(10):
        _, es = pump(client, server)
        more = [e for e in es if isinstance(e, BulkReceived)]
        for e in more:
            server.consume(bulk, e.size)
        total += len(more)
    assert total == 40


def test_window_updates_go_once_half_the_window_is_used_so_a_short_reply_needs_none() -> None:
    client, server, _, _ = pair()
    short = client.open_channel()
    for i in range(8):  # a reply of 8 chunks (128 KiB), consumed as it comes
        client.send_bulk(short, BulkKind.OPAQUE, i, bytes(16384))
    _, es = pump(client, server)
    for e in es:
        if isinstance(e, BulkReceived):
            server.consume(short, e.size)
    assert server.data_to_send(1 << 30) == b""  # no WINDOW_UPDATE (nor anything else) to send
    # A long transfer: a top-up per half window consumed, and it never stalls.
    long = client.open_channel()
    updates = 0
    for i in range(4 * INITIAL_WINDOW // 16384):
        client.send_bulk(long, BulkKind.OPAQUE, i, bytes(16384))
    received = 0  # chunks
    for _ in range(100):
        server.receive_data(client.data_to_send(1 << 30))
        for e in drain(server):
            if isinstance(e, BulkReceived):
                received += 1
                server.consume(long, e.size)
        wire = server.data_to_send(1 << 30)
        if wire:
            updates += 1
            client.receive_data(wire)
            drain(client)
    assert received == 4 * INITIAL_WINDOW // 16384  # all of it arrived
    assert 6 <= updates <= 8  # 4 windows in halves (the first half's credit came with the channel)


def test_peer_overrunning_the_window_is_a_remote_error() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    # Bypass our own flow control to misbehave like a broken peer.
    client._channels[cid].send.window = 10 * INITIAL_WINDOW
    for i in range(INITIAL_WINDOW // 16384 + 4):
        client.send_bulk(cid, BulkKind.OPAQUE, i, bytes(16384))
    server.receive_data(client.data_to_send(1 << 30))
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    # The server tells the client why before it hangs up.
    client.receive_data(server.data_to_send())
    assert any(
        isinstance(e, GoAway) and e.code is ErrorCode.FLOW_CONTROL_ERROR for e in drain(client)
    )


def test_priorities_decide_the_order_on_the_wire() -> None:
    client, server, _, _ = pair()
    offline = client.open_channel()
    prefetch = client.open_channel()
    playing = client.open_channel()
    control = client.open_channel()
    for i in range(4):
        client.send_bulk(offline, BulkKind.OPAQUE, i, bytes(1000), priority=Priority.OFFLINE)
        client.send_bulk(prefetch, BulkKind.OPAQUE, i, bytes(1000), priority=Priority.PREFETCH)
        client.send_bulk(playing, BulkKind.OPAQUE, i, bytes(1000), priority=Priority.PLAYING)
    client.send_message(control, Echo(b"now"), priority=Priority.CONTROL)
    _, es = pump(client, server)
    order = [e.channel for e in es if isinstance(e, MessageReceived | BulkReceived)]
    assert order == [control] + [playing] * 4 + [prefetch] * 4 + [offline] * 4


def test_ping_is_answered_and_reported() -> None:
    client, server, _, _ = pair()
    client.send_ping(b"12345678")
    ec, es = pump(client, server)
    assert es == [PingReceived(b"12345678")]
    assert ec == [PongReceived(b"12345678")]


def test_goaway_refuses_new_channels_and_eof_is_clean() -> None:
    client, server, _, _ = pair()
    server.send_goaway(ErrorCode.NO_ERROR, "restarting")
    ec, _ = pump(client, server)
    assert ec == [GoAway(0, ErrorCode.NO_ERROR, "restarting")]
    with pytest.raises(LocalProtocolError):
        client.open_channel()
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


def test_eof_mid_message_is_a_remote_error() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    client.send_message(cid, Echo(bytes(5000)))
    data = client.data_to_send()
    server.receive_data(data[: len(data) // 2])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        server.next_event()


def test_too_many_channels_are_refused_not_fatal() -> None:
    client, server, _, _ = pair()
    ids = [client.open_channel() for _ in range(MAX_CHANNELS)]
    assert not client.can_open_channel
    with pytest.raises(LocalProtocolError):
        client.open_channel()
    client._local_open -= 3  # misbehave: go past the limit the peer enforces
    ids += [client.open_channel() for _ in range(3)]
    for cid in ids:
        client.send_message(cid, Echo(b""))
    ec, es = pump(client, server)
    assert len([e for e in es if isinstance(e, MessageReceived)]) == MAX_CHANNELS
    refused = [e for e in ec if isinstance(e, ChannelReset)]
    assert len(refused) == 3 and all(e.code is ErrorCode.TOO_MANY_CHANNELS for e in refused)


def test_channel_ended_event_for_bare_end() -> None:
    client, server, _, _ = pair()
    cid = client.open_channel()
    client.send_message(cid, Echo(b"a"))
    client.end_channel(cid)
    _, es = pump(client, server)
    assert [type(e) for e in es] == [MessageReceived, ChannelEnded]


def test_local_misuse_is_a_local_error() -> None:
    client, _server, _, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.send_message(99, Echo(b""))
    cid = client.open_channel()
    client.send_message(cid, ErrorReply("x"), end_channel=True)
    with pytest.raises(LocalProtocolError):
        client.send_message(cid, Echo(b""))
    with pytest.raises(LocalProtocolError):
        Connection(Role.RESPONDER, SERVER_KEY, remote_static=CLIENT_KEY.public)


# --- fuzzing: parse it or raise RemoteProtocolError, nothing else; memory stays bounded --------


def _open_pair() -> tuple[Connection, Connection]:
    client, server, _, _ = pair()
    return client, server


def _feed(conn: Connection, data: bytes, bytewise: bool) -> None:
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        for piece in pieces:
            conn.receive_data(piece)
            drain(conn)
            assert len(conn._rbuf) - conn._rpos <= fr.MAX_NOISE_MESSAGE + 2
    except RemoteProtocolError:
        assert conn.state is State.CLOSED


frame_types = st.sampled_from([t.value for t in fr.FrameType] + [7, 255])


@st.composite
def frame_soup(draw: st.DrawFn) -> bytes:
    """Plausible frames with hostile fields, plus raw junk."""
    out = b""
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            payload = draw(st.binary(max_size=64))
            length = draw(st.one_of(st.just(len(payload)), st.integers(0, 0xFFFF)))
            out += fr.FRAME_HEADER.pack(
                draw(frame_types),
                draw(st.integers(0, 255)),
                draw(st.sampled_from([0, 1, 2, 3, 4, 0xFFFFFFFF])),
                length,
            )
            out += payload
        else:
            out += draw(st.binary(max_size=40))
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(plain=frame_soup(), bytewise=st.booleans())
def test_fuzz_decrypted_frames(plain: bytes, bytewise: bool) -> None:
    client, server = _open_pair()
    assert client._transport is not None
    ct = client._transport.encrypt(plain)
    _feed(server, fr.LENGTH_PREFIX.pack(len(ct)) + ct, bytewise)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300), bytewise=st.booleans())
def test_fuzz_raw_bytes_after_handshake(junk: bytes, bytewise: bool) -> None:
    _, server = _open_pair()
    _feed(server, junk, bytewise)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300), bytewise=st.booleans(), prefix=st.booleans())
def test_fuzz_handshake_responder(junk: bytes, bytewise: bool, prefix: bool) -> None:
    server = Connection(Role.RESPONDER, SERVER_KEY)
    data = (fr.PREAMBLE.pack(fr.MAGIC, fr.VERSION, 1) + junk) if prefix else junk
    _feed(server, data, bytewise)


@settings(max_examples=200, deadline=None)
@given(
    flip=st.integers(0, 10_000),
    cut=st.integers(0, 400),
    ik=st.booleans(),
)
def test_fuzz_mutated_handshake_messages(flip: int, cut: int, ik: bool) -> None:
    client = Connection(Role.INITIATOR, CLIENT_KEY, remote_static=SERVER_KEY.public if ik else None)
    first = bytearray(client.data_to_send())
    first[flip % len(first)] ^= 1 << (flip % 8)
    server = Connection(Role.RESPONDER, SERVER_KEY)
    _feed(server, bytes(first[: max(cut, 1)]), False)
    # And the initiator reading a mutated reply.
    client2 = Connection(Role.INITIATOR, CLIENT_KEY)
    server2 = Connection(Role.RESPONDER, SERVER_KEY)
    server2.receive_data(client2.data_to_send())
    drain(server2)
    reply = bytearray(server2.data_to_send())
    reply[flip % len(reply)] ^= 1 << (flip % 8)
    _feed(client2, bytes(reply), False)


def test_memory_stays_bounded_under_a_flood_of_junk() -> None:
    _, server = _open_pair()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        frame = fr.LENGTH_PREFIX.pack(0xFFFF)  # claims a maximal message, then sends junk
        server.receive_data(frame)
        for _ in range(63):  # ~64 KiB, one byte short of the full message
            server.receive_data(bytes(1023))
            assert server.next_event() is NEED_DATA
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(LocalProtocolError):
        server.receive_data(bytes(8 << 20))  # a caller that never drains is told so


# --- hostile peers: budgets, the process pool, answer floods, replayed IK, progress ------------


def _raw(sender: Connection, receiver: Connection, *frames: bytes) -> list[object]:
    """Frames ``sender`` would never send, encrypted as one transport message for ``receiver``."""
    assert sender._transport is not None
    ct = sender._transport.encrypt(b"".join(frames))
    receiver.receive_data(fr.LENGTH_PREFIX.pack(len(ct)) + ct)
    return drain(receiver)


def _fragment(cid: int, data: bytes, *, end: bool = False) -> bytes:
    flags = fr.data_flags(0, bulk=False, end_message=end, end_channel=end)
    return fr.encode_frame(fr.FrameType.DATA, flags, cid, data)


def _budgeted_pair(b: Budget, pool: MemoryPool | None = None) -> tuple[Connection, Connection]:
    client = Connection(Role.INITIATOR, CLIENT_KEY, payload=b"c")
    server = Connection(Role.RESPONDER, SERVER_KEY, payload=b"s", budget=b, pool=pool)
    pump(client, server)
    return client, server


SMALL = Budget(channels=4, message=4096, held=8192)


def test_unfinished_fragments_past_the_held_budget_end_the_connection() -> None:
    client, server = _budgeted_pair(SMALL)
    assert _raw(client, server, _fragment(1, bytes(3000)), _fragment(3, bytes(3000))) == []
    assert server.held == 6000
    with pytest.raises(RemoteProtocolError, match="budget") as err:
        _raw(client, server, _fragment(5, bytes(3000)))
    assert err.value.code is ErrorCode.OVER_BUDGET
    assert server.state is State.CLOSED
    # It said why on its way out.
    client.receive_data(server.data_to_send())
    goaway = [e for e in drain(client) if isinstance(e, GoAway)]
    assert goaway and goaway[0].code is ErrorCode.OVER_BUDGET


def test_a_message_over_the_budget_size_is_refused_even_in_one_frame() -> None:
    client, server = _budgeted_pair(SMALL)
    cid = client.open_channel()
    client.send_message(cid, Echo(bytes(5000)), end_channel=True)
    with pytest.raises(RemoteProtocolError, match="size limit") as err:
        pump(client, server)
    assert err.value.code is ErrorCode.MESSAGE_TOO_LARGE


def test_what_the_application_consumed_no_longer_counts_and_a_raised_budget_applies() -> None:
    client, server = _budgeted_pair(SMALL)
    for _ in range(4):
        cid = client.open_channel()
        client.send_message(cid, Echo(bytes(2500)), end_channel=True)
        _, es = pump(client, server)
        [ev] = es
        assert isinstance(ev, MessageReceived)
        server.consume(ev.channel, ev.size)
    assert server.held == 0
    # The budget's channels are a count of open ones: a fifth while four are open is refused.
    client, server = _budgeted_pair(SMALL)
    for _ in range(5):
        cid = client.open_channel()
        client.send_message(cid, Echo(b"x"))
    ec, es = pump(client, server)
    assert len([e for e in es if isinstance(e, MessageReceived)]) == 4
    [refused] = [e for e in ec if isinstance(e, ChannelReset)]
    assert refused.code is ErrorCode.TOO_MANY_CHANNELS and server.state is State.OPEN
    # Once admitted, the peer may do what the new budget allows.
    server.set_budget(Budget(channels=64, message=65536, held=1 << 20))
    cid = client.open_channel()
    client.send_message(cid, Echo(bytes(20_000)))
    _, es = pump(client, server)
    assert [type(e) for e in es] == [MessageReceived]


def test_the_pool_sheds_the_connection_holding_the_most() -> None:
    pool = MemoryPool(10_000)
    big = Budget(channels=8, message=8192, held=8192)
    client_a, a = _budgeted_pair(big, pool)
    client_b, b = _budgeted_pair(big, pool)
    shed: list[str] = []
    a.on_shed = shed.append
    _raw(client_a, a, _fragment(1, bytes(6000)))
    _raw(client_b, b, _fragment(1, bytes(3000)))
    assert pool.total == 9000
    # b grows past the pool's limit: a, holding the most, goes; b stays.
    _raw(client_b, b, _fragment(3, bytes(2000)))
    assert shed and "shed" in shed[0]
    assert a.state is State.CLOSED and b.state is State.OPEN
    assert pool.total == 5000 == b.held
    # When the one holding the most is the one asking, it is the one refused.
    client_c, c = _budgeted_pair(big, pool)
    _raw(client_c, c, _fragment(1, bytes(3000)))
    with pytest.raises(RemoteProtocolError, match="shed"):
        _raw(client_b, b, _fragment(5, bytes(2500)))
    assert c.state is State.OPEN and pool.total == 3000  # a closed one leaves nothing behind
    assert pool.shed_count == 1


def test_a_peer_that_pings_faster_than_it_reads_the_pongs_is_dropped() -> None:
    client, server = _budgeted_pair(SMALL)
    ping = fr.ping(bytes(8))
    with pytest.raises(RemoteProtocolError, match="faster than it reads") as err:
        for _ in range(40):  # 40 x 100 pings, never reading a pong
            _raw(client, server, ping * 100)
    assert err.value.code is ErrorCode.OVER_BUDGET
    # One that reads its pongs may ping as often as it likes.
    client, server = _budgeted_pair(SMALL)
    for _ in range(40):
        _raw(client, server, ping * 100)
        server.data_to_send()


def test_channel_refusals_are_answers_too() -> None:
    client, server = _budgeted_pair(SMALL)
    echo = encode(Echo(b"x"))
    frames = [_fragment(cid, echo, end=True) for cid in range(1, 2 * 3000, 2)]
    with pytest.raises(RemoteProtocolError, match="faster than it reads"):
        for i in range(0, len(frames), 500):
            _raw(client, server, *frames[i : i + 500])
    # Malformed messages, each refused with a RESET of its channel, likewise.
    client, server = _budgeted_pair(SMALL)
    junk = [_fragment(cid, b"\xc1", end=True) for cid in range(1, 2 * 3000, 2)]
    with pytest.raises(RemoteProtocolError, match="faster than it reads"):
        for i in range(0, len(junk), 500):
            _raw(client, server, *junk[i : i + 500])


def test_a_replayed_ik_first_message_is_never_proven_live() -> None:
    client = Connection(Role.INITIATOR, CLIENT_KEY, remote_static=SERVER_KEY.public, payload=b"c")
    first_flight = client.data_to_send()
    server = Connection(Role.RESPONDER, SERVER_KEY, payload=b"s")
    server.receive_data(first_flight)
    [hc] = drain(server)
    assert isinstance(hc, HandshakeComplete) and hc.remote_static == CLIENT_KEY.public
    assert not server.peer_proven
    # The genuine initiator proves itself by answering anything of ours (here our PING).
    server.send_ping(b"accepted")
    ec, es = pump(client, server)
    assert any(isinstance(e, PingReceived) for e in ec)
    assert isinstance(es[0], PeerProven) and server.peer_proven
    # The same first flight replayed to another responder: a handshake, never proof. The
    # replayer holds no key of the session, so whatever it sends next fails to decrypt.
    replayed = Connection(Role.RESPONDER, SERVER_KEY, payload=b"s")
    replayed.receive_data(first_flight)
    assert [type(e) for e in drain(replayed)] == [HandshakeComplete]
    replayed.send_ping(b"accepted")
    replayed.data_to_send()
    assert not replayed.peer_proven
    bogus = bytes(48)
    replayed.receive_data(fr.LENGTH_PREFIX.pack(len(bogus)) + bogus)
    with pytest.raises(RemoteProtocolError):
        drain(replayed)
    assert not replayed.peer_proven


def test_xx_proves_liveness_within_the_handshake() -> None:
    _, server, _, es = pair()
    assert server.peer_proven and not any(isinstance(e, PeerProven) for e in es)


def test_progress_is_whole_messages_not_bytes() -> None:
    client, server = _open_pair()
    before = server.messages_in
    cid = client.open_channel()
    client.send_message(cid, Echo(bytes(30_000)))
    data = client.data_to_send()
    for i in range(len(data) - 1):
        server.receive_data(data[i : i + 1])
        assert drain(server) == []
    assert server.messages_in == before
    server.receive_data(data[-1:])
    assert [type(e) for e in drain(server)] == [MessageReceived]
    assert server.messages_in == before + 1


def test_tiny_fragments_cost_their_bytes_not_an_object_each() -> None:
    client, server = _budgeted_pair(Budget(channels=4, message=300_000, held=300_000))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        one_byte = _fragment(1, b"x")
        for _ in range(20):
            _raw(client, server, one_byte * 5000)  # 100,000 one-byte fragments
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert server.held == 100_000
    assert held < 400_000  # a bytes object per fragment would be ~3.5 MB


def test_bytes_read_are_let_go_at_once() -> None:
    client, server = _open_pair()
    cid = client.open_channel()
    client.send_message(cid, Echo(bytes(60_000)))
    server.receive_data(client.data_to_send())
    assert [type(e) for e in drain(server)] == [MessageReceived]
    assert len(server._rbuf) == 0  # not 60 KB parked until the next compaction
