"""Peer ranking and re-request decisions for the downloader (DESIGN.md, "Streaming a track").

Peers are ranked by the time they are expected to take to deliver a chunk: the bytes already
asked of them plus the chunk, over their recent rate. The most urgent chunk goes to the best
peer; :func:`catch_up` says whether a peer's outstanding data will arrive before playback needs
it, so a slow peer's requests can be sent elsewhere (or to the service, once urgent).

Pure: no I/O, no clock; every call takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .buffer import CHUNK_SIZE

PeerId = bytes

# Rate assumed for a peer never measured: 64 KiB/s, about 1.6 times a 320 kbps stream, a modest
# share of a home uplink; good enough to try a new peer, below any peer known to be good.
PRIOR_RATE = 64 * 1024.0
# Weight of the newest sample in the rate's EWMA: the last 3 or 4 chunks dominate, so a peer that
# slows down is noticed within about a second of streaming.
RATE_ALPHA = 0.3
# Samples closer together than this are treated as this far apart (timer resolution, batching).
MIN_INTERVAL_S = 0.001
# Floor of any rate, so expected times stay finite.
MIN_RATE = 1.0
# Re-request a peer's data elsewhere once it is expected to arrive less than this before it is
# needed: covers the decoder's read-ahead and the time to ask another source.
CATCH_UP_MARGIN_S = 1.0


@dataclass
class PeerStats:
    """What the downloader knows of one peer: its pending requests and recent rate.

    Requests are served in order (one stream per peer), so data received is taken from the
    front of ``pending``.
    """

    peer_id: PeerId
    rate: float | None = None  # bytes/s, EWMA of measured samples; None: never measured
    pending: deque[list[int]] = field(default_factory=deque)  # [offset, nbytes left], in order
    last_progress: float = 0.0

    @property
    def outstanding(self) -> int:
        return sum(n for _, n in self.pending)

    def request(self, offset: int, nbytes: int, now: float) -> None:
        """We asked the peer for ``nbytes`` at byte ``offset`` of the file."""
        if nbytes <= 0:
            return
        if not self.pending:
            self.last_progress = now  # the clock for the next sample starts now
        self.pending.append([offset, nbytes])

    def received(self, nbytes: int, now: float) -> None:
        """``nbytes`` arrived (a chunk, in order); updates the rate."""
        if nbytes <= 0 or not self.pending:
            return
        sample = nbytes / max(now - self.last_progress, MIN_INTERVAL_S)
        self.rate = (
            sample if self.rate is None else (1 - RATE_ALPHA) * self.rate + RATE_ALPHA * sample
        )
        self.last_progress = now
        left = nbytes
        while left > 0 and self.pending:
            head = self.pending[0]
            take = min(left, head[1])
            head[0] += take
            head[1] -= take
            left -= take
            if head[1] == 0:
                self.pending.popleft()

    def cancel(self, offset: int | None = None) -> int:
        """Cancel the request starting at byte ``offset`` (all if None); returns bytes dropped."""
        if offset is None:
            dropped = self.outstanding
            self.pending.clear()
            return dropped
        for item in list(self.pending):
            if item[0] == offset:
                self.pending.remove(item)
                return item[1]
        return 0

    def rate_at(self, now: float) -> float:
        """The rate to plan with: the EWMA (or the prior), lowered while the peer is stalled.

        With data outstanding and nothing received for ``s`` seconds, the peer is delivering at
        most a chunk per ``s`` seconds, so a stalled peer's expected times grow as it stays silent.
        """
        rate = PRIOR_RATE if self.rate is None else self.rate
        stalled = now - self.last_progress
        if self.pending and stalled > 0:
            rate = min(rate, CHUNK_SIZE / stalled)
        return max(rate, MIN_RATE)


def expected_delivery_time(peer: PeerStats, nbytes: int, now: float) -> float:
    """Seconds until ``nbytes`` asked of ``peer`` now would have arrived."""
    return (peer.outstanding + nbytes) / peer.rate_at(now)


def rank(peers: Iterable[PeerStats], now: float, nbytes: int = CHUNK_SIZE) -> list[PeerStats]:
    """Peers best first: lowest expected time to deliver ``nbytes`` (ties by peer id)."""
    return sorted(peers, key=lambda p: (expected_delivery_time(p, nbytes, now), p.peer_id))


@dataclass(frozen=True)
class ChunkNeed:
    """A chunk to fetch: its index, size, and when playback needs it (None: no deadline)."""

    index: int
    nbytes: int = CHUNK_SIZE
    needed_at: float | None = None


def choose(peers: Iterable[PeerStats], chunk: ChunkNeed, now: float) -> PeerStats | None:
    """The best peer for ``chunk``, or None if there is none or none can deliver it in time
    (then it goes to the service)."""
    ranked = rank(peers, now, chunk.nbytes)
    if not ranked:
        return None
    best = ranked[0]
    late = chunk.needed_at is not None and (
        now + expected_delivery_time(best, chunk.nbytes, now) > chunk.needed_at
    )
    return None if late else best


def catch_up(peer: PeerStats, playhead_bytes: int, bytes_per_second: float, now: float) -> float:
    """Slack in seconds of the peer's outstanding data: how long before playback needs it each
    chunk is expected to arrive, at worst. Negative: playback will get there first. ``inf`` with
    nothing outstanding.

    Data before the playhead is needed now; the rest when the playhead reaches it at
    ``bytes_per_second``. Delivery is in order at :meth:`PeerStats.rate_at`.
    """
    if bytes_per_second <= 0:
        raise ValueError("bytes_per_second must be positive")
    rate = peer.rate_at(now)
    slack = float("inf")
    delivered = 0
    for offset, nbytes in peer.pending:
        pos, end = offset, offset + nbytes
        while pos < end:
            step = min(CHUNK_SIZE - pos % CHUNK_SIZE, end - pos)
            delivered += step
            needed_in = max(0, pos - playhead_bytes) / bytes_per_second
            slack = min(slack, needed_in - delivered / rate)
            pos += step
    return slack


def falling_behind(
    peer: PeerStats,
    playhead_bytes: int,
    bytes_per_second: float,
    now: float,
    margin: float = CATCH_UP_MARGIN_S,
) -> bool:
    """True if the peer's outstanding data should be re-requested elsewhere."""
    return catch_up(peer, playhead_bytes, bytes_per_second, now) < margin
