"""The send scheduler: which frame goes on the wire next.

Every frame is parsed back from its header, so the tests see what the peer
would see: channel, length, flags (END_MESSAGE, END_CHANNEL, BULK, priority).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.protocol import frames as fr
from cadenza.protocol.errors import LocalProtocolError
from cadenza.protocol.frames import (
    BULK,
    END_CHANNEL,
    END_MESSAGE,
    FRAME_HEADER,
    KNOWN_DATA_FLAGS,
    MAX_FRAME_PAYLOAD,
    MAX_PLAINTEXT,
    PRIORITY_MASK,
    PRIORITY_SHIFT,
    FrameType,
)
from cadenza.protocol.messages import Priority
from cadenza.protocol.scheduler import LEVELS, STARVATION_BUDGET, SendChannel, SendScheduler

HDR = FRAME_HEADER.size
MFP = MAX_FRAME_PAYLOAD
FULL_FRAME = HDR + MFP  # bytes on the wire for one full DATA frame
ROOM = MAX_PLAINTEXT  # a fresh transport message
BIG_WINDOW = 1 << 40

CONTROL, PLAYING, PREFETCH, OFFLINE = (int(p) for p in Priority)


@dataclass(frozen=True)
class Frame:
    ftype: int
    flags: int
    channel: int
    payload: bytes
    urgent: bool = False

    @property
    def priority(self) -> int:
        return (self.flags & PRIORITY_MASK) >> PRIORITY_SHIFT

    @property
    def end_message(self) -> bool:
        return bool(self.flags & END_MESSAGE)

    @property
    def end_channel(self) -> bool:
        return bool(self.flags & END_CHANNEL)

    @property
    def bulk(self) -> bool:
        return bool(self.flags & BULK)

    @property
    def wire_size(self) -> int:
        return HDR + len(self.payload)


def take(sched: SendScheduler, room: int = ROOM) -> Frame | None:
    """One ``next_frame`` call, parsed and checked against the frame format."""
    out = sched.next_frame(room)
    if out is None:
        return None
    head, payload = out
    if payload is None:  # urgent: a prebuilt whole frame
        assert len(head) <= room
        ftype, flags, cid, n = FRAME_HEADER.unpack_from(head)
        assert len(head) == HDR + n
        return Frame(ftype, flags, cid, bytes(head[HDR:]), urgent=True)
    assert len(head) == HDR
    ftype, flags, cid, n = FRAME_HEADER.unpack(head)
    assert ftype == FrameType.DATA
    assert n == len(payload) <= MFP
    assert HDR + n <= room
    assert flags & ~KNOWN_DATA_FLAGS == 0
    return Frame(ftype, flags, cid, bytes(payload))


def drain(sched: SendScheduler, room: int = ROOM, limit: int = 10_000) -> list[Frame]:
    frames = []
    while (f := take(sched, room)) is not None:
        frames.append(f)
        assert len(frames) < limit, "scheduler never runs dry"
    return frames


def blob(tag: int, size: int) -> bytes:
    """``size`` bytes that differ from message to message."""
    pattern = bytes((tag * 37 + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def joined(frames: list[Frame], cid: int) -> bytes:
    return b"".join(f.payload for f in frames if f.channel == cid)


def messages_on(frames: list[Frame], cid: int) -> list[bytes]:
    """Reassemble the messages of one channel; a trailing partial message is dropped."""
    out, partial = [], b""
    for f in frames:
        if f.channel == cid:
            partial += f.payload
            if f.end_message:
                out.append(partial)
                partial = b""
    return out


def chan(cid: int, window: int = BIG_WINDOW) -> SendChannel:
    return SendChannel(cid, window)


def push(
    sched: SendScheduler,
    ch: SendChannel,
    data: bytes,
    priority: int,
    *,
    bulk: bool = False,
    end_channel: bool = False,
) -> None:
    sched.push(ch, data, priority, bulk=bulk, end_channel=end_channel)


# --- priorities --------------------------------------------------------------------------------


def test_priorities_are_honoured() -> None:
    sched = SendScheduler()
    chans = {p: chan(10 + p) for p in range(LEVELS)}
    for p in reversed(range(LEVELS)):  # least urgent first: queue order must not matter
        push(sched, chans[p], blob(p, 100), p)
    frames = drain(sched)
    assert [f.channel for f in frames] == [10, 11, 12, 13]
    assert [f.priority for f in frames] == [CONTROL, PLAYING, PREFETCH, OFFLINE]
    assert all(f.end_message and not f.end_channel and not f.bulk for f in frames)
    assert [f.payload for f in frames] == [blob(p, 100) for p in range(LEVELS)]


def test_strict_priority_until_the_starvation_budget() -> None:
    sched = SendScheduler()
    playing, offline = chan(1), chan(2)
    n = (STARVATION_BUDGET - 1) // FULL_FRAME  # full frames that stay under the budget
    assert n >= 2
    push(sched, offline, blob(2, 10), OFFLINE)
    push(sched, playing, blob(1, n * MFP), PLAYING)
    frames = drain(sched)
    assert [f.channel for f in frames] == [1] * n + [2]


# --- round robin and per-channel order ------------------------------------------------------------


def test_round_robin_between_channels_of_one_level() -> None:
    sched = SendScheduler()
    a, b = chan(1), chan(2)
    for i in range(2):
        push(sched, a, blob(10 + i, 2 * MFP), PLAYING, bulk=True)
        push(sched, b, blob(20 + i, 2 * MFP), PLAYING, bulk=True)
    frames = drain(sched)
    assert [f.channel for f in frames] == [1, 2] * 4
    assert all(len(f.payload) == MFP for f in frames)
    assert messages_on(frames, 1) == [blob(10, 2 * MFP), blob(11, 2 * MFP)]
    assert messages_on(frames, 2) == [blob(20, 2 * MFP), blob(21, 2 * MFP)]


def test_round_robin_takes_turns_frame_by_frame() -> None:
    sched = SendScheduler()
    a, b, c = chan(1), chan(2), chan(3)
    for i in range(3):
        push(sched, a, blob(i, 10), PREFETCH)
    push(sched, b, blob(9, 10), PREFETCH)
    push(sched, c, blob(7, 10), PREFETCH)
    push(sched, c, blob(8, 10), PREFETCH)
    frames = drain(sched)
    assert [f.channel for f in frames] == [1, 2, 3, 1, 3, 1]
    assert messages_on(frames, 1) == [blob(0, 10), blob(1, 10), blob(2, 10)]


def test_fifo_within_a_channel_despite_a_more_urgent_later_message() -> None:
    sched = SendScheduler()
    a, b = chan(1), chan(2)
    first = blob(1, 2 * MFP + 1)
    push(sched, a, first, OFFLINE)
    push(sched, a, b"urgent", CONTROL)
    push(sched, b, b"prefetch", PREFETCH)
    frames = drain(sched)
    # The channel is filed under its head (OFFLINE): the PREFETCH channel goes first.
    assert [(f.channel, f.priority) for f in frames] == [
        (2, PREFETCH),
        (1, OFFLINE),
        (1, OFFLINE),
        (1, OFFLINE),
        (1, CONTROL),
    ]
    assert messages_on(frames, 1) == [first, b"urgent"]


def test_channel_is_refiled_under_its_next_message_priority() -> None:
    sched = SendScheduler()
    a, b = chan(1), chan(2)
    push(sched, a, b"a1", OFFLINE)
    push(sched, a, b"a2", CONTROL)
    for i in range(20):
        push(sched, b, blob(i, MFP), PREFETCH)
    frames = drain(sched)
    order = [f.payload for f in frames]
    i = order.index(b"a1")
    # a1 waits for the starvation guard; a2 then jumps the PREFETCH backlog at once.
    assert i == math.ceil(STARVATION_BUDGET / FULL_FRAME)
    assert order[i + 1] == b"a2"
    assert len(frames) == 22 and all(f.channel == 2 for f in frames[i + 2 :])


# --- starvation ----------------------------------------------------------------------------------


def _run_backlogged(levels: dict[int, int], frames: int) -> list[Frame]:
    """Keep one channel per priority level backlogged; return the frames sent."""
    sched = SendScheduler()
    chans = {p: chan(cid) for p, cid in levels.items()}
    out = []
    for _ in range(frames):
        for p, ch in chans.items():
            if ch.queued_bytes < 2 * MFP:
                push(sched, ch, blob(p, 4 * MFP), p, bulk=True)
        f = take(sched)
        assert f is not None
        out.append(f)
    return out


def test_starvation_guard_gives_a_waiting_level_its_share() -> None:
    frames = _run_backlogged({PLAYING: 1, OFFLINE: 2}, 1800)
    assert all(len(f.payload) == MFP for f in frames)
    offline_at = [i for i, f in enumerate(frames) if f.channel == 2]
    assert offline_at, "OFFLINE starved"
    # Between two OFFLINE frames, PLAYING sends just past the budget and no more.
    gaps = [b - a - 1 for a, b in zip([-1, *offline_at], offline_at, strict=False)]
    for gap in gaps:
        assert STARVATION_BUDGET <= gap * FULL_FRAME < STARVATION_BUDGET + FULL_FRAME
    share = sum(f.wire_size for f in frames if f.channel == 2) / sum(f.wire_size for f in frames)
    assert (
        FULL_FRAME / (STARVATION_BUDGET + 2 * FULL_FRAME) <= share <= FULL_FRAME / STARVATION_BUDGET
    )  # a guard, not a second scheduler


def test_starvation_guard_serves_every_waiting_level() -> None:
    frames = _run_backlogged({CONTROL: 1, PLAYING: 2, OFFLINE: 3}, 2000)
    total = sum(f.wire_size for f in frames)
    shares = {
        cid: sum(f.wire_size for f in frames if f.channel == cid) / total for cid in (1, 2, 3)
    }
    for cid in (2, 3):
        assert shares[cid] >= FULL_FRAME / (STARVATION_BUDGET + 3 * FULL_FRAME)
    assert shares[1] > 0.7


def test_levels_without_backlog_do_not_accrue_starvation() -> None:
    # A level that had nothing queued while others sent must not jump the queue later.
    sched = SendScheduler()
    playing, offline = chan(1), chan(2)
    push(sched, playing, blob(1, 20 * MFP), PLAYING)
    assert len(drain(sched)) == 20
    push(sched, playing, blob(2, 3 * MFP), PLAYING)
    push(sched, offline, b"late", OFFLINE)
    assert [f.channel for f in drain(sched)] == [1, 1, 1, 2]


# --- flow control --------------------------------------------------------------------------------


def test_channel_without_credit_is_parked_and_blocks_nobody() -> None:
    sched = SendScheduler()
    blocked, other, low = chan(1, window=0), chan(2), chan(3)
    push(sched, blocked, blob(1, 100), CONTROL)
    push(sched, low, blob(3, 50), OFFLINE)
    push(sched, other, blob(2, 10), CONTROL)
    assert [f.channel for f in drain(sched)] == [2, 3]
    assert not sched.has_sendable()
    assert sched.queued_bytes == blocked.queued_bytes == 100
    assert blocked.window == 0

    sched.grant(blocked, 30)
    f = take(sched)
    assert f is not None and f.channel == 1
    assert f.payload == blob(1, 100)[:30] and not f.end_message
    assert blocked.window == 0 and sched.queued_bytes == 70
    assert take(sched) is None

    sched.grant(blocked, 1000)
    f = take(sched)
    assert f is not None and f.payload == blob(1, 100)[30:] and f.end_message
    assert blocked.window == 930
    assert sched.queued_bytes == 0 and blocked.queued_bytes == 0


def test_window_accounting_is_exact() -> None:
    sched = SendScheduler()
    ch = chan(5, window=2 * MFP + MFP // 2)
    data = blob(5, 4 * MFP)
    push(sched, ch, data, PLAYING, bulk=True)
    frames = drain(sched)
    assert [len(f.payload) for f in frames] == [MFP, MFP, MFP // 2]
    assert ch.window == 0
    assert ch.queued_bytes == sched.queued_bytes == 4 * MFP - (2 * MFP + MFP // 2)
    sched.grant(ch, 7)
    sched.grant(ch, 3)
    frames += drain(sched)
    assert len(frames[-1].payload) == 10 and ch.window == 0
    sched.grant(ch, 10 * MFP)
    frames += drain(sched)
    assert joined(frames, 5) == data
    assert ch.window == 10 * MFP - (4 * MFP - (2 * MFP + MFP // 2) - 10)
    assert [f.end_message for f in frames].count(True) == 1 and frames[-1].end_message


def test_grant_of_zero_keeps_the_channel_parked() -> None:
    sched = SendScheduler()
    ch = chan(1, window=0)
    push(sched, ch, b"data", PLAYING)
    sched.grant(ch, 0)
    assert take(sched) is None and not sched.has_sendable()


def test_zero_length_end_of_channel_needs_no_credit() -> None:
    sched = SendScheduler()
    ch = chan(4, window=0)
    push(sched, ch, b"", CONTROL, end_channel=True)
    f = take(sched)
    assert f is not None
    assert (f.channel, f.payload, f.end_message, f.end_channel) == (4, b"", True, True)
    assert ch.window == 0 and sched.queued_bytes == 0
    with pytest.raises(LocalProtocolError):
        push(sched, ch, b"more", CONTROL)


def test_end_of_channel_marker_follows_data_that_used_up_the_credit() -> None:
    sched = SendScheduler()
    ch = chan(4, window=10)
    push(sched, ch, blob(1, 10), PLAYING)
    push(sched, ch, b"", PLAYING, end_channel=True)
    frames = drain(sched)
    assert [(len(f.payload), f.end_message, f.end_channel) for f in frames] == [
        (10, True, False),
        (0, True, True),
    ]
    assert ch.window == 0


def test_end_of_channel_marker_waits_behind_data_without_credit() -> None:
    sched = SendScheduler()
    ch = chan(4, window=0)
    push(sched, ch, blob(1, 5), PLAYING)
    push(sched, ch, b"", PLAYING, end_channel=True)
    assert take(sched) is None
    sched.grant(ch, 5)
    frames = drain(sched)
    assert [(f.payload, f.end_channel) for f in frames] == [(blob(1, 5), False), (b"", True)]


# --- splitting and room -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "pieces"),
    [(0, [0]), (1, [1]), (MFP, [MFP]), (MFP + 1, [MFP, 1]), (3 * MFP + 5, [MFP, MFP, MFP, 5])],
)
def test_large_messages_are_split_into_frames(size: int, pieces: list[int]) -> None:
    sched = SendScheduler()
    ch = chan(9)
    data = blob(3, size)
    push(sched, ch, data, PREFETCH, bulk=True, end_channel=True)
    frames = drain(sched)
    assert [len(f.payload) for f in frames] == pieces
    assert [f.end_message for f in frames] == [False] * (len(pieces) - 1) + [True]
    assert [f.end_channel for f in frames] == [False] * (len(pieces) - 1) + [True]
    assert all(f.bulk and f.priority == PREFETCH and f.channel == 9 for f in frames)
    assert joined(frames, 9) == data


def test_frames_never_exceed_room() -> None:
    sched = SendScheduler()
    ch = chan(1)
    push(sched, ch, blob(1, 100), PLAYING)
    for room in (0, HDR - 1, HDR, HDR + 99):
        assert sched.next_frame(room) is None
    assert sched.queued_bytes == 100 and ch.window == BIG_WINDOW  # nothing consumed
    f = take(sched, HDR + 100)
    assert f is not None and f.payload == blob(1, 100) and f.end_message


def test_a_frame_that_fits_a_fresh_message_is_not_split_to_fill_a_small_room() -> None:
    sched = SendScheduler()
    ch = chan(1)
    push(sched, ch, blob(1, 2 * MFP), PLAYING)
    assert sched.next_frame(HDR + MFP - 1) is None
    assert sched.next_frame(HDR + 100) is None
    f = take(sched, HDR + MFP)
    assert f is not None and len(f.payload) == MFP and not f.end_message


def test_a_split_forced_by_credit_may_fill_the_room() -> None:
    sched = SendScheduler()
    ch = chan(1, window=50)
    push(sched, ch, blob(1, 100), PLAYING)
    assert sched.next_frame(HDR + 49) is None
    f = take(sched, HDR + 50)
    assert f is not None and f.payload == blob(1, 100)[:50] and not f.end_message


def test_empty_frame_needs_room_for_its_header() -> None:
    sched = SendScheduler()
    ch = chan(1)
    push(sched, ch, b"", CONTROL, end_channel=True)
    assert sched.next_frame(HDR - 1) is None
    assert sched.queued_bytes == 0 and ch.queue
    f = take(sched, HDR)
    assert f is not None and f.payload == b"" and f.end_channel


# --- urgent frames -------------------------------------------------------------------------------


def test_urgent_frames_go_first_in_order() -> None:
    sched = SendScheduler()
    ch = chan(1)
    push(sched, ch, b"control", CONTROL)
    update = fr.window_update(7, 1000)
    ping = fr.ping(b"12345678")
    sched.push_urgent(update)
    sched.push_urgent(ping)
    assert sched.queued_bytes == len(b"control") + len(update) + len(ping)
    assert sched.next_frame(ROOM) == (update, None)
    assert sched.next_frame(ROOM) == (ping, None)
    f = take(sched)
    assert f is not None and f.payload == b"control"
    assert sched.queued_bytes == 0 and not sched.has_sendable()


def test_urgent_frame_waits_for_room() -> None:
    sched = SendScheduler()
    frame = fr.ping(b"12345678")
    sched.push_urgent(frame)
    assert sched.next_frame(len(frame) - 1) is None
    assert sched.has_sendable() and sched.queued_bytes == len(frame)
    assert sched.next_frame(len(frame)) == (frame, None)


# --- set_priority and drop ------------------------------------------------------------------------


def test_set_priority_moves_queued_data() -> None:
    sched = SendScheduler()
    a, b = chan(1), chan(2)
    push(sched, a, blob(1, 3 * MFP), OFFLINE)
    push(sched, a, b"tail", OFFLINE)
    push(sched, b, blob(2, 3 * MFP), PREFETCH)
    first = take(sched)
    assert first is not None and first.channel == 2
    sched.set_priority(a, CONTROL)
    frames = drain(sched)
    assert [(f.channel, f.priority) for f in frames] == [(1, CONTROL)] * 4 + [(2, PREFETCH)] * 2
    assert messages_on(frames, 1) == [blob(1, 3 * MFP), b"tail"]


def test_set_priority_in_the_middle_of_a_message() -> None:
    sched = SendScheduler()
    a, b = chan(1), chan(2)
    push(sched, a, blob(1, 3 * MFP), CONTROL)
    push(sched, b, blob(2, 10), PLAYING)
    f = take(sched)
    assert f is not None and (f.channel, f.priority) == (1, CONTROL)
    sched.set_priority(a, OFFLINE)
    frames = [f, *drain(sched)]
    assert [(f.channel, f.priority) for f in frames] == [
        (1, CONTROL),
        (2, PLAYING),
        (1, OFFLINE),
        (1, OFFLINE),
    ]
    assert joined(frames, 1) == blob(1, 3 * MFP)


def test_set_priority_of_a_parked_channel_applies_once_it_has_credit() -> None:
    sched = SendScheduler()
    a, b = chan(1, window=0), chan(2)
    push(sched, a, b"parked", OFFLINE)
    sched.set_priority(a, CONTROL)
    push(sched, b, b"playing", PLAYING)
    sched.grant(a, 100)
    frames = drain(sched)
    assert [(f.channel, f.priority) for f in frames] == [(1, CONTROL), (2, PLAYING)]


@pytest.mark.parametrize("bad", [-1, LEVELS, 255])
def test_priority_out_of_range_is_a_local_error(bad: int) -> None:
    sched = SendScheduler()
    ch = chan(1)
    with pytest.raises(LocalProtocolError):
        push(sched, ch, b"x", bad)
    assert sched.queued_bytes == 0 and not ch.queue
    push(sched, ch, b"x", PLAYING)
    with pytest.raises(LocalProtocolError):
        sched.set_priority(ch, bad)
    f = take(sched)
    assert f is not None and f.priority == PLAYING


def test_drop_forgets_everything_queued_on_the_channel() -> None:
    sched = SendScheduler()
    a, b, parked = chan(1), chan(2), chan(3, window=0)
    push(sched, a, blob(1, 3 * MFP), PLAYING)
    push(sched, a, blob(2, 500), PLAYING)
    push(sched, b, blob(3, 100), PLAYING)
    push(sched, parked, blob(4, 70), CONTROL)
    sched.push_urgent(fr.ping(b"abcdefgh"))
    first = [take(sched), take(sched)]  # the urgent frame, then a's first frame
    assert first[1] is not None and first[1].channel == 1
    sched.drop(a)
    sched.drop(parked)
    assert a.queued_bytes == parked.queued_bytes == 0
    assert sched.queued_bytes == b.queued_bytes == 100
    sched.grant(parked, 1000)
    frames = drain(sched)
    assert [f.channel for f in frames] == [2]
    assert sched.queued_bytes == 0 and not sched.has_sendable()
    for ch in (a, parked):
        with pytest.raises(LocalProtocolError):
            push(sched, ch, b"x", PLAYING)
    sched.drop(a)  # dropping twice is harmless
    assert sched.queued_bytes == 0


# --- property: random operations against a model ----------------------------------------

CIDS = [1, 2, 3, 0xFFFFFFFF]
SIZES = st.one_of(
    st.integers(0, 40), st.integers(MFP - 2, 2 * MFP + 2), st.integers(4 * MFP, 9 * MFP)
)
ROOMS = st.one_of(st.just(ROOM), st.integers(0, 120), st.integers(MFP - 4, MFP + HDR + 4))
WINDOWS = st.one_of(st.just(BIG_WINDOW), st.integers(0, 3 * MFP))
CH = st.integers(0, len(CIDS) - 1)
PRIO = st.integers(0, LEVELS - 1)
OPS = st.one_of(
    st.tuples(
        st.just("push"), CH, SIZES, PRIO, st.booleans(), st.sampled_from([False] * 6 + [True])
    ),
    st.tuples(st.just("urgent"), st.integers(0, 40)),
    st.tuples(st.just("grant"), CH, st.integers(0, 2 * MFP)),
    st.tuples(st.just("prio"), CH, PRIO),
    st.tuples(st.just("drop"), CH),
    st.tuples(st.just("next"), ROOMS, st.integers(1, 20)),
)


@dataclass
class _Msg:
    data: bytes
    priority: int
    bulk: bool
    end: bool
    sent: int = 0


@dataclass
class _Chan:
    ch: SendChannel
    window: int
    queue: deque[_Msg] = field(default_factory=deque)
    pushed: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    closed: bool = False
    dropped: bool = False

    def ready(self) -> bool:
        if not self.queue:
            return False
        head = self.queue[0]
        return self.window > 0 or head.sent == len(head.data)

    def remaining(self) -> int:
        return sum(len(m.data) - m.sent for m in self.queue)


class _Model:
    """What the scheduler must do, written down the slow and obvious way."""

    def __init__(self, sched: SendScheduler, windows: list[int]) -> None:
        self.sched = sched
        self.chans = {
            cid: _Chan(SendChannel(cid, w), w) for cid, w in zip(CIDS, windows, strict=True)
        }
        self.urgent: deque[bytes] = deque()
        self.starved = [0] * LEVELS
        self.seq = 0

    def ready_levels(self) -> set[int]:
        return {c.queue[0].priority for c in self.chans.values() if c.ready()}

    def expected_level(self) -> int | None:
        ready = sorted(self.ready_levels())
        if not ready:
            return None
        best = ready[0]
        return next((lv for lv in ready[1:] if self.starved[lv] >= STARVATION_BUDGET), best)

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "push":
            _, i, size, prio, bulk, end = op
            c = self.chans[CIDS[i]]
            self.seq += 1
            data = blob(self.seq, size)
            if c.closed:
                with pytest.raises(LocalProtocolError):
                    self.sched.push(c.ch, data, prio, bulk=bulk, end_channel=end)
                return
            self.sched.push(c.ch, data, prio, bulk=bulk, end_channel=end)
            c.queue.append(_Msg(data, prio, bulk, end))
            c.pushed.append(data)
            c.closed = end
        elif kind == "urgent":
            self.seq += 1
            frame = fr.encode_frame(FrameType.PING, 0, 0, blob(self.seq, op[1]))
            self.sched.push_urgent(frame)
            self.urgent.append(frame)
        elif kind == "grant":
            c = self.chans[CIDS[op[1]]]
            self.sched.grant(c.ch, op[2])
            c.window += op[2]
        elif kind == "prio":
            c = self.chans[CIDS[op[1]]]
            self.sched.set_priority(c.ch, op[2])
            for m in c.queue:
                m.priority = op[2]
        elif kind == "drop":
            c = self.chans[CIDS[op[1]]]
            self.sched.drop(c.ch)
            c.queue.clear()
            c.closed = c.dropped = True
        else:
            for _ in range(op[2]):
                self.next(op[1])
        self.check_invariants()

    def next(self, room: int) -> None:
        expected_level = self.expected_level()
        f = take(self.sched, room)
        if f is None:
            if self.urgent:
                assert len(self.urgent[0]) > room
            elif room >= FULL_FRAME:
                assert expected_level is None, "data ready but nothing sent in a fresh message"
            return
        if f.urgent:
            assert self.urgent, "urgent frame out of nowhere"
            assert HDR + len(f.payload) == len(self.urgent[0])
            assert FRAME_HEADER.pack(f.ftype, f.flags, f.channel, len(f.payload)) + f.payload == (
                self.urgent.popleft()
            )
            return
        assert not self.urgent, "DATA frame sent ahead of an urgent frame"
        c = self.chans[f.channel]
        assert c.ready(), "frame from a channel without credit or data"
        head = c.queue[0]
        assert head.priority == f.priority == expected_level
        n = len(f.payload)
        left = len(head.data) - head.sent
        assert f.payload == head.data[head.sent : head.sent + n]
        assert n <= c.window
        assert n > 0 or left == 0, "empty frame in the middle of a message"
        if n < left:  # split only where a frame or the credit ends, never to fill a small room
            assert n == min(MFP, c.window)
        assert f.bulk == head.bulk
        assert f.end_message == (n == left)
        assert f.end_channel == (n == left and head.end)
        for lv in self.ready_levels():
            if lv > f.priority:
                self.starved[lv] += HDR + n
        self.starved[f.priority] = 0
        head.sent += n
        c.window -= n
        if head.sent == len(head.data):
            c.delivered.append(c.queue.popleft().data)

    def check_invariants(self) -> None:
        for c in self.chans.values():
            assert c.ch.window == c.window >= 0
            assert c.ch.queued_bytes == c.remaining()
        assert self.sched.queued_bytes == sum(c.remaining() for c in self.chans.values()) + sum(
            len(u) for u in self.urgent
        )
        assert self.sched.has_sendable() == (bool(self.urgent) or bool(self.ready_levels()))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(WINDOWS, min_size=len(CIDS), max_size=len(CIDS)),
    st.lists(OPS, min_size=5, max_size=80),
)
def test_random_operations_keep_every_promise(
    windows: list[int], ops: list[tuple[Any, ...]]
) -> None:
    sched = SendScheduler()
    model = _Model(sched, windows)
    for op in ops:
        model.apply(op)
    # Everything still queued gets out once there is credit: nothing is lost or stuck.
    for i in range(len(CIDS)):
        model.apply(("grant", i, BIG_WINDOW))
    for _ in range(10_000):
        if not sched.has_sendable():
            break
        model.apply(("next", ROOM, 1))
    assert sched.queued_bytes == 0 and not model.urgent
    for c in model.chans.values():
        assert not c.queue
        if c.dropped:
            assert c.delivered == c.pushed[: len(c.delivered)]
        else:
            assert c.delivered == c.pushed  # bytes out equal bytes in, order preserved
