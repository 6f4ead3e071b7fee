"""The streaming engine: fills one file's :class:`ChunkBuffer` from the cache or the sources.

For each file the player needs, a :class:`FileStream`:

1. takes it whole from the cache if it is there (no network at all);
2. otherwise gets the signed manifest, checks it, and asks the sources for chunks: the
   first piece (about 15 s of audio) and the last chunks at once (libvorbisfile reads the
   end of the file when it opens it), then stays about 15 s ahead of the playhead;
   whatever the decoder is blocked on (a seek) goes first;
3. verifies every chunk against the manifest: a bad chunk is dropped, counted and fetched
   again, never written to the buffer (so never played);
4. once the file is complete, hands it to the cache.

Sources sit behind :class:`ChunkSource`, so peers join later without changing this.
Cancelling the stream (a track change) cancels every request in flight.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from cadenza import net
from cadenza.cache.store import Cache, NotCached
from cadenza.protocol import api
from cadenza.protocol.manifest import ChunkError, Manifest, ManifestVerifier
from cadenza.protocol.messages import Message, Priority
from cadenza.session.client import Session

from .buffer import CHUNK_SIZE, ChunkBuffer

log = logging.getLogger("cadenza.stream")

# Chunks in one request: 1 MiB, about 25 s of 320 kbps audio; small enough to re-plan often.
MAX_RANGE = 64
# The chunks at the end of the file libvorbisfile reads when it opens a seekable stream.
TAIL_CHUNKS = 2
# How often the window is re-planned when nothing else wakes the loop.
REPLAN_INTERVAL = 0.25
# Wait between attempts when a source fails (the session itself reconnects).
RETRY_DELAY = 1.0


class ChunkSource(Protocol):
    name: str

    def fetch(
        self, file_id: str, first: int, count: int, priority: int
    ) -> AsyncIterator[tuple[int, memoryview | bytes]]: ...


class ServiceSource:
    """Chunks from the access point (GetChunks on a channel at the request's priority)."""

    name = "service"

    def __init__(self, session: Session, timeout: float = 10.0) -> None:
        self.session = session
        self.timeout = timeout

    async def fetch(
        self, file_id: str, first: int, count: int, priority: int
    ) -> AsyncIterator[tuple[int, memoryview | bytes]]:
        async with self.session.open_channel(priority, timeout=self.timeout) as ch:
            await ch.send(api.GetChunks(file_id, first, count), end=True)
            async for item in ch:
                if isinstance(item, net.Bulk):
                    yield item.index, item.data
                elif isinstance(item, Message):
                    raise net.RequestFailed(
                        getattr(item, "code", "error"), getattr(item, "message", "")
                    )


@dataclass(frozen=True)
class FileChoice:
    file_id: str
    size: int
    bitrate: int
    duration_ms: int


def choose_file(track: dict[str, Any], bitrate: int) -> FileChoice:
    """The track's file at ``bitrate``, else the nearest one below it, else the smallest."""
    files = sorted(track.get("files", ()), key=lambda f: f["bitrate"])
    if not files:
        raise LookupError(f"track {track.get('uri')} has no audio files")
    below = [f for f in files if f["bitrate"] <= bitrate]
    f = below[-1] if below else files[0]
    return FileChoice(f["file_id"], f["size"], f["bitrate"], int(track.get("duration_ms", 0)))


def plan_range(
    buffer: ChunkBuffer,
    *,
    playhead_chunk: int,
    window_chunks: int,
    first_piece_chunks: int,
    in_flight: set[int],
) -> tuple[int, int] | None:
    """Pure: the next range of chunks to request, most urgent first, or None.

    Order: what the decoder waits for; the tail (for libvorbisfile's open); then the
    first missing chunk in ``[playhead, playhead + window)`` (at least the first piece).
    """
    n = buffer.num_chunks
    wanted = buffer.wanted
    if wanted is not None and not buffer.has_chunk(wanted) and wanted not in in_flight:
        return _run(buffer, wanted, n, in_flight)
    for index in range(max(0, n - TAIL_CHUNKS), n):
        if not buffer.has_chunk(index) and index not in in_flight:
            return _run(buffer, index, n, in_flight)
    end = min(n, max(first_piece_chunks, playhead_chunk + window_chunks))
    for index in buffer.missing(buffer.contiguous_chunks, end):
        if index not in in_flight:
            return _run(buffer, index, end, in_flight)
    return None


def _run(buffer: ChunkBuffer, start: int, end: int, in_flight: set[int]) -> tuple[int, int]:
    count = 1
    while (
        start + count < end
        and count < MAX_RANGE
        and not buffer.has_chunk(start + count)
        and (start + count) not in in_flight
    ):
        count += 1
    return start, count


@dataclass
class StreamStats:
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    bad_chunks: int = 0
    from_cache: bool = False

    def add(self, source: str, n: int) -> None:
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + n


class FileStream:
    """Streams one file into a ChunkBuffer; run it with ``await nursery.start(stream.run)``."""

    def __init__(
        self,
        choice: FileChoice,
        *,
        session: Session,
        cache: Cache | None,
        verifier: Callable[[], ManifestVerifier],
        sources: list[ChunkSource],
        priority: int = Priority.PLAYING,
        position_ms: Callable[[], int] = lambda: 0,
        first_piece_s: float = 15.0,
        ahead_s: float = 15.0,
        on_stats: Callable[[str, int], None] | None = None,
        on_bad_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.choice = choice
        self.session = session
        self.cache = cache
        self._verifier = verifier
        self.sources = sources
        self.priority = priority
        self._position_ms = position_ms
        self.first_piece_s = first_piece_s
        self.ahead_s = ahead_s
        self.stats = StreamStats()
        self._on_stats = on_stats
        self._on_bad_chunk = on_bad_chunk
        self.buffer: ChunkBuffer | None = None
        self.manifest: Manifest | None = None
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self.done = trio.Event()
        # Until playback starts the playhead is where it will start (a #m:ss link, a seek).
        self.start_ms: int | None = None

    @property
    def bytes_per_second(self) -> float:
        c = self.choice
        return c.size / (c.duration_ms / 1000) if c.duration_ms > 0 else c.bitrate * 125

    def playing(self) -> None:
        """Playback has started: follow the player's position from now on."""
        self.start_ms = None
        self._wake.set()

    def set_priority(self, priority: int) -> None:
        self.priority = priority
        self._wake.set()

    async def run(
        self, *, task_status: trio.TaskStatus[ChunkBuffer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        choice = self.choice
        try:
            if self.cache is not None and await trio.to_thread.run_sync(
                self.cache.has, choice.file_id
            ):
                try:
                    # Verified against its id on the way out: a damaged file is removed, not played.
                    data: bytes | None = await trio.to_thread.run_sync(
                        self.cache.open, choice.file_id
                    )
                except NotCached as exc:
                    log.warning("cached %s unusable (%s); streaming it", choice.file_id[:12], exc)
                    data = None
                if data is not None:
                    buffer = ChunkBuffer(len(data))
                    for i in range(buffer.num_chunks):
                        buffer.write_chunk(i, data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
                    self.buffer = buffer
                    self.stats.from_cache = True
                    self._count("cache", len(data))
                    task_status.started(buffer)
                    return
            self.manifest = await self._get_manifest()
            buffer = ChunkBuffer(self.manifest.size, on_wanted=self._wanted_from_thread)
            self.buffer = buffer
            task_status.started(buffer)
            await self._fill(buffer, self.manifest)
            if self.cache is not None:
                ok = await trio.to_thread.run_sync(
                    self.cache.put, choice.file_id, self.manifest, buffer.getvalue()
                )
                if not ok:
                    log.warning("could not cache %s (see the cache's log)", choice.file_id)
        finally:
            self.done.set()

    async def _get_manifest(self) -> Manifest:
        while True:
            try:
                reply = await self.session.request(api.GetManifest(self.choice.file_id), timeout=15)
                if not isinstance(reply, api.ManifestReply):
                    raise net.RequestFailed("bad-reply", type(reply).__name__)
                return self._verifier().verify(reply.manifest, file_id=self.choice.file_id)
            except (net.NetError, trio.TooSlowError) as exc:
                log.info("manifest of %s: %s; retrying", self.choice.file_id[:12], exc)
                await trio.sleep(RETRY_DELAY)

    def _wanted_from_thread(self, index: int) -> None:
        # Called on the decoder's thread, inside the buffer's lock, when a read blocks: only
        # schedule the wake-up (never wait for trio here, or a chunk write would deadlock).
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._wake.set)

    async def _fill(self, buffer: ChunkBuffer, manifest: Manifest) -> None:
        in_flight: set[int] = set()
        bps = self.bytes_per_second
        window = max(1, math.ceil(self.ahead_s * bps / CHUNK_SIZE))
        first_piece = max(1, math.ceil(self.first_piece_s * bps / CHUNK_SIZE))
        async with trio.open_nursery() as nursery:
            while not buffer.complete:
                position = self._position_ms() if self.start_ms is None else self.start_ms
                playhead = int(position / 1000 * bps) // CHUNK_SIZE
                plan = plan_range(
                    buffer,
                    playhead_chunk=playhead,
                    window_chunks=window,
                    first_piece_chunks=first_piece,
                    in_flight=in_flight,
                )
                if plan is not None and len(in_flight) < 2 * MAX_RANGE:
                    first, count = plan
                    in_flight.update(range(first, first + count))
                    nursery.start_soon(self._fetch, buffer, manifest, first, count, in_flight)
                    continue
                with trio.move_on_after(REPLAN_INTERVAL):
                    await self._wake.wait()
                self._wake = trio.Event()
            nursery.cancel_scope.cancel()

    async def _fetch(
        self, buffer: ChunkBuffer, manifest: Manifest, first: int, count: int, in_flight: set[int]
    ) -> None:
        pending = set(range(first, first + count))
        try:
            for source in self.sources:
                try:
                    async for index, data in source.fetch(
                        self.choice.file_id, first, count, self.priority
                    ):
                        if index not in pending:
                            continue
                        try:
                            manifest.verify_chunk(index, data)
                        except ChunkError as exc:
                            self.stats.bad_chunks += 1
                            if self._on_bad_chunk is not None:
                                self._on_bad_chunk()
                            log.warning(
                                "bad chunk %d of %s from %s: %s",
                                index,
                                self.choice.file_id[:12],
                                source.name,
                                exc,
                            )
                            continue  # left missing: planned again, fetched again
                        buffer.write_chunk(index, data)
                        pending.discard(index)
                        in_flight.discard(index)
                        self._count(source.name, len(data))
                    if not pending:
                        return
                except (net.NetError, trio.TooSlowError) as exc:
                    log.info("chunks %d+%d from %s: %s", first, count, source.name, exc)
            await trio.sleep(RETRY_DELAY)
        finally:
            in_flight.difference_update(pending)
            self._wake.set()

    def _count(self, source: str, n: int) -> None:
        self.stats.add(source, n)
        if self._on_stats is not None:
            self._on_stats(source, n)
