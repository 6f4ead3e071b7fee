"""Chunk scheduling decisions of the downloader (stream/schedule.py)."""

from __future__ import annotations

import pytest

from cadenza.stream.buffer import CHUNK_SIZE
from cadenza.stream.peers import PeerStats
from cadenza.stream.schedule import (
    PEER_PIPELINE,
    PEER_RUN,
    SERVICE,
    Request,
    Want,
    plan,
    slow_peers,
)

N = 100
BPS = 20_000.0  # 160 kbps: a chunk is about 0.8 s of audio


def want(have: set[int] = frozenset(), wanted: int | None = None) -> Want:  # type: ignore[assignment]
    contiguous = 0
    while contiguous in have:
        contiguous += 1
    return Want(N, lambda i: i in have, contiguous, wanted, N * CHUNK_SIZE)


def decide(
    w: Want, peers: list[PeerStats] | None = None, in_flight: set[int] | None = None, **kw: int
) -> Request | None:
    return plan(
        w,
        playhead_chunk=kw.get("playhead", 0),
        window_chunks=kw.get("window", 20),
        first_piece_chunks=kw.get("first_piece", 20),
        in_flight=in_flight or set(),
        peers=peers or [],
        bytes_per_second=BPS,
        now=100.0,
    )


def fast(name: bytes, rate: float = 1e6) -> PeerStats:
    return PeerStats(name, rate=rate, last_progress=100.0)


def test_without_peers_the_tail_then_the_first_piece_go_to_the_service() -> None:
    assert decide(want()) == Request(SERVICE, N - 2, 2)
    tail = {N - 2, N - 1}
    assert decide(want(tail)) == Request(SERVICE, 0, 20)
    # Nothing beyond the window is asked of the service, however idle it is.
    assert decide(want(tail | set(range(20)))) is None
    assert decide(want(tail), in_flight=set(range(20))) is None


def test_the_decoders_blocked_chunk_goes_first() -> None:
    assert decide(want(wanted=57)) == Request(SERVICE, 57, 20)  # a window's worth


def test_a_fast_peer_takes_the_urgent_window_and_the_rest_of_the_file() -> None:
    tail = {N - 2, N - 1}
    peer = fast(b"a")
    # The chunk at the playhead is needed now: only the service is sure to be in time.
    assert decide(want(tail), [peer]) == Request(SERVICE, 0, 20)
    # A few seconds ahead, the peer is in time.
    assert decide(want(tail | set(range(5))), [peer]) == Request(b"a", 5, PEER_RUN)
    # Beyond the window too: peers fetch the whole file.
    have = tail | set(range(40))
    assert decide(want(have), [peer], playhead=5) == Request(b"a", 40, PEER_RUN)


def test_a_peer_too_slow_for_an_urgent_chunk_leaves_it_to_the_service() -> None:
    tail = {N - 2, N - 1}
    slow = PeerStats(b"s", rate=100.0, last_progress=100.0)  # 100 B/s: 160 s per chunk
    assert decide(want(tail), [slow]) == Request(SERVICE, 0, 20)
    # Beyond the window it is still the only peer, so it gets the rest.
    have = tail | set(range(20))
    assert decide(want(have), [slow]) == Request(b"s", 20, PEER_RUN)


def test_the_best_peer_gets_the_chunk_and_full_pipelines_wait() -> None:
    have = {N - 2, N - 1} | set(range(20))
    a, b = fast(b"a", 1e6), fast(b"b", 2e6)
    assert decide(want(have), [a, b]).source == b"b"  # type: ignore[union-attr]
    b.request(20 * CHUNK_SIZE, PEER_PIPELINE, 100.0)
    assert decide(want(have), [a, b], in_flight=set(range(20, 36))) == Request(b"a", 36, PEER_RUN)
    a.request(36 * CHUNK_SIZE, PEER_PIPELINE, 100.0)
    assert decide(want(have), [a, b], in_flight=set(range(20, 52))) is None


def test_in_flight_chunks_are_not_asked_twice() -> None:
    tail = {N - 2, N - 1}
    assert decide(want(tail), in_flight={0, 1, 2}) == Request(SERVICE, 3, 17)
    r = decide(want(tail | {0, 1}), [fast(b"a")], in_flight={5})
    assert r == Request(b"a", 2, 3)


def test_a_stalled_peer_with_data_needed_soon_is_slow_and_a_fast_one_is_not() -> None:
    stalled = PeerStats(b"x", rate=1e6, last_progress=90.0)
    stalled.pending.append([5 * CHUNK_SIZE, 8 * CHUNK_SIZE])  # needed in 4 s, silent for 10 s
    ok = PeerStats(b"y", rate=1e6, last_progress=100.0)
    ok.pending.append([5 * CHUNK_SIZE, 8 * CHUNK_SIZE])
    far = PeerStats(b"z", rate=1e6, last_progress=98.0)
    far.pending.append([90 * CHUNK_SIZE, 8 * CHUNK_SIZE])  # needed in a minute: time to catch up
    assert slow_peers([stalled, ok, far], playhead_bytes=0, bytes_per_second=BPS, now=100.0) == [
        b"x"
    ]


def test_after_the_first_piece_the_service_tops_up_in_runs_not_chunk_by_chunk() -> None:
    from cadenza.stream.schedule import SERVICE_TOPUP, next_service_topup

    have = {N - 2, N - 1} | set(range(25))  # first piece (20) and 5 more
    # Playhead at 6: the window reaches 26; chunk 25 is missing, but a top-up waits for more
    # than SERVICE_TOPUP missing chunks.
    assert decide(want(have), playhead=6) is None
    due = next_service_topup(
        want(have),
        playhead_bytes=6 * CHUNK_SIZE,
        window_chunks=20,
        first_piece_chunks=20,
        in_flight=set(),
        bytes_per_second=BPS,
    )
    # Due when playhead + window - SERVICE_TOPUP passes chunk 25: playhead 14.
    assert due == pytest.approx((25 - 20 + SERVICE_TOPUP + 1 - 6) * CHUNK_SIZE / BPS)
    assert decide(want(have), playhead=13) is None
    assert decide(want(have), playhead=14) == Request(SERVICE, 25, SERVICE_TOPUP + 1)
    # The decoder's blocked read is never deferred.
    assert decide(want(have, wanted=30), playhead=6) == Request(SERVICE, 30, 20)
