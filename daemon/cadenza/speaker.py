"""The speaker: session, streaming engine, cache, player and control API in one trio program.

:class:`Speaker` owns the play queue. Playing a track means: pick its file at the
configured bitrate, start a :class:`~cadenza.stream.engine.FileStream` (cache, or the
service), wait until the start policy says the buffer is enough, and hand the buffer to
the player. About ``prefetch_seconds`` before the end, the next track is streamed at
PREFETCH priority and queued in the player, which joins it gaplessly; when it becomes
audible its stream is promoted to PLAYING. A track change cancels every stream in flight.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import links
from cadenza.cache.store import Cache
from cadenza.errors import (
    ApiErrorCode,
    BadPosition,
    BadRequest,
    Conflict,
    Unavailable,
    UnknownLink,
)
from cadenza.player.player import Player, PlayItem
from cadenza.player.start_threshold import StartPolicy, ThroughputModel
from cadenza.protocol import api
from cadenza.protocol.manifest import ManifestVerifier
from cadenza.protocol.messages import Priority
from cadenza.session.client import Session
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
from cadenza.system.config import (
    DEFAULT_AHEAD_S,
    DEFAULT_BITRATE,
    DEFAULT_FIRST_PIECE_S,
    DEFAULT_PREFETCH_S,
    DEFAULT_STUTTER_TARGET,
)
from cadenza.system.files import atomic_write

log = logging.getLogger("cadenza.speaker")

# How often the control plane hears that the position moved (while playing).
POSITION_TICK = 0.25
# Loudness normalisation brings every track to this (EBU R128 streaming practice).
TARGET_LUFS = -14.0
REPEAT_MODES = ("off", "all", "one")
# Below this much audio buffered ahead of the playhead, uploads to peers pause.
LOW_BUFFER_S = 3.0
# Tracks whose byte sources the state keeps.
HISTORY = 20
# Give up resolving a link after this long (the service may be down).
RESOLVE_TIMEOUT = 10.0


@dataclass
class Prepared:
    """A track whose stream is running (current or prefetched)."""

    index: int
    track: dict[str, Any]
    choice: FileChoice
    stream: FileStream
    scope: trio.CancelScope
    buffer: ChunkBuffer
    key: str


@dataclass
class Stats:
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    start_latencies_ms: list[float] = field(default_factory=list)
    start_keys: list[str] = field(default_factory=list)  # the track key of each latency
    bad_chunks: int = 0

    def add(self, source: str, n: int) -> None:
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + n


class Speaker:
    def __init__(
        self,
        *,
        session: Session,
        cache: Cache | None,
        player: Player,
        bitrate: int = DEFAULT_BITRATE,
        first_piece_s: float = DEFAULT_FIRST_PIECE_S,
        ahead_s: float = DEFAULT_AHEAD_S,
        prefetch_s: float = DEFAULT_PREFETCH_S,
        stutter_target: float = DEFAULT_STUTTER_TARGET,
        volume: int = 100,
        max_volume: int = 100,
        metadata_path: Path | None = None,
        normalisation: bool = False,
        overlay: PeerNetwork | None = None,
    ) -> None:
        self.session = session
        self.overlay = overlay
        self.cache = cache
        self.player = player
        self.bitrate = bitrate
        self.first_piece_s = first_piece_s
        self.ahead_s = ahead_s
        self.prefetch_s = prefetch_s
        self.policy = StartPolicy(target=stutter_target)
        self.max_volume = max_volume
        self.normalisation = normalisation
        self.volume = min(volume, max_volume)
        self.queue: list[dict[str, Any]] = []
        self.index = -1
        self.shuffle = False
        self.repeat = "off"
        self._unshuffled: list[dict[str, Any]] | None = None
        self._rng = random.Random()
        self.status = "stopped"  # stopped | loading | playing | paused | buffering
        self.current: Prepared | None = None
        self.next: Prepared | None = None
        self.stats = Stats()
        self.history: list[dict[str, Any]] = []
        self.error = ""
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._play_requested_at: dict[str, float] = {}
        self._generation = 0
        self._changed = trio.Event()
        self._model = ThroughputModel()
        self._busy_streams: set[object] = set()  # streams with a request in flight
        # The clock of start latencies and the throughput model: the player's (its events
        # carry times on it); the simulator's players and speakers use trio's virtual clock.
        self.clock: Callable[[], float] = time.monotonic
        # Observers (the simulator's figures): a stream started; a stream's record is final.
        self.on_prepared: Callable[[Prepared], None] | None = None
        self.on_streamed: Callable[[dict[str, Any]], None] | None = None
        self.position_tick: float | None = POSITION_TICK
        # Metadata of tracks seen, so that a cached track plays with no network at all,
        # also after a restart.
        self._metadata_path = metadata_path
        self._known_tracks: dict[str, dict[str, Any]] = _load_json(metadata_path)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Speaker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.player.set_volume(self.volume)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._tick)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self.player.stop()

    # --- commands ----------------------------------------------------------------------------

    async def play(self, uris: list[str], position_ms: int = 0, start_index: int = 0) -> None:
        """Replace the queue with ``uris`` (tracks; albums expand) and play the one at
        ``start_index`` (an album context starting at its third track: 2)."""
        tracks: list[dict[str, Any]] = []
        first_offset = position_ms
        for n, uri in enumerate(uris):
            link = links.parse(uri)
            if n == 0 and link.offset_ms is not None and not position_ms:
                first_offset = link.offset_ms
            tracks.extend(await self._resolve(link))
        if not tracks:
            raise UnknownLink(f"nothing to play in {uris}")
        if not 0 <= start_index < len(tracks):
            raise UnknownLink(f"no track at offset {start_index} ({len(tracks)} tracks)")
        self._unshuffled = None
        if self.shuffle and len(tracks) > 1:
            rest = tracks[:start_index] + tracks[start_index + 1 :]
            self._unshuffled = list(rest)
            self._rng.shuffle(rest)
            tracks = [tracks[start_index], *rest]
            start_index = 0
        self.queue = tracks
        await self._start(start_index, first_offset)

    async def next_track(self) -> None:
        nxt = self._following(self.index, user=True)
        if nxt is not None:
            await self._start(nxt, 0)
        else:
            self._stop_all()

    async def previous_track(self) -> None:
        if not self.queue:
            raise Conflict("the queue is empty: nothing to go back to")
        # Like every player: restart the track unless we are at its very beginning.
        if self.player.position_ms() > 3000 or self.index <= 0:
            await self._start(max(self.index, 0), 0)
        else:
            await self._start(self.index - 1, 0)

    def pause(self) -> None:
        if self.status in ("playing", "buffering", "loading"):
            self.player.pause()
            self.status = "paused"
            self._notify()

    def resume(self) -> None:
        if self.status == "paused":
            self.player.resume()
            self.status = "playing"
            self._poke_streams()
            self._notify()

    async def seek(self, position_ms: int) -> None:
        if self.current is None:
            raise Conflict("nothing is playing")
        duration = int(self.current.track.get("duration_ms", 0))
        self.player.seek(max(0, min(position_ms, duration)))
        self._poke_streams()
        self._notify()

    def _poke_streams(self) -> None:
        """The playhead moves (again): the streams plan from its new place at once."""
        for p in (self.current, self.next):
            if p is not None:
                p.stream.poke()

    def set_volume(self, volume: int) -> None:
        self.volume = max(0, min(volume, self.max_volume))
        self.player.set_volume(self.volume)
        self._notify()

    def _following(self, index: int, *, user: bool = False) -> int | None:
        """The queue index after ``index``: repeat "one" stays (unless the user skips),
        repeat "all" wraps around; None at the end."""
        if not self.queue:
            return None
        if self.repeat == "one" and not user and 0 <= index < len(self.queue):
            return index
        if index + 1 < len(self.queue):
            return index + 1
        return 0 if self.repeat == "all" else None

    def set_repeat(self, mode: str) -> None:
        if mode not in REPEAT_MODES:
            raise BadRequest(
                f"repeat must be one of {', '.join(REPEAT_MODES)}, not {mode!r}", field="repeat"
            )
        self.repeat = mode
        self._upcoming_changed()

    def set_shuffle(self, on: bool) -> None:
        """Shuffle what comes after the current track (and restore its order when off)."""
        if on == self.shuffle:
            return
        self.shuffle = on
        head, rest = self.queue[: self.index + 1], self.queue[self.index + 1 :]
        if on:
            self._unshuffled = list(rest)
            self._rng.shuffle(rest)
        elif self._unshuffled is not None:
            kept = {id(t) for t in rest}
            rest = [t for t in self._unshuffled if id(t) in kept] + [
                t for t in rest if id(t) not in {id(u) for u in self._unshuffled}
            ]
            self._unshuffled = None
        self.queue = head + rest
        self._upcoming_changed()

    async def add_to_queue(self, uris: list[str], position: int | None = None) -> None:
        """Insert tracks (albums expand) at ``position`` (default: the end)."""
        tracks: list[dict[str, Any]] = []
        for uri in uris:
            tracks.extend(await self._resolve(links.parse(uri)))
        at = len(self.queue) if position is None else max(0, min(position, len(self.queue)))
        if at <= self.index:
            self.index += len(tracks)
            for p in (self.current, self.next):
                if p is not None:
                    p.index += len(tracks)
        self.queue[at:at] = tracks
        if self._unshuffled is not None:
            self._unshuffled.extend(tracks)
        self._upcoming_changed()

    def move_in_queue(self, source: int, target: int) -> None:
        n = len(self.queue)
        if not (0 <= source < n and 0 <= target < n):
            raise BadPosition(_positions(n, source, target))
        track = self.queue.pop(source)
        self.queue.insert(target, track)
        if self.current is not None:
            cur = self.current.track
            self.index = self.current.index = next(i for i, t in enumerate(self.queue) if t is cur)
        self._upcoming_changed()

    def remove_from_queue(self, index: int) -> None:
        n = len(self.queue)
        if not 0 <= index < n:
            raise BadPosition(_positions(n, index))
        if self.current is not None and index == self.index:
            raise Conflict("that track is playing: skip it first")
        del self.queue[index]
        if index < self.index:
            self.index -= 1
            if self.current is not None:
                self.current.index = self.index
        self._upcoming_changed()

    def clear_queue(self) -> None:
        """Remove everything but the track playing now."""
        if self.current is not None and 0 <= self.index < len(self.queue):
            self.queue = [self.queue[self.index]]
            self.index = self.current.index = 0
        else:
            self.queue = []
            self.index = -1
        self._unshuffled = None
        self._upcoming_changed()

    def _upcoming_changed(self) -> None:
        """The track after this one may differ now: drop a prefetched one that no longer is."""
        nxt = self.next
        if nxt is not None:
            following = self._following(self.index)
            if following is None or self.queue[following] is not nxt.track:
                nxt.scope.cancel()
                nxt.buffer.close()
                self.next = None
                self.player.set_next(None)
            else:
                nxt.index = following
        self._notify()

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        cur = self.current
        p2p = self.overlay.figures() if self.overlay is not None else None
        track = _track_summary(cur.track) if cur else None
        return {
            "status": self.status,
            "track": track,
            "position_ms": self.player.position_ms() if cur else 0,
            "volume": self.volume,
            "max_volume": self.max_volume,
            "shuffle": self.shuffle,
            "repeat": self.repeat,
            "index": self.index,
            "queue": [_track_summary(t) for t in self.queue],
            "bytes_by_source": dict(self.stats.bytes_by_source),
            "underruns": self.player.underruns,
            "bad_chunks": self.stats.bad_chunks,
            "traffic": self.traffic(p2p),
            "tracks_streamed": list(self.history),
            "p2p": p2p,
            "start_latency_ms": self.stats.start_latencies_ms[-10:],
            "session": {
                "state": self.session.status.state.value,
                "access_point": self.session.status.access_point,
                "error": self.session.status.error,
                "user": self.session.status.user,
            },
            "error": self.error,
        }

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

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- internals ---------------------------------------------------------------------------

    async def _resolve(self, link: links.Link) -> list[dict[str, Any]]:
        if link.kind not in ("track", "album", "playlist"):
            raise UnknownLink(f"cannot play {link} (tracks, albums and playlists)")
        bare = links.Link(link.kind, link.id, user=link.user)  # without the #m:ss offset
        try:
            reply = await self.session.request(api.Lookup(str(bare)), timeout=RESOLVE_TIMEOUT)
        except Exception as exc:
            code = getattr(exc, "code", "")
            if code == ApiErrorCode.NOT_FOUND:
                raise UnknownLink(f"unknown {link.kind}: {bare}") from None
            if code in (ApiErrorCode.UNSUPPORTED, ApiErrorCode.BAD_REQUEST):
                raise UnknownLink(f"the service cannot resolve {bare}: {exc}") from None
            if self.cache is not None and link.kind == "track":
                cached = self._cached_track(link.id)
                if cached is not None:
                    return [cached]
            raise Unavailable(f"the service is not reachable: {exc}") from None
        assert isinstance(reply, api.LookupReply)
        records = [reply.record] if reply.kind == "track" else list(reply.record.get("tracks", []))
        for r in records:
            self._remember_track(r)
        return records

    def _remember_track(self, record: dict[str, Any]) -> None:
        if self._known_tracks.get(record["id"]) == record:
            return
        self._known_tracks[record["id"]] = record
        if self._metadata_path is not None:
            _save_json(self._metadata_path, self._known_tracks)

    def _cached_track(self, track_id: str) -> dict[str, Any] | None:
        return self._known_tracks.get(track_id)

    def _verifier(self) -> ManifestVerifier:
        login = self.session.login
        keys = login.signing_keys if login else ()
        return ManifestVerifier([Ed25519PublicKey.from_public_bytes(k) for k in keys])

    def _spawn(self, index: int, priority: int) -> tuple[FileStream, trio.CancelScope, FileChoice]:
        track = self.queue[index]
        choice = choose_file(track, self.bitrate)
        stream = FileStream(
            choice,
            session=self.session,
            cache=self.cache,
            verifier=self._verifier,
            sources=[ServiceSource(self.session)],
            priority=priority,
            position_ms=(lambda: self.player.position_ms())
            if priority == Priority.PLAYING
            else (lambda: 0),
            first_piece_s=self.first_piece_s,
            ahead_s=self.ahead_s,
            on_stats=self._on_bytes,
            on_bad_chunk=self._on_bad_chunk,
            overlay=self.overlay,
            on_busy=functools.partial(self._stream_busy, object()),
        )
        return stream, trio.CancelScope(), choice

    def _record(self, track: dict[str, Any], stream: FileStream, wire_in: int) -> None:
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

    def playback_buffer_low(self) -> bool:
        """Our own playback is about to starve: peers must not take our bandwidth now."""
        cur = self.current
        if cur is None or self.status != "playing" or cur.buffer.complete:
            return False
        bps = cur.stream.bytes_per_second
        playhead = int(self.player.position_ms() / 1000 * bps)
        return cur.buffer.contiguous_from(playhead) < LOW_BUFFER_S * bps

    def _stream_busy(self, stream: object, busy: bool) -> None:
        """The throughput model measures only while some stream is asking for chunks: the
        time between a stream's top-ups, when nothing was asked, is not a slow link."""
        if busy:
            if not self._busy_streams:
                self._model.begin(self.clock())
            self._busy_streams.add(stream)
        else:
            self._busy_streams.discard(stream)
            if not self._busy_streams:
                self._model.idle()

    def _on_bad_chunk(self) -> None:
        self.stats.bad_chunks += 1

    def _on_bytes(self, source: str, n: int) -> None:
        self.stats.add(source, n)
        if source != "cache":
            self._model.record(n, self.clock())

    async def _prepare(self, index: int, priority: int, start_ms: int = 0) -> Prepared:
        assert self._nursery is not None
        stream, scope, choice = self._spawn(index, priority)
        stream.start_ms = start_ms

        async def run_stream(
            task_status: trio.TaskStatus[ChunkBuffer] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            wire_before = self.traffic()["wire_in"]
            try:
                with scope:
                    await stream.run(task_status=task_status)
            finally:
                track = self.queue[index] if index < len(self.queue) else {}
                self._record(track, stream, self.traffic()["wire_in"] - wire_before)

        buffer = await self._nursery.start(run_stream)
        self._generation += 1
        key = f"{self.queue[index]['id']}#{self._generation}"
        prepared = Prepared(index, self.queue[index], choice, stream, scope, buffer, key)
        if self.on_prepared is not None:
            self.on_prepared(prepared)
        return prepared

    def _stop_all(self) -> None:
        self.player.stop()
        for p in (self.current, self.next):
            if p is not None:
                p.scope.cancel()
                p.buffer.close()
        self.current = self.next = None
        self.status = "stopped"
        self._notify()

    async def _start(self, index: int, position_ms: int) -> None:
        requested = self.clock()
        self._stop_all()
        self.index = index
        self.status = "loading"
        self.error = ""
        self._notify()
        self._model.begin(self.clock())  # the clock of the throughput model starts now
        prepared = await self._prepare(index, Priority.PLAYING, position_ms)
        self.current = prepared
        self._play_requested_at[prepared.key] = requested
        await self._wait_start_threshold(prepared, position_ms)
        if self.current is not prepared:
            return  # another command took over meanwhile
        self.player.play(self._item(prepared), position_ms)
        prepared.stream.playing()
        self.status = "playing"
        self._notify()
        duration = int(prepared.track.get("duration_ms", 0))
        if duration - position_ms < self.prefetch_s * 1000:
            await self._prefetch(prepared)  # a short track: its successor is due at once

    def _item(self, p: Prepared) -> PlayItem:
        """What the player gets; with normalisation, the gain to bring it to TARGET_LUFS."""
        lufs = p.track.get("loudness_lufs")
        if not self.normalisation or lufs is None:
            return PlayItem(p.key, p.buffer)
        peak_dbfs = p.track.get("peak_dbfs")
        peak = 10 ** (peak_dbfs / 20) if peak_dbfs is not None else None
        return PlayItem(p.key, p.buffer, replaygain_db=TARGET_LUFS - lufs, peak=peak)

    async def _prefetch(self, cur: Prepared) -> None:
        following = self._following(cur.index)
        if self.next is not None or following is None:
            return
        nxt = await self._prepare(following, Priority.PREFETCH)
        if self.current is cur and self.next is None:
            self.next = nxt
            self.player.set_next(self._item(nxt))
            log.info("prefetching %s", nxt.track.get("title"))
        else:
            nxt.scope.cancel()
            nxt.buffer.close()

    async def _wait_start_threshold(self, prepared: Prepared, position_ms: int) -> None:
        buffer = prepared.buffer
        bps = prepared.stream.bytes_per_second
        start_byte = int(position_ms / 1000 * bps)
        tail = range(max(0, buffer.num_chunks - TAIL_CHUNKS), buffer.num_chunks)
        while not buffer.complete and self.current is prepared:
            if not all(buffer.has_chunk(i) for i in tail):
                # libvorbisfile reads the end of the file when it opens: without it the
                # decoder would block at once (and report buffering) however full the start.
                with trio.move_on_after(0.02):
                    await prepared.stream.done.wait()
                continue
            buffered = buffer.contiguous_from(start_byte)
            remaining = max(0, buffer.size - start_byte - buffered)
            stream = prepared.stream
            if not stream.busy and buffered >= min(
                stream.first_piece_s * bps, buffer.size - start_byte
            ):
                # The first piece is in and the stream asks for nothing more until playback
                # moves: however slow the model thinks the link, waiting longer gains nothing.
                return
            if buffered > 0 and self.policy.should_start(
                self._model,
                buffered_bytes=buffered,
                remaining_bytes=remaining,
                bitrate_bytes_per_s=bps,
            ):
                return
            with trio.move_on_after(0.02):
                await prepared.stream.done.wait()

    async def _tick(self) -> None:
        """Prefetch the next track ``prefetch_s`` before the end, and tell the control plane
        every ``position_tick`` s that the position moved. Sleeps while nothing plays (and,
        with ``position_tick`` None, as in the simulator, until the prefetch is due)."""
        while True:
            cur = self.current
            if cur is None or self.status not in ("playing", "buffering"):
                await self._changed.wait()
                continue
            wait = self.position_tick
            if self.next is None and self._following(cur.index) is not None:
                duration = int(cur.track.get("duration_ms", 0))
                due = (duration - self.player.position_ms()) / 1000 - self.prefetch_s
                if due <= 0:
                    await self._prefetch(cur)
                    continue
                wait = due if wait is None else min(wait, due)
            with trio.move_on_after(wait if wait is not None else math.inf) as timer:
                await self._changed.wait()
            if timer.cancelled_caught and self.position_tick is not None:
                self._notify()  # the position moved

    # --- player events (from the player's thread) ------------------------------------------------

    def player_event(self, event: Any) -> None:
        """The player's event callback (runs on the player's thread; never blocks it)."""
        if trio.lowlevel.in_trio_task():  # a player on trio's thread (the simulator's sink)
            self._on_event(event)
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_event, event)

    def _on_event(self, event: Any) -> None:
        name = type(event).__name__
        key = str(getattr(event, "track_key", ""))
        if name == "TrackStarted":
            requested = self._play_requested_at.pop(key, None)
            if requested is not None:
                first = getattr(event, "first_sample_written_at", self.clock())
                self.stats.start_latencies_ms.append(round((first - requested) * 1000, 1))
                self.stats.start_keys.append(key)
            if self.next is not None and self.next.key == key:
                old = self.current
                self.current, self.next = self.next, None
                self.index = self.current.index
                self.current.stream.set_priority(Priority.PLAYING)
                self.current.stream._position_ms = self.player.position_ms
                self.current.stream.playing()
                if old is not None:
                    old.scope.cancel()
            self.status = "playing"
        elif name == "TrackEnded":
            cur = self.current
            if cur is not None and cur.key == key and self.next is None:
                following = self._following(cur.index)
                if following is not None and self._nursery is not None:
                    # The successor was not ready in time (not gapless, but it plays).
                    self._nursery.start_soon(self._start, following, 0)
                else:
                    self.status = "stopped"
        elif name == "Buffering":
            self.status = "buffering"
        elif name == "StateChanged":
            state = str(getattr(event, "state", ""))
            if state in ("playing", "buffering", "paused"):
                self.status = state
            elif state == "stopped" and self.next is None and self.status != "loading":
                self.status = "stopped"
        elif name == "Error":
            self.error = getattr(event, "message", "player error")
            log.error("player: %s", self.error)
        self._notify()


# Track records kept for offline play; the oldest are dropped past this many.
MAX_KNOWN_TRACKS = 5000


def _positions(n: int, *asked: int) -> str:
    got = " and ".join(str(a) for a in asked)
    if n == 0:
        return f"the queue is empty (asked for position {got})"
    return f"no such queue position: {got} (positions are 0..{n - 1})"


def _load_json(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _save_json(path: Path, known: dict[str, dict[str, Any]]) -> None:
    while len(known) > MAX_KNOWN_TRACKS:
        known.pop(next(iter(known)))
    try:
        atomic_write(path, json.dumps(known))
    except OSError as exc:
        log.warning("cannot save %s: %s", path, exc)


def _track_summary(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "uri": t.get("uri"),
        "id": t.get("id"),
        "title": t.get("title"),
        "artists": [a.get("name") for a in t.get("artists", [])],
        "album": (t.get("album") or {}).get("title"),
        "duration_ms": t.get("duration_ms"),
    }
