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

from cadenza import blocking, net
from cadenza.cache.store import Cache, NotCached
from cadenza.errors import ApiErrorCode, Conflict
from cadenza.protocol import api
from cadenza.protocol.manifest import ChunkError, Manifest, ManifestVerifier
from cadenza.protocol.messages import Message, Priority
from cadenza.session.client import Session
from cadenza.system.config import DEFAULT_AHEAD_S, DEFAULT_FIRST_PIECE_S

from . import schedule
from .buffer import CHUNK_SIZE, ChunkBuffer
from .peers import PeerStats

log = logging.getLogger("cadenza.stream")

TAIL_CHUNKS = schedule.TAIL_CHUNKS
# Service requests in flight at once (each up to schedule.SERVICE_RUN chunks).
MAX_SERVICE = 2
# A peer that fell behind is not asked again for this long (it may have been briefly busy).
SLOW_COOLDOWN = 10.0
# A peer that refused (busy) or failed is not asked again for this long.
BUSY_COOLDOWN = 5.0
# Look for peers again after this long while fewer than two are usable.
REDISCOVER_S = 5.0
# ... doubling while searches find too few, up to this (a search floods two hops).
REDISCOVER_MAX_S = 60.0
# A stream with nothing to do looks again at least this often (a pause, a seek).
MAX_IDLE_WAIT = 5.0
# How often the window is re-planned when nothing else wakes the loop.
REPLAN_INTERVAL = 0.25
# Wait between attempts when a source fails (the session itself reconnects).
RETRY_DELAY = 1.0


class ChunkSource(Protocol):
    name: str

    def fetch(
        self, file_id: str, first: int, count: int, priority: int
    ) -> AsyncIterator[tuple[int, memoryview | bytes]]: ...


class _GetChunksSource:
    """A source that answers GetChunks on a channel; subclasses say where the channel opens."""

    name: str

    def _channel(self, priority: int) -> contextlib.AbstractAsyncContextManager[net.Channel]:
        raise NotImplementedError

    async def fetch(
        self, file_id: str, first: int, count: int, priority: int
    ) -> AsyncIterator[tuple[int, memoryview | bytes]]:
        async with self._channel(priority) as ch:
            await ch.send(api.GetChunks(file_id, first, count), end=True)
            async for item in ch:
                if isinstance(item, net.Bulk):
                    yield item.index, item.data
                elif isinstance(item, Message):
                    raise net.RequestFailed(
                        getattr(item, "code", "error"), getattr(item, "message", "")
                    )


class ServiceSource(_GetChunksSource):
    """Chunks from the access point (GetChunks on a channel at the request's priority)."""

    name = "service"

    def __init__(self, session: Session, timeout: float = 10.0) -> None:
        self.session = session
        self.timeout = timeout

    def _channel(self, priority: int) -> contextlib.AbstractAsyncContextManager[net.Channel]:
        return self.session.open_channel(priority, timeout=self.timeout)


class PeerSource(_GetChunksSource):
    """Chunks from a peer that holds the file whole (GetChunks on its connection)."""

    name = "peer"

    def __init__(self, link: Any) -> None:
        self.link = link

    def _channel(self, priority: int) -> contextlib.AbstractAsyncContextManager[net.Channel]:
        channel: contextlib.AbstractAsyncContextManager[net.Channel] = self.link.conn.open_channel(
            priority
        )
        return channel


class DownloadCredit(Protocol):
    """Where the engine credits a neighbour with what it sent us (the overlay's neighbour
    table, which keeps the useful ones): stated here so stream/ needs nothing from p2p/."""

    def record_download(self, peer_id: bytes, nbytes: int, now: float) -> None: ...


class PeerNetwork(Protocol):
    """What the engine needs of the overlay (:class:`cadenza.p2p.overlay.Overlay`)."""

    @property
    def neighbours(self) -> DownloadCredit: ...

    async def find(self, file_id: str, found: Callable[[Any, str], None]) -> None: ...

    def report(self, link: Any, reason: str, file_id: str = "") -> None: ...

    async def holdings_changed(self) -> None: ...

    def figures(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class _Request:
    source: str | bytes
    first: int
    count: int
    pending: set[int]
    scope: trio.CancelScope


def _forget_outstanding(stats: PeerStats, nbytes: int) -> None:
    """Drop ``nbytes`` from the end of a peer's outstanding requests (they will not come)."""
    while nbytes > 0 and stats.pending:
        tail = stats.pending[-1]
        take = min(nbytes, tail[1])
        tail[1] -= take
        nbytes -= take
        if tail[1] == 0:
            stats.pending.pop()


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
        raise Conflict(f"track {track.get('uri')} has no audio files")
    below = [f for f in files if f["bitrate"] <= bitrate]
    f = below[-1] if below else files[0]
    return FileChoice(f["file_id"], f["size"], f["bitrate"], int(track.get("duration_ms", 0)))


@dataclass
class StreamStats:
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    bad_chunks: int = 0
    duplicate_bytes: int = 0
    from_cache: bool = False
    # Which mechanisms found which peers (hex ids): tracker, search, lan.
    found_by: dict[str, set[str]] = field(default_factory=dict)

    def add(self, source: str, n: int) -> None:
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + n


class FileStream:
    """Streams one file into a ChunkBuffer; run it with ``await nursery.start(stream.run)``.

    Why one class of this length: the requests in flight, the sources, the peers' ranks
    and the buffer of one stream are shared by its tasks (the planner and one task a request);
    the decisions are apart and pure (:mod:`~cadenza.stream.schedule`,
    :mod:`~cadenza.stream.peers`, :mod:`~cadenza.protocol.scheduler`).
    """

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
        first_piece_s: float = DEFAULT_FIRST_PIECE_S,
        ahead_s: float = DEFAULT_AHEAD_S,
        on_stats: Callable[[str, int], None] | None = None,
        on_bad_chunk: Callable[[], None] | None = None,
        overlay: PeerNetwork | None = None,
        on_busy: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_busy(True)`` when the stream starts asking a source for chunks after asking
        nothing, ``on_busy(False)`` when its last request ends (a throughput measurement must
        not count the time in between, when nothing was asked, as a slow link)."""
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
        self._on_busy = on_busy
        self.buffer: ChunkBuffer | None = None
        self.manifest: Manifest | None = None
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self.overlay = overlay
        self._peers: dict[bytes, PeerStats] = {}
        self._links: dict[bytes, Any] = {}
        self._excluded_until: dict[bytes, float] = {}
        self._excluded_forever: set[bytes] = set()
        self._in_flight: dict[int, _Request] = {}
        self._requests: set[_Request] = set()
        self._service_requests = 0
        self.done = trio.Event()
        # Until playback starts the playhead is where it will start (a #m:ss link, a seek).
        self.start_ms: int | None = None
        # Where the playhead stood (and since when) while the fill loop had nothing to do;
        # None after a poke (the playhead may move from where it stood).
        self._idle_position: float | None = None
        self._idle_since = 0.0
        # Set while the fill loop rests (nothing is due until the playhead moves): peer
        # discovery waits on it too; set (and cleared) when the rest is over.
        self._resting: trio.Event | None = None

    @property
    def busy(self) -> bool:
        """A request is in flight (chunks are coming or about to)."""
        return bool(self._requests)

    @property
    def bytes_per_second(self) -> float:
        c = self.choice
        return c.size / (c.duration_ms / 1000) if c.duration_ms > 0 else c.bitrate * 125

    def playing(self) -> None:
        """Playback has started: follow the player's position from now on."""
        self.start_ms = None
        self.poke()

    def follow(self, position_ms: Callable[[], int]) -> None:
        """Plan from this playhead from now on (a prefetched stream that became audible
        follows the player's position instead of its own start)."""
        self._position_ms = position_ms

    def poke(self) -> None:
        """The playhead moves again (resume, seek, start): plan again now, and do not take
        the playhead's standing still before this for a pause."""
        self._idle_position = None
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
            if self.cache is not None and await blocking.run_sync(self.cache.has, choice.file_id):
                try:
                    # Verified against its id on the way out: a damaged file is removed, not played.
                    data: bytes | None = await blocking.run_sync(self.cache.open, choice.file_id)
                except NotCached as exc:
                    log.warning("cached %s unusable (%s); streaming it", choice.file_id[:12], exc)
                    data = None
                if data is not None:
                    buffer = ChunkBuffer(len(data), data=data)
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
                ok = await blocking.run_sync(
                    self.cache.put, choice.file_id, self.manifest, buffer.view()
                )
                if not ok:
                    log.warning("could not cache %s (see the cache's log)", choice.file_id)
                elif self.overlay is not None:
                    await self.overlay.holdings_changed()  # now we can serve it
        finally:
            if self.buffer is not None:
                self.buffer.detach()
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
        if trio.lowlevel.in_trio_task():  # a reader on trio's thread (the simulator's sink)
            self._wake.set()
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._wake.set)

    async def _fill(self, buffer: ChunkBuffer, manifest: Manifest) -> None:
        bps = self.bytes_per_second
        window = max(1, math.ceil(self.ahead_s * bps / CHUNK_SIZE))
        first_piece = max(1, math.ceil(self.first_piece_s * bps / CHUNK_SIZE))
        async with trio.open_nursery() as nursery:
            if self.overlay is not None:
                nursery.start_soon(self._discover)
            while not buffer.complete:
                now = trio.current_time()
                position = self._position_ms() if self.start_ms is None else self.start_ms
                playhead_bytes = int(position / 1000 * bps)
                peers = self._usable_peers(now)
                for peer_id in schedule.slow_peers(
                    peers, playhead_bytes=playhead_bytes, bytes_per_second=bps, now=now
                ):
                    self._drop_peer(peer_id, SLOW_COOLDOWN, "too slow for playback")
                    peers = self._usable_peers(now)
                request = schedule.plan(
                    schedule.Want(
                        buffer.num_chunks,
                        buffer.has_chunk,
                        buffer.contiguous_chunks,
                        buffer.wanted,
                        buffer.size,
                    ),
                    playhead_chunk=playhead_bytes // CHUNK_SIZE,
                    window_chunks=window,
                    first_piece_chunks=first_piece,
                    in_flight=self._in_flight,
                    peers=peers,
                    bytes_per_second=bps,
                    now=now,
                )
                if request is not None and (
                    request.source != schedule.SERVICE or self._service_requests < MAX_SERVICE
                ):
                    self._start_request(nursery, buffer, manifest, request, now)
                    continue
                wait = REPLAN_INTERVAL
                if not any(r.source != schedule.SERVICE for r in self._requests):
                    # No peer to watch for slowness: sleep until the next top-up is due (an
                    # arrival, a found peer or the decoder's blocked read wake us sooner).
                    due = schedule.next_service_topup(
                        schedule.Want(
                            buffer.num_chunks, buffer.has_chunk, buffer.contiguous_chunks
                        ),
                        playhead_bytes=playhead_bytes,
                        window_chunks=window,
                        first_piece_chunks=first_piece,
                        in_flight=self._in_flight,
                        bytes_per_second=bps,
                    )
                    wait = MAX_IDLE_WAIT if due is None else min(max(due, wait), MAX_IDLE_WAIT)
                    if position != self._idle_position:
                        self._idle_position, self._idle_since = position, now
                    elif now - self._idle_since >= REPLAN_INTERVAL:
                        # The playhead has stood still for a while and nobody said it would
                        # move (paused, or not started): nothing is due until someone wakes
                        # us (start, resume, seek, the decoder's blocked read, an arrival, a
                        # peer found).
                        wait = math.inf
                        if self._resting is None:
                            self._resting = trio.Event()
                    rested = [t - now for t in self._excluded_until.values() if t > now]
                    if rested:  # a rested peer becomes usable again
                        wait = max(min(wait, *rested), REPLAN_INTERVAL)
                else:
                    self._idle_position = None
                if wait != math.inf and self._resting is not None:
                    self._resting.set()  # discovery goes on
                    self._resting = None
                with trio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = trio.Event()
            nursery.cancel_scope.cancel()

    # --- peers ---------------------------------------------------------------------------------

    async def _discover(self) -> None:
        """Find peers by every mechanism now, and again while few are usable (not while the
        stream rests: again at once when it stops resting)."""
        assert self.overlay is not None
        delay = REDISCOVER_S
        while True:
            await self.overlay.find(self.choice.file_id, self._found)
            await trio.sleep(delay)
            delay = min(2 * delay, REDISCOVER_MAX_S)
            while True:
                if self._resting is not None:
                    # Nothing is due until the playhead moves (paused, or prefetched far
                    # enough before it starts): look again when it does, not every minute
                    # of a pause that may last days. Who held it then may be gone.
                    await self._resting.wait()
                    delay = REDISCOVER_S
                elif len(self._usable_peers(trio.current_time())) >= 2:
                    await trio.sleep(REDISCOVER_S)
                    delay = REDISCOVER_S
                else:
                    break

    def _found(self, link: Any, mechanism: str) -> None:
        peer_id: bytes = link.peer_id
        self.stats.found_by.setdefault(mechanism, set()).add(peer_id.hex())
        if peer_id not in self._peers and peer_id not in self._excluded_forever:
            self._peers[peer_id] = PeerStats(peer_id)
            self._links[peer_id] = link
            log.info(
                "%s: peer %s holds it (found by %s)",
                self.choice.file_id[:12],
                peer_id.hex()[:12],
                mechanism,
            )
            self._wake.set()

    def _usable_peers(self, now: float) -> list[PeerStats]:
        out = []
        for peer_id, stats in self._peers.items():
            link = self._links[peer_id]
            if not link.usable or peer_id in self._excluded_forever:
                continue
            if self._excluded_until.get(peer_id, 0.0) > now:
                continue
            out.append(stats)
        return out

    def _drop_peer(self, peer_id: bytes, cooldown: float | None, why: str) -> None:
        """Cancel everything asked of a peer; don't use it for ``cooldown`` s (None: ever)."""
        log.info("%s: leaving peer %s: %s", self.choice.file_id[:12], peer_id.hex()[:12], why)
        for req in list(self._requests):
            if req.source == peer_id:
                req.scope.cancel()
                self._release(req)
        stats = self._peers.get(peer_id)
        if stats is not None:
            stats.cancel()
        if cooldown is None:
            self._excluded_forever.add(peer_id)
        else:
            self._excluded_until[peer_id] = trio.current_time() + cooldown
        self._wake.set()

    # --- requests --------------------------------------------------------------------------------

    def _start_request(
        self,
        nursery: trio.Nursery,
        buffer: ChunkBuffer,
        manifest: Manifest,
        request: schedule.Request,
        now: float,
    ) -> None:
        chunks = set(range(request.first, request.first + request.count))
        req = _Request(request.source, request.first, request.count, chunks, trio.CancelScope())
        for i in chunks:
            self._in_flight[i] = req
        if not self._requests and self._on_busy is not None:
            self._on_busy(True)
        self._requests.add(req)
        if request.source == schedule.SERVICE:
            self._service_requests += 1
        else:
            assert isinstance(request.source, bytes)
            nbytes = sum(min(CHUNK_SIZE, buffer.size - i * CHUNK_SIZE) for i in chunks)
            self._peers[request.source].request(request.first * CHUNK_SIZE, nbytes, now)
        nursery.start_soon(self._run_request, buffer, manifest, req)

    def _release(self, req: _Request) -> None:
        if req not in self._requests:
            return
        self._requests.discard(req)
        if not self._requests and self._on_busy is not None:
            self._on_busy(False)
        for i in req.pending:
            if self._in_flight.get(i) is req:
                del self._in_flight[i]
        if req.source == schedule.SERVICE:
            self._service_requests -= 1
        else:
            stats = self._peers.get(req.source)  # type: ignore[arg-type]
            undelivered = sum(CHUNK_SIZE for _ in req.pending)
            if stats is not None and undelivered:
                _forget_outstanding(stats, undelivered)
        self._wake.set()

    async def _run_request(self, buffer: ChunkBuffer, manifest: Manifest, req: _Request) -> None:
        peer = None if req.source == schedule.SERVICE else req.source
        source: ChunkSource
        if peer is None:
            source = self.sources[0]
        else:
            assert isinstance(peer, bytes)
            source = PeerSource(self._links[peer])
        failed = False
        with req.scope:
            try:
                async for index, data in source.fetch(
                    self.choice.file_id, req.first, req.count, self.priority
                ):
                    if index not in req.pending:
                        continue
                    try:
                        manifest.verify_chunk(index, data)
                    except ChunkError as exc:
                        self._bad_chunk(source.name, index, exc, peer)
                        if peer is not None:
                            return  # that peer is gone; the chunks are planned again
                        continue  # left missing: planned again, fetched again
                    n = len(data)
                    if buffer.write_chunk(index, data):
                        self._count(source.name, n)
                    else:
                        self.stats.duplicate_bytes += n
                    req.pending.discard(index)
                    if self._in_flight.get(index) is req:
                        del self._in_flight[index]
                    if peer is not None:
                        assert isinstance(peer, bytes)
                        self._peers[peer].received(n, trio.current_time())
                        link = self._links[peer]
                        link.downloaded += n
                        if self.overlay is not None:
                            self.overlay.neighbours.record_download(peer, n, trio.current_time())
            except (net.NetError, trio.TooSlowError) as exc:
                failed = True
                log.info("chunks %d+%d from %s: %s", req.first, req.count, source.name, exc)
                if peer is not None:
                    assert isinstance(peer, bytes)
                    code = getattr(exc, "code", "")
                    self._drop_peer(
                        peer,
                        None if code == ApiErrorCode.NOT_FOUND else BUSY_COOLDOWN,
                        str(exc),
                    )
            finally:
                self._release(req)
        if failed and peer is None:
            await trio.sleep(RETRY_DELAY)  # the service is having trouble: don't spin

    def _bad_chunk(self, source: str, index: int, exc: Exception, peer: bytes | None) -> None:
        self.stats.bad_chunks += 1
        if self._on_bad_chunk is not None:
            self._on_bad_chunk()
        log.warning(
            "bad chunk %d of %s from %s: %s",
            index,
            self.choice.file_id[:12],
            source,
            exc,
            extra={
                "SOURCE": source,
                "PEER_ID": peer.hex() if peer else "",
                "FILE_ID": self.choice.file_id,
            },
        )
        if peer is not None:
            link = self._links[peer]
            self._drop_peer(peer, None, "sent a chunk that failed verification")
            if self.overlay is not None:
                self.overlay.report(link, f"bad chunk {index}: {exc}", self.choice.file_id)

    def _count(self, source: str, n: int) -> None:
        self.stats.add(source, n)
        if self._on_stats is not None:
            self._on_stats(source, n)
