"""Which source gets which chunks next (DESIGN.md, "Streaming a track").

Decisions of the downloader, pure (no I/O; time is passed in):

* The decoder's blocked read and the file's tail (libvorbisfile reads it at open) are needed
  *now*: they go to the service, which answers fastest and surely.
* Chunks inside the urgent window (the first piece, then ``window`` chunks ahead of the
  playhead) go to the best peer if it is expected to deliver them before playback needs them
  (:func:`~cadenza.stream.peers.choose`), else to the service. So the service stays about
  15 s ahead of playback and no further; after the first piece it is asked in top-ups of
  :data:`SERVICE_TOPUP` chunks or more (:func:`next_service_topup` says when one is due).
* Beyond the window, chunks go only to peers, in order, to the end of the file (so the whole
  file can be cached and served on), in runs of :data:`PEER_RUN` chunks, keeping at most
  :data:`PEER_PIPELINE` bytes outstanding per peer.
* A peer whose outstanding data is not expected to arrive in time (:func:`slow_peers`) has its
  requests cancelled; the caller then plans again, which sends the urgent chunks to the service
  and the rest to other peers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .buffer import CHUNK_SIZE
from .peers import ChunkNeed, PeerId, PeerStats, choose, falling_behind, rank

SERVICE = "service"
# Chunks asked of the service in one request: 1 MiB, about 25 s of 320 kbps; small enough to
# re-plan often.
SERVICE_RUN = 64
# Chunks asked of a peer in one request: 128 KiB, a few seconds of audio; short enough that a
# slow peer holds little, long enough that the request overhead is a fraction of a percent.
PEER_RUN = 8
# Bytes outstanding at one peer: two runs, so the next is queued while one streams (no idle
# round trip), and a peer that stalls holds back little.
PEER_PIPELINE = 2 * PEER_RUN * CHUNK_SIZE
# The file's last chunks: libvorbisfile reads them when it opens a seekable stream.
TAIL_CHUNKS = 2
# After the first piece, the service tops the urgent window up only once more than this many
# chunks (about 6.5 s of 160 kbps) are missing at its end: one request per top-up rather than
# one per chunk as the playhead moves, with the buffer kept between 8 and 15 s ahead.
SERVICE_TOPUP = 8


@dataclass(frozen=True)
class Want:
    """What the buffer lacks: ``have(i)``, ``num_chunks``, the decoder's blocked chunk."""

    num_chunks: int
    have: Callable[[int], bool]
    contiguous: int = 0
    wanted: int | None = None
    size: int = 0  # bytes, for the last chunk's length

    def chunk_bytes(self, index: int) -> int:
        if self.size <= 0:
            return CHUNK_SIZE
        return max(0, min(CHUNK_SIZE, self.size - index * CHUNK_SIZE))


@dataclass(frozen=True)
class Request:
    """Ask ``source`` (SERVICE or a peer id) for chunks ``first .. first + count - 1``."""

    source: str | PeerId
    first: int
    count: int


def plan(
    want: Want,
    *,
    playhead_chunk: int,
    window_chunks: int,
    first_piece_chunks: int,
    in_flight: Collection[int],
    peers: Sequence[PeerStats],
    bytes_per_second: float,
    now: float,
) -> Request | None:
    """The next request to make, most urgent first; None when nothing should be asked now.

    ``peers`` are the usable peers holding the file (connected, not excluded); their
    ``pending`` must include every request already made of them.
    """
    n = want.num_chunks

    def free(i: int) -> bool:
        return not want.have(i) and i not in in_flight

    # 1. Needed now: the decoder waits for it, or the tail for the decoder's open.
    if want.wanted is not None and 0 <= want.wanted < n and free(want.wanted):
        # A seek: the service, for a window's worth (peers take what follows, as usual).
        end = min(n, want.wanted + max(1, window_chunks))
        return Request(SERVICE, want.wanted, _run(free, want.wanted, end, SERVICE_RUN))
    for i in range(max(0, n - TAIL_CHUNKS), n):
        if free(i):
            return Request(SERVICE, i, _run(free, i, n, SERVICE_RUN))

    # 2. The urgent window: a peer if it will be in time, else the service.
    playhead_bytes = playhead_chunk * CHUNK_SIZE
    urgent_end = min(n, max(first_piece_chunks, playhead_chunk + window_chunks))
    for i in range(want.contiguous, urgent_end):
        if not free(i):
            continue
        needed_in = max(0.0, (i * CHUNK_SIZE - playhead_bytes) / bytes_per_second)
        need = ChunkNeed(i, want.chunk_bytes(i), needed_at=now + needed_in)
        best = choose([p for p in peers if p.outstanding < PEER_PIPELINE], need, now)
        if best is not None:
            return Request(best.peer_id, i, _run(free, i, n, PEER_RUN))
        if i >= first_piece_chunks and i >= playhead_chunk + window_chunks - SERVICE_TOPUP:
            break  # a top-up for later: what follows is further ahead still
        return Request(SERVICE, i, _run(free, i, urgent_end, SERVICE_RUN))

    # 3. The rest of the file, from peers only, in order.
    ready = [p for p in peers if p.outstanding < PEER_PIPELINE]
    if not ready:
        return None
    for i in range(max(want.contiguous, urgent_end), n):
        if free(i):
            best = rank(ready, now, want.chunk_bytes(i))[0]
            return Request(best.peer_id, i, _run(free, i, n, PEER_RUN))
    return None


def next_service_topup(
    want: Want,
    *,
    playhead_bytes: int,
    window_chunks: int,
    first_piece_chunks: int,
    in_flight: Collection[int],
    bytes_per_second: float,
) -> float | None:
    """Seconds of playback until :func:`plan` would top the urgent window up from the service
    (for a caller that has nothing to do meanwhile); None if the window will never need it."""
    n = want.num_chunks
    for i in range(max(want.contiguous, first_piece_chunks), n):
        if not want.have(i) and i not in in_flight:
            # Due once playhead_chunk + window - SERVICE_TOPUP passes i.
            due_bytes = (i - window_chunks + SERVICE_TOPUP + 1) * CHUNK_SIZE
            return max(0.0, (due_bytes - playhead_bytes) / bytes_per_second)
    return None


def slow_peers(
    peers: Sequence[PeerStats], *, playhead_bytes: int, bytes_per_second: float, now: float
) -> list[PeerId]:
    """Peers whose outstanding data will not arrive before playback needs it (re-request it)."""
    return [
        p.peer_id
        for p in peers
        if p.pending and falling_behind(p, playhead_bytes, bytes_per_second, now)
    ]


def _run(free: Callable[[int], bool], start: int, end: int, limit: int) -> int:
    count = 1
    while start + count < end and count < limit and free(start + count):
        count += 1
    return count
