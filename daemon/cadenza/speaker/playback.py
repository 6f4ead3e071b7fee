"""The streams behind what plays: one per prepared track, their figures, the start decision.

:class:`Streams` starts a :class:`~cadenza.stream.engine.FileStream` for a queue entry (the
file at the configured bitrate; cache, peers, then the service), keeps the throughput model
fed while some stream is asking for chunks, records where each track's bytes came from, and
says when a starting track has enough buffered (:meth:`Streams.wait_start`: the tail
libvorbisfile reads first, then the first piece or the start policy's verdict). It decides
nothing about *which* track plays: the controller (:mod:`cadenza.speaker.controller`) asks
it to prepare an entry and owns the result.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza.cache.store import Cache
from cadenza.player.player import PlayItem
from cadenza.player.start_threshold import StartPolicy, ThroughputModel
from cadenza.protocol.manifest import ManifestVerifier
from cadenza.protocol.messages import Priority
from cadenza.session.client import Session
from cadenza.speaker.queue import PlayQueue, Track
from cadenza.stream.buffer import ChunkBuffer
from cadenza.stream.engine import (
    TAIL_CHUNKS,
    FileChoice,
    FileStream,
    PeerNetwork,
    ServiceSource,
    StreamStats,
    choose_file,
)
from cadenza.system.config import StreamingConfig

log = logging.getLogger("cadenza.speaker")

# Loudness normalisation brings every track to this (EBU R128 streaming practice).
TARGET_LUFS = -14.0
# Tracks whose byte sources the state keeps.
HISTORY = 20


@dataclass
class Prepared:
    """A track whose stream is running (current or prefetched)."""

    index: int
    track: Track
    choice: FileChoice
    stream: FileStream
    scope: trio.CancelScope
    buffer: ChunkBuffer
    key: str

    def cancel(self) -> None:
        """Stop its stream and let a reader waiting on its bytes go."""
        self.scope.cancel()
        self.buffer.close()


@dataclass
class Stats:
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    start_latencies_ms: list[float] = field(default_factory=list)
    start_keys: list[str] = field(default_factory=list)  # the track key of each latency
    bad_chunks: int = 0

    def add(self, source: str, n: int) -> None:
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + n


class Streams:
    """The streams of the speaker's prepared tracks, and what they measured."""

    def __init__(
        self,
        *,
        session: Session,
        cache: Cache | None,
        queue: PlayQueue,
        position_ms: Callable[[], int],
        streaming: StreamingConfig,
    ) -> None:
        self.session = session
        self.cache = cache
        self.overlay: PeerNetwork | None = None
        self.queue = queue
        self.position_ms = position_ms
        self.streaming = streaming
        self.bitrate = streaming.bitrate
        self.normalisation = False
        self.policy = StartPolicy(target=streaming.stutter_target)
        self.model = ThroughputModel()
        self.stats = Stats()
        self.history: list[dict[str, Any]] = []
        self._generation = 0
        self._busy: set[object] = set()  # streams with a request in flight
        # The clock of start latencies and the throughput model: the player's (its events
        # carry times on it); the simulator's players and speakers use trio's virtual clock.
        self.clock: Callable[[], float] = time.monotonic
        # Observers (the simulator's figures): a stream started; a stream's record is final.
        self.on_prepared: Callable[[Prepared], None] | None = None
        self.on_streamed: Callable[[dict[str, Any]], None] | None = None

    async def prepare(
        self, nursery: trio.Nursery, index: int, priority: int, start_ms: int = 0
    ) -> Prepared:
        """Start streaming the queue's entry ``index`` in ``nursery``; returns once its
        buffer exists (the manifest is known)."""
        track = self.queue.tracks[index]
        choice = choose_file(track, self.bitrate)
        st = self.streaming
        stream = FileStream(
            choice,
            session=self.session,
            cache=self.cache,
            verifier=self._verifier,
            sources=[ServiceSource(self.session)],
            priority=priority,
            position_ms=self.position_ms if priority == Priority.PLAYING else (lambda: 0),
            first_piece_s=st.first_piece_seconds,
            ahead_s=st.ahead_seconds,
            on_stats=self._on_bytes,
            on_bad_chunk=self._on_bad_chunk,
            overlay=self.overlay,
            on_busy=functools.partial(self._stream_busy, object()),
        )
        stream.start_ms = start_ms
        scope = trio.CancelScope()

        async def run_stream(
            task_status: trio.TaskStatus[ChunkBuffer] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            wire_before = self.wire_in()
            try:
                with scope:
                    await stream.run(task_status=task_status)
            finally:
                # The entry at that index when the stream ends (as the figures always were).
                tracks = self.queue.tracks
                self._record(
                    tracks[index] if index < len(tracks) else {},
                    stream,
                    self.wire_in() - wire_before,
                )

        buffer = await nursery.start(run_stream)
        self._generation += 1
        key = f"{track['id']}#{self._generation}"
        prepared = Prepared(index, track, choice, stream, scope, buffer, key)
        if self.on_prepared is not None:
            self.on_prepared(prepared)
        return prepared

    def promote(self, p: Prepared) -> None:
        """The prefetched ``p`` became audible: it streams as the playing track now."""
        p.stream.set_priority(Priority.PLAYING)
        p.stream.follow(self.position_ms)
        p.stream.playing()

    def item(self, p: Prepared) -> PlayItem:
        """What the player gets; with normalisation, the gain to bring it to TARGET_LUFS."""
        lufs = p.track.get("loudness_lufs")
        if not self.normalisation or lufs is None:
            return PlayItem(p.key, p.buffer)
        peak_dbfs = p.track.get("peak_dbfs")
        peak = 10 ** (peak_dbfs / 20) if peak_dbfs is not None else None
        return PlayItem(p.key, p.buffer, replaygain_db=TARGET_LUFS - lufs, peak=peak)

    async def wait_start(self, p: Prepared, position_ms: int, still: Callable[[], bool]) -> None:
        """Return when ``p`` has enough buffered to start at ``position_ms`` (or ``still()``
        turns false: the controller moved on)."""
        buffer = p.buffer
        stream = p.stream
        bps = stream.bytes_per_second
        start_byte = int(position_ms / 1000 * bps)
        tail = range(max(0, buffer.num_chunks - TAIL_CHUNKS), buffer.num_chunks)
        while not buffer.complete and still():
            if not all(buffer.has_chunk(i) for i in tail):
                # libvorbisfile reads the end of the file when it opens: without it the
                # decoder would block at once (and report buffering) however full the start.
                with trio.move_on_after(0.02):
                    await stream.done.wait()
                continue
            buffered = buffer.contiguous_from(start_byte)
            remaining = max(0, buffer.size - start_byte - buffered)
            if not stream.busy and buffered >= min(
                stream.first_piece_s * bps, buffer.size - start_byte
            ):
                # The first piece is in and the stream asks for nothing more until playback
                # moves: however slow the model thinks the link, waiting longer gains nothing.
                return
            if buffered > 0 and self.policy.should_start(
                self.model,
                buffered_bytes=buffered,
                remaining_bytes=remaining,
                bitrate_bytes_per_s=bps,
            ):
                return
            with trio.move_on_after(0.02):
                await stream.done.wait()

    # --- figures ---------------------------------------------------------------------------

    def wire_in(self) -> int:
        n = self.session.bytes_received
        if self.overlay is not None:
            n += self.overlay.figures()["wire_in"]
        return n

    def traffic(self, p2p: dict[str, Any] | None = None) -> dict[str, int]:
        """Music bytes by source, and what the wire carried besides them (overhead).
        ``p2p``: the overlay's figures when the caller has them already."""
        useful = sum(n for src, n in self.stats.bytes_by_source.items() if src != "cache")
        wire_in, wire_out = self.session.bytes_received, self.session.bytes_sent
        if p2p is None and self.overlay is not None:
            p2p = self.overlay.figures()
        if p2p is not None:
            wire_in += p2p["wire_in"]
            wire_out += p2p["wire_out"]
        return {
            "music_in": useful,
            "duplicate_in": sum(h["duplicate_bytes"] for h in self.history),
            "wire_in": wire_in,
            "wire_out": wire_out,
            "overhead_in": max(0, wire_in - useful),
        }

    def _verifier(self) -> ManifestVerifier:
        login = self.session.login
        keys = login.signing_keys if login else ()
        return ManifestVerifier([Ed25519PublicKey.from_public_bytes(k) for k in keys])

    def _stream_busy(self, stream: object, busy: bool) -> None:
        """The throughput model measures only while some stream is asking for chunks: the
        time between a stream's top-ups, when nothing was asked, is not a slow link."""
        if busy:
            if not self._busy:
                self.model.begin(self.clock())
            self._busy.add(stream)
        else:
            self._busy.discard(stream)
            if not self._busy:
                self.model.idle()

    def _on_bad_chunk(self) -> None:
        self.stats.bad_chunks += 1

    def _on_bytes(self, source: str, n: int) -> None:
        self.stats.add(source, n)
        if source != "cache":
            self.model.record(n, self.clock())

    def _record(self, track: Track, stream: FileStream, wire_in: int) -> None:
        """Keep (and log) where a track's bytes came from and who found its peers."""
        st: StreamStats = stream.stats
        found_by = {k: len(v) for k, v in sorted(st.found_by.items())}
        entry: dict[str, Any] = {
            "uri": track.get("uri"),
            "title": track.get("title"),
            "file_id": stream.choice.file_id,
            "complete": stream.buffer is not None and stream.buffer.complete,
            "bytes_by_source": dict(st.bytes_by_source),
            "duplicate_bytes": st.duplicate_bytes,
            # Everything received on every connection meanwhile (another stream's too, when a
            # prefetch overlaps): music, requests, searches, keep-alives, encryption.
            "wire_in_while_streaming": wire_in,
            "bad_chunks": st.bad_chunks,
            "peers_found_by": found_by,
        }
        self.history.append(entry)
        del self.history[:-HISTORY]
        if self.on_streamed is not None:
            self.on_streamed(entry)
        total = sum(st.bytes_by_source.values())
        if total and not st.from_cache:
            log.info(
                "streamed %s: %s; peers found by %s",
                track.get("title") or stream.choice.file_id[:12],
                ", ".join(
                    f"{src} {n / 1024:.0f} KiB ({100 * n / total:.0f}%)"
                    for src, n in sorted(st.bytes_by_source.items())
                ),
                ", ".join(f"{k} {v}" for k, v in found_by.items()) or "none",
                extra={
                    "TRACK_URI": track.get("uri") or "",
                    "FILE_ID": stream.choice.file_id,
                    "BYTES_SERVICE": st.bytes_by_source.get("service", 0),
                    "BYTES_PEER": st.bytes_by_source.get("peer", 0),
                },
            )
