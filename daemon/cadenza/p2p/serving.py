"""Serving peers: the files this speaker holds whole in its cache, to its neighbours.

:class:`Server` answers a neighbour's requests for a manifest or chunks, most urgent requests
first, at most ``max_uploads`` at once, within ``upload_rate``, and not while our own playback
buffer is critically low: playback comes first, and a refused request goes to another holder.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from cadenza import blocking, net
from cadenza.cache.store import Cache, CacheError
from cadenza.protocol import api
from cadenza.protocol.manifest import chunk_count
from cadenza.protocol.messages import BulkKind

from .limits import DEFAULT_MAX_UPLOADS, TokenBucket, UploadQueue
from .links import PeerLink, Traffic
from .neighbours import NeighbourTable

# Chunks read from the cache per batch when serving (128 KiB).
READ_BATCH = 8
# While our own playback buffer is this low, uploads pause (checked between chunks).
PAUSE_POLL = 0.2
# A request that waits longer than this for an upload slot is told "busy" (it goes elsewhere).
SLOT_WAIT = 3.0


class Server:
    """Answers neighbours' requests for what the cache holds; it dials and finds nobody."""

    def __init__(
        self,
        *,
        cache: Cache,
        neighbours: NeighbourTable,
        traffic: Traffic | None = None,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
        upload_rate: int = 0,
        buffer_low: Callable[[], bool] = lambda: False,
    ) -> None:
        self.cache = cache
        # Uploads credit the neighbour's usefulness, and a neighbour being served is busy
        # (not evicted mid-transfer).
        self.neighbours = neighbours
        self.traffic = traffic if traffic is not None else Traffic()
        self.buffer_low = buffer_low
        self.uploads: UploadQueue[object] = UploadQueue(max_uploads)
        self.bucket = TokenBucket(float(upload_rate), max(256 * 1024, upload_rate))
        self._slot_events: dict[object, trio.Event] = {}

    async def serve_manifest(self, ch: net.Channel, req: api.GetManifest) -> None:
        try:
            data = await blocking.run_sync(self.cache.manifest, req.file_id)
        except CacheError:
            raise net.RequestError("not-found", f"not holding {req.file_id}") from None
        await ch.send(api.ManifestReply(data), end=True)

    async def serve_chunks(self, link: PeerLink, ch: net.Channel, req: api.GetChunks) -> None:
        self.traffic.upload_requests += 1
        if self.uploads.max_active == 0:
            raise net.RequestError("busy", "this speaker does not upload")
        if not await blocking.run_sync(self.cache.has, req.file_id):
            raise net.RequestError("not-found", f"not holding {req.file_id}")
        size = await blocking.run_sync(self.cache.size, req.file_id)
        total = chunk_count(size)
        if not 0 < req.count <= api.MAX_CHUNKS_PER_REQUEST or not 0 <= req.first < total:
            raise net.RequestError("bad-request", f"chunks {req.first}+{req.count} of {total}")
        if self.buffer_low():
            self.traffic.refused_busy += 1
            raise net.RequestError("busy", "our own playback buffer is low")
        key = object()
        if not self.uploads.request(key, int(ch.priority)):
            event = self._slot_events[key] = trio.Event()
            with trio.move_on_after(SLOT_WAIT) as waited:
                await event.wait()
            self._slot_events.pop(key, None)
            if waited.cancelled_caught:
                self._release(key)
                self.traffic.refused_busy += 1
                raise net.RequestError("busy", "all upload slots are taken")
        self.neighbours.set_busy(link.peer_id, True)
        try:
            end = min(total, req.first + req.count)
            index = req.first
            while index < end:
                n = min(READ_BATCH, end - index)
                try:
                    batch = await blocking.run_sync(self.cache.read_chunks, req.file_id, index, n)
                except CacheError as exc:
                    raise net.RequestError("not-found", str(exc)) from None
                await self._while_buffer_low()  # per batch: 128 KiB, a fraction of a second
                for chunk in batch:
                    delay = self.bucket.reserve(len(chunk), trio.current_time())
                    if delay > 0:
                        await trio.sleep(delay)
                    await ch.send_bulk(BulkKind.CHUNK, index, chunk)
                    index += 1
                    link.uploaded += len(chunk)
                    self.traffic.uploaded += len(chunk)
                    self.neighbours.record_upload(link.peer_id, len(chunk), trio.current_time())
        finally:
            self.neighbours.set_busy(link.peer_id, False)
            self._release(key)

    async def _while_buffer_low(self) -> None:
        """Pause while our own playback buffer is critically low (playback comes first)."""
        if not self.buffer_low():
            return
        with trio.move_on_after(60):
            while self.buffer_low():  # noqa: ASYNC110 - the buffer level is polled, not evented
                await trio.sleep(PAUSE_POLL)

    def _release(self, key: object) -> None:
        self._wake_granted(self.uploads.release(key))

    def set_max_uploads(self, n: int) -> None:
        """Change the number of upload slots (a reload); waiting requests may start now."""
        self._wake_granted(self.uploads.set_max(n))

    def _wake_granted(self, granted: list[object]) -> None:
        for key in granted:
            event = self._slot_events.get(key)
            if event is not None:
                event.set()
