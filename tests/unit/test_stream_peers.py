"""Peer ranking for the downloader: expected delivery time, choice, the catch-up estimate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.stream.buffer import CHUNK_SIZE
from cadenza.stream.peers import (
    CATCH_UP_MARGIN_S,
    PRIOR_RATE,
    ChunkNeed,
    PeerStats,
    catch_up,
    choose,
    expected_delivery_time,
    falling_behind,
    rank,
)

KiB = 1024
BPS = 40_000.0  # 320 kbps


def peer(name: bytes, rate: float | None = None, outstanding: int = 0, now: float = 0) -> PeerStats:
    p = PeerStats(name, rate=rate)
    if outstanding:
        p.request(0, outstanding, now)
    return p


def test_new_peer_uses_prior_rate() -> None:
    p = peer(b"a")
    assert expected_delivery_time(p, CHUNK_SIZE, 0) == pytest.approx(CHUNK_SIZE / PRIOR_RATE)


def test_expected_time_counts_outstanding_bytes() -> None:
    p = peer(b"a", rate=100 * KiB, outstanding=300 * KiB)
    assert expected_delivery_time(p, 100 * KiB, 0) == pytest.approx(4.0)


def test_rate_is_ewma_of_arrivals() -> None:
    p = PeerStats(b"a")
    p.request(0, 4 * CHUNK_SIZE, now=0)
    p.received(CHUNK_SIZE, now=0.1)  # 160 KiB/s
    assert p.rate == pytest.approx(CHUNK_SIZE / 0.1)
    p.received(CHUNK_SIZE, now=0.6)  # 32 KiB/s
    assert p.rate is not None and CHUNK_SIZE / 0.5 < p.rate < CHUNK_SIZE / 0.1
    assert p.outstanding == 2 * CHUNK_SIZE
    assert p.pending[0][0] == 2 * CHUNK_SIZE  # in order: the next byte expected


def test_idle_time_is_not_a_slow_sample() -> None:
    p = PeerStats(b"a")
    p.request(0, CHUNK_SIZE, now=0)
    p.received(CHUNK_SIZE, now=0.1)
    p.request(CHUNK_SIZE, CHUNK_SIZE, now=100)  # idle for 100 s, then asked again
    p.received(CHUNK_SIZE, now=100.1)
    assert p.rate == pytest.approx(CHUNK_SIZE / 0.1)


def test_stalled_peer_expected_time_grows() -> None:
    p = PeerStats(b"a", rate=1000 * KiB)
    p.request(0, CHUNK_SIZE, now=0)
    t1 = expected_delivery_time(p, CHUNK_SIZE, 0.01)
    t2 = expected_delivery_time(p, CHUNK_SIZE, 2.0)
    t3 = expected_delivery_time(p, CHUNK_SIZE, 5.0)
    assert t1 < t2 < t3
    # An idle peer is not "stalled".
    q = PeerStats(b"b", rate=1000 * KiB)
    assert expected_delivery_time(q, CHUNK_SIZE, 50) == pytest.approx(CHUNK_SIZE / (1000 * KiB))


def test_cancel() -> None:
    p = PeerStats(b"a")
    p.request(0, 2 * CHUNK_SIZE, 0)
    p.request(5 * CHUNK_SIZE, CHUNK_SIZE, 0)
    assert p.cancel(5 * CHUNK_SIZE) == CHUNK_SIZE
    assert p.cancel(123) == 0
    assert p.cancel() == 2 * CHUNK_SIZE
    assert p.outstanding == 0


def test_rank_prefers_lowest_expected_time() -> None:
    fast_busy = peer(b"fast", rate=500 * KiB, outstanding=2000 * KiB)  # ~4 s
    slow_idle = peer(b"slow", rate=50 * KiB)  # ~0.3 s
    new = peer(b"new")  # prior: 0.25 s
    assert [p.peer_id for p in rank([fast_busy, slow_idle, new], now=0)] == [
        b"new",
        b"slow",
        b"fast",
    ]


def test_choose_best_peer_or_none_when_too_late() -> None:
    a = peer(b"a", rate=100 * KiB, outstanding=100 * KiB)  # chunk in 1.16 s
    b = peer(b"b", rate=20 * KiB)  # chunk in 0.8 s
    assert choose([], ChunkNeed(0), 0) is None
    assert choose([a, b], ChunkNeed(0), 0) is b
    assert choose([a, b], ChunkNeed(0, needed_at=1.0), 0) is b
    # Needed sooner than any peer can deliver: None, so it goes to the service.
    assert choose([a, b], ChunkNeed(0, needed_at=0.5), 0) is None


def test_catch_up_nothing_outstanding() -> None:
    assert catch_up(peer(b"a"), 0, BPS, 0) == math.inf


def test_catch_up_flags_slow_peer_at_the_right_moment() -> None:
    """A peer at 30 KB/s streaming a 40 KB/s track: it falls behind as playback closes in."""
    p = PeerStats(b"a", rate=30_000.0)
    # Ten chunks ~25 s ahead of the playhead: the last one is delivered after ~5.5 s.
    start = 61 * CHUNK_SIZE  # about 1 MB, chunk-aligned
    p.request(start, 10 * CHUNK_SIZE, now=0)
    slack0 = catch_up(p, playhead_bytes=0, bytes_per_second=BPS, now=0)
    assert slack0 > CATCH_UP_MARGIN_S and not falling_behind(p, 0, BPS, 0)
    # Expected slack at playhead x: worst chunk k of 10: (start + k*C - x)/BPS - (k+1)*C/rate,
    # the last chunk (rate < BPS): (start + 9C - x)/BPS - 10C/30000.
    c = CHUNK_SIZE
    for x in (0, 300_000, 600_000, 900_000):
        expected = (start + 9 * c - x) / BPS - 10 * c / 30_000.0
        assert catch_up(p, x, BPS, 0) == pytest.approx(expected)
    # The switch happens where that slack reaches the margin.
    x_flag = start + 9 * c - BPS * (10 * c / 30_000.0 + CATCH_UP_MARGIN_S)
    assert not falling_behind(p, int(x_flag) - 100, BPS, 0)
    assert falling_behind(p, int(x_flag) + 100, BPS, 0)


def test_catch_up_fast_peer_worst_chunk_is_first() -> None:
    p = PeerStats(b"a", rate=400_000.0)
    p.request(CHUNK_SIZE, 4 * CHUNK_SIZE, now=0)
    # Playhead at the requested data already: needed now, the first chunk decides.
    assert catch_up(p, CHUNK_SIZE, BPS, 0) == pytest.approx(-CHUNK_SIZE / 400_000.0)
    # Data behind the playhead counts as needed now.
    assert catch_up(p, 10 * CHUNK_SIZE, BPS, 0) == pytest.approx(-4 * CHUNK_SIZE / 400_000.0)


def test_catch_up_stall_turns_into_falling_behind() -> None:
    p = PeerStats(b"a", rate=200_000.0)
    p.request(20 * CHUNK_SIZE, 4 * CHUNK_SIZE, now=0)
    assert not falling_behind(p, 0, BPS, now=0.05)
    # Silent for 4 s: the estimated rate drops to 4 KiB/s, it can no longer make it.
    assert falling_behind(p, 0, BPS, now=4.0)


def test_catch_up_rejects_bad_bitrate() -> None:
    with pytest.raises(ValueError):
        catch_up(peer(b"a"), 0, 0, 0)


rates = st.one_of(st.none(), st.floats(1, 10_000_000))
sizes = st.integers(0, 4_000_000)


@given(st.lists(st.tuples(rates, sizes), min_size=1, max_size=8), st.floats(0, 10))
def test_rank_orders_by_expected_time(specs: list[tuple[float | None, int]], now: float) -> None:
    peers = [peer(bytes([i]), r, n) for i, (r, n) in enumerate(specs)]
    ranked = rank(peers, now)
    times = [expected_delivery_time(p, CHUNK_SIZE, now) for p in ranked]
    assert times == sorted(times)
    best = choose(peers, ChunkNeed(0), now)
    assert best is not None and expected_delivery_time(best, CHUNK_SIZE, now) == min(times)


@given(
    st.floats(1_000, 1_000_000),
    st.integers(0, 5_000_000),
    st.integers(1, 64),
    st.integers(0, 5_000_000),
    st.integers(0, 5_000_000),
)
def test_catch_up_monotone_in_playhead(
    rate: float, offset: int, chunks: int, x1: int, x2: int
) -> None:
    """The further playback has got, the less slack (never more)."""
    p = PeerStats(b"a", rate=rate)
    p.request(offset, chunks * CHUNK_SIZE, now=0)
    lo, hi = sorted((x1, x2))
    assert catch_up(p, hi, BPS, 0) <= catch_up(p, lo, BPS, 0) + 1e-9
