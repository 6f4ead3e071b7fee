"""The channel layer on its own (cadenza.protocol._channels): frames in as the framing layer
hands them over, events and queued frames out, no Noise and no bytes on the wire."""

from __future__ import annotations

from collections import deque

import pytest

from cadenza.protocol import frames as fr
from cadenza.protocol._channels import (
    _REMEMBER_CLOSED,
    INITIAL_WINDOW,
    MAX_ANSWERS_QUEUED,
    MAX_CHANNELS,
    MAX_QUEUED,
    Allowance,
    Channels,
    _RecvChannel,
)
from cadenza.protocol._events import (
    BulkReceived,
    ChannelEnded,
    ChannelReset,
    Event,
    GoAway,
    MessageReceived,
    MessageRejected,
)
from cadenza.protocol.budget import UNLIMITED, Budget, MemoryPool
from cadenza.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cadenza.protocol.messages import BULK_HEADER, BulkKind, Echo, Priority, encode
from cadenza.protocol.scheduler import SendScheduler


class _Member:
    def __init__(self) -> None:
        self.shed_for: list[str] = []

    def shed(self, reason: str) -> None:
        self.shed_for.append(reason)


def _channels(
    *, initiator: bool = False, budget: Budget = UNLIMITED, pool: MemoryPool | None = None
) -> tuple[Channels, deque[Event], SendScheduler]:
    """A responder's channels by default: the peer (an initiator) opens odd ids."""
    events: deque[Event] = deque()
    sched = SendScheduler()
    member = _Member()
    if pool is not None:
        pool.join(member)
    return Channels(initiator, events, sched, Allowance(budget, pool, member)), events, sched


def _data(
    chans: Channels,
    cid: int,
    body: bytes,
    *,
    end: bool = True,
    end_channel: bool = False,
    bulk: bool = False,
    priority: int = Priority.CONTROL,
) -> None:
    flags = fr.data_flags(priority, bulk=bulk, end_message=end, end_channel=end_channel)
    chans.on_data(flags, cid, memoryview(body))


def _sent(sched: SendScheduler) -> list[tuple[int, int, int, bytes]]:
    """Every frame the scheduler would put on the wire now, as (type, flags, channel, payload)."""
    out = []
    while (item := sched.next_frame(fr.MAX_PLAINTEXT)) is not None:
        head, payload = item
        ftype, flags, cid, n = fr.FRAME_HEADER.unpack_from(head)
        body = bytes(payload) if payload is not None else head[fr.FRAME_HEADER.size :]
        assert len(body) == n
        out.append((ftype, flags, cid, body))
    return out


def test_the_peer_opens_channels_of_its_parity_and_we_of_ours() -> None:
    chans, events, _ = _channels()
    assert [chans.open_channel() for _ in range(3)] == [2, 4, 6]
    _data(chans, 1, encode(Echo(b"hi")))
    [ev] = events
    assert isinstance(ev, MessageReceived) and ev.opened and ev.message == Echo(b"hi")
    assert chans.highest_remote == 1 and sorted(chans.table) == [1, 2, 4, 6]
    with pytest.raises(RemoteProtocolError, match="never opened"):
        _data(chans, 8, encode(Echo(b"")))  # ours, not yet opened
    with pytest.raises(RemoteProtocolError, match="never opened"):
        _data(chans, 0, encode(Echo(b"")))
    initiator, _, _ = _channels(initiator=True)
    assert [initiator.open_channel() for _ in range(2)] == [1, 3]


def test_late_frames_on_closed_channels_are_dropped_not_reopened() -> None:
    chans, events, sched = _channels()
    ours = chans.open_channel()
    _data(chans, 1, encode(Echo(b"a")))
    chans.reset(1, ErrorCode.CANCELLED, "bye", tell_peer=True)
    chans.reset(ours, ErrorCode.CANCELLED, "", tell_peer=False)
    events.clear()
    _data(chans, 1, encode(Echo(b"late")))
    _data(chans, ours, encode(Echo(b"late")))
    assert not events and not chans.table
    # Only the reset we were told to announce went out.
    assert [(t, c) for t, _, c, _ in _sent(sched)] == [(fr.FrameType.RESET, 1)]
    # Remembered for a while, not for ever.
    for cid in range(3, 3 + 2 * _REMEMBER_CLOSED, 2):
        _data(chans, cid, b"", end_channel=True)
        chans.reset(cid, ErrorCode.CANCELLED, "", tell_peer=False)
    events.clear()
    _data(chans, 1, encode(Echo(b"again")))
    assert [type(e) for e in events] == [MessageReceived]


def test_fragments_are_reassembled_within_the_budget_size() -> None:
    chans, events, _ = _channels(budget=Budget(channels=4, message=5000, held=1 << 20))
    body = encode(Echo(bytes(3000)))
    for i in range(0, len(body), 1000):
        _data(chans, 1, body[i : i + 1000], end=i + 1000 >= len(body))
    [ev] = events
    assert isinstance(ev, MessageReceived) and ev.size == len(body)
    big = encode(Echo(bytes(6000)))
    _data(chans, 3, big[:4000], end=False)
    with pytest.raises(RemoteProtocolError, match="size limit") as err:
        _data(chans, 3, big[4000:5001], end=False)
    assert err.value.code is ErrorCode.MESSAGE_TOO_LARGE
    with pytest.raises(RemoteProtocolError, match="empty non-final"):
        _data(chans, 5, b"", end=False)
    with pytest.raises(RemoteProtocolError, match="END_CHANNEL without END_MESSAGE"):
        _data(chans, 7, b"x", end=False, end_channel=True)


def test_bulk_arrives_as_a_view_with_its_priority() -> None:
    chans, events, _ = _channels()
    body = BULK_HEADER.pack(BulkKind.CHUNK, 9) + b"audio"
    _data(chans, 1, body, bulk=True, priority=Priority.PREFETCH, end_channel=True)
    [ev] = events
    assert isinstance(ev, BulkReceived)
    assert (ev.kind, ev.index, bytes(ev.data), ev.priority) == (
        BulkKind.CHUNK,
        9,
        b"audio",
        Priority.PREFETCH,
    )
    assert isinstance(ev.data, memoryview) and ev.end_channel
    events.clear()
    _data(chans, 3, b"\x01", bulk=True)
    assert [type(e) for e in events] == [MessageRejected]


def test_a_bad_message_resets_its_channel_only() -> None:
    chans, events, sched = _channels()
    _data(chans, 1, encode(Echo(b"fine")))
    _data(chans, 3, b"\xc1")
    assert [type(e) for e in events] == [MessageReceived, MessageRejected]
    assert chans.allowance.held == len(encode(Echo(b"fine")))  # the rejected one is let go
    assert [(t, c) for t, _, c, _ in _sent(sched)] == [(fr.FrameType.RESET, 3)]
    assert 1 in chans.table and 3 not in chans.table


def test_a_bare_end_is_channel_ended_and_a_channel_ended_both_ways_is_forgotten() -> None:
    chans, events, sched = _channels()
    _data(chans, 1, encode(Echo(b"q")))
    _data(chans, 1, b"", end_channel=True)
    assert [type(e) for e in events][1:] == [ChannelEnded]
    with pytest.raises(RemoteProtocolError, match="after its end"):
        _data(chans, 1, b"x")
    chans.queue(1, b"", Priority.CONTROL, bulk=False, end_channel=True)
    chans.maybe_forget(1)
    assert 1 in chans.table  # our end is still queued
    _sent(sched)
    chans.maybe_forget(1)
    assert 1 not in chans.table


def test_credit_is_enforced_and_topped_up_after_half_a_window() -> None:
    chans, _, _ = _channels()
    piece = b"\x00" * 16384
    for _ in range(INITIAL_WINDOW // 16384):
        _data(chans, 1, piece, end=False)
    with pytest.raises(RemoteProtocolError, match="overran") as err:
        _data(chans, 1, b"x", end=False)
    assert err.value.code is ErrorCode.FLOW_CONTROL_ERROR
    chans, _, sched = _channels()
    _data(chans, 1, piece, end=False)
    chans.consume(1, INITIAL_WINDOW // 2 - 1)
    assert _sent(sched) == []
    chans.consume(1, 1)
    [(ftype, _, cid, body)] = _sent(sched)
    assert (ftype, cid, fr.U32.unpack(body)[0]) == (
        fr.FrameType.WINDOW_UPDATE,
        1,
        INITIAL_WINDOW // 2,
    )


def test_window_updates_grant_send_credit_within_twice_the_window() -> None:
    chans, _, _ = _channels()
    cid = chans.open_channel()
    chans.on_window_update(cid, memoryview(fr.U32.pack(1000)))
    assert chans.send_window(cid) == INITIAL_WINDOW + 1000
    chans.on_window_update(99, memoryview(fr.U32.pack(1000)))  # gone: moot
    with pytest.raises(RemoteProtocolError, match="beyond") as err:
        chans.on_window_update(cid, memoryview(fr.U32.pack(INITIAL_WINDOW)))
    assert err.value.code is ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(RemoteProtocolError, match="zero"):
        chans.on_window_update(cid, memoryview(fr.U32.pack(0)))
    with pytest.raises(RemoteProtocolError, match="4 bytes"):
        chans.on_window_update(cid, memoryview(b"\x00"))


def test_a_reset_from_the_peer_drops_what_we_queued_and_what_it_made_us_hold() -> None:
    chans, events, _ = _channels()
    _data(chans, 1, b"\x00" * 100, end=False)
    chans.queue(1, b"reply", Priority.CONTROL, bulk=False, end_channel=False)
    assert chans.allowance.held == 100 and chans.queued_bytes(None) == 5
    chans.on_reset(1, memoryview(fr.reset(1, ErrorCode.CANCELLED, "skip")[fr.FRAME_HEADER.size :]))
    assert list(events) == [ChannelReset(1, ErrorCode.CANCELLED, "skip")]
    assert chans.allowance.held == 0 and chans.queued_bytes(None) == 0 and not chans.table
    chans.on_reset(1, memoryview(b"\x08"))  # again: nothing
    assert len(events) == 1
    with pytest.raises(RemoteProtocolError, match="without a code"):
        chans.on_reset(3, memoryview(b""))


def test_too_many_channels_are_refused_with_a_reset() -> None:
    chans, events, sched = _channels(budget=Budget(channels=2, message=4096, held=8192))
    for cid in (1, 3, 5):
        _data(chans, cid, encode(Echo(b"")))
    assert [e.channel for e in events if isinstance(e, MessageReceived)] == [1, 3]
    [(ftype, _, cid, body)] = _sent(sched)
    assert (ftype, cid, fr.parse_code(body[0])) == (
        fr.FrameType.RESET,
        5,
        ErrorCode.TOO_MANY_CHANNELS,
    )
    chans.set_priority(1, Priority.OFFLINE)  # harmless on a channel with nothing queued
    # Our own limit is the peer's too.
    mine, _, _ = _channels()
    for _ in range(MAX_CHANNELS):
        mine.open_channel()
    assert not mine.can_open_channel
    with pytest.raises(LocalProtocolError, match="already open"):
        mine.open_channel()


def test_goaway_closes_admission_both_ways() -> None:
    chans, events, sched = _channels()
    _data(chans, 5, encode(Echo(b"")))
    chans.send_goaway(ErrorCode.NO_ERROR, "restarting")
    assert chans.last_goaway(ErrorCode.INTERNAL_ERROR, "again") is None  # once only
    [(ftype, _, _, body)] = _sent(sched)
    assert ftype == fr.FrameType.GOAWAY and fr.U32.unpack_from(body)[0] == 5
    _data(chans, 7, encode(Echo(b"")))
    [(_, _, cid, body)] = _sent(sched)
    assert cid == 7 and fr.parse_code(body[0]) is ErrorCode.REFUSED
    events.clear()
    chans.on_goaway(0, memoryview(fr.U32.pack(4) + b"\x00bye"))
    assert list(events) == [GoAway(4, ErrorCode.NO_ERROR, "bye")]
    assert chans.goaway_received and not chans.can_open_channel
    with pytest.raises(LocalProtocolError, match="going away"):
        chans.open_channel()
    with pytest.raises(RemoteProtocolError, match="GOAWAY must be"):
        chans.on_goaway(1, memoryview(fr.U32.pack(0) + b"\x00"))


def test_answers_are_bounded_until_the_peer_reads_them() -> None:
    chans, _, sched = _channels()
    for _ in range(MAX_ANSWERS_QUEUED):
        chans.answer(fr.ping(bytes(8), ack=True))
    with pytest.raises(RemoteProtocolError, match="faster than it reads") as err:
        chans.answer(fr.ping(bytes(8), ack=True))
    assert err.value.code is ErrorCode.OVER_BUDGET
    _sent(sched)
    chans.answer(fr.ping(bytes(8), ack=True))


def test_local_misuse_of_the_send_side() -> None:
    chans, _, _ = _channels()
    with pytest.raises(LocalProtocolError, match="not open"):
        chans.queue(2, b"x", Priority.CONTROL, bulk=False, end_channel=False)
    cid = chans.open_channel()
    chans.queue(cid, bytes(MAX_QUEUED - 10), Priority.OFFLINE, bulk=True, end_channel=False)
    with pytest.raises(LocalProtocolError, match="send queue full"):
        chans.queue(cid, bytes(11), Priority.OFFLINE, bulk=True, end_channel=False)
    assert chans.queued_bytes(cid) == MAX_QUEUED - 10 and chans.queued_bytes(99) == 0


def test_the_allowance_keeps_the_budget_and_the_pool_in_step() -> None:
    pool = MemoryPool(1000)
    member = _Member()
    pool.join(member)
    allowance = Allowance(Budget(channels=1, message=100, held=600), pool, member)
    rc = _RecvChannel()
    allowance.hold(rc, 1, 400)
    assert (allowance.held, rc.held, pool.held(member)) == (400, 400, 400)
    with pytest.raises(RemoteProtocolError, match="budget of 600") as err:
        allowance.hold(rc, 1, 201)
    assert err.value.code is ErrorCode.OVER_BUDGET
    allowance.unhold(rc, 10_000)  # never below what the channel holds
    assert (allowance.held, rc.held, pool.total) == (0, 0, 0)
    allowance.hold(rc, 1, 300)
    allowance.release_all()
    assert allowance.held == 0 and pool.total == 0 and pool.held(member) == 0
    allowance.release_all()  # idempotent
    assert member.shed_for == []


def test_the_allowance_keeps_its_connection_only_while_in_a_pool() -> None:
    """The connection owns its allowance: a reference back would be a cycle, which the
    collector, not reference counting, would have to free (tests/integration/test_net_loopback)."""
    import weakref

    member = _Member()
    gone = weakref.ref(member)
    allowance = Allowance(UNLIMITED, None, member)
    del member
    assert gone() is None
    pool = MemoryPool(1000)
    member = _Member()
    gone = weakref.ref(member)
    pool.join(member)
    allowance = Allowance(UNLIMITED, pool, member)
    del member
    allowance.release_all()
    assert gone() is None and allowance.held == 0
