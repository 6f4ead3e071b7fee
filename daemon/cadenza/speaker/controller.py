"""The speaker's controller: the one owner of what plays, as the player owns its thread.

Everything that changes what the speaker does is a command (:mod:`cadenza.speaker.commands`)
handed to one method, :meth:`Speaker.execute`, from the HTTP API, the board's buttons, the
simulator's listeners, or the speaker itself when a track ends; the player's events arrive at
one other, :meth:`Speaker._on_event`. Both decide synchronously, on trio's thread, so no two
decisions interleave: the queue (:class:`~cadenza.speaker.queue.PlayQueue`) says which entry,
the controller stops what must stop, and to play an entry it opens a :class:`Start`, the one
way a track starts. A start is the slow part: the stream is prepared
(:class:`~cadenza.speaker.playback.Streams`), the start decision waits for enough audio, and
the player gets the buffer. It runs in the task of whoever asked (an HTTP request answers when
the track is audible; an automatic advance runs in the speaker's nursery), inside a cancel
scope the controller owns: there is one start at a time, and the next decision cancels the one
in flight. About ``prefetch_s`` before the end, the controller's timer prepares the next entry
at PREFETCH priority and queues it in the player, which joins it gaplessly; when it becomes
audible its stream is promoted to PLAYING.

Why not a task reading commands from a channel: the decisions need no task (they never wait),
and the hop through one would reorder what happens at one instant in the simulator, whose
figures must not move when the code is only reorganised.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cadenza import links
from cadenza.cache.store import Cache
from cadenza.errors import ApiErrorCode, Conflict, Unavailable, UnknownLink
from cadenza.player.player import (
    Buffering,
    Error,
    Event,
    Player,
    StateChanged,
    TrackEnded,
    TrackStarted,
)
from cadenza.protocol import api
from cadenza.protocol.messages import Priority
from cadenza.session.client import Session
from cadenza.speaker import commands as cmd
from cadenza.speaker.playback import Prepared, Stats, Streams
from cadenza.speaker.queue import PlayQueue, Track
from cadenza.speaker.tracks import KnownTracks, track_summary
from cadenza.stream.engine import PeerNetwork
from cadenza.system.config import StreamingConfig

log = logging.getLogger("cadenza.speaker")

# How often the control plane hears that the position moved (while playing).
POSITION_TICK = 0.25
# Below this much audio buffered ahead of the playhead, uploads to peers pause.
LOW_BUFFER_S = 3.0
# Give up resolving a link after this long (the service may be down).
RESOLVE_TIMEOUT = 10.0


@dataclass(eq=False)
class Start:
    """A track being started: the queue entry, where in it, when it was asked for (start
    latency counts from then), and the scope a newer decision cancels."""

    index: int
    position_ms: int
    requested: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Status(enum.StrEnum):
    STOPPED = "stopped"
    LOADING = "loading"  # a start is waiting for enough audio
    PLAYING = "playing"
    PAUSED = "paused"
    BUFFERING = "buffering"  # playing, but the decoder waits for bytes


class Speaker:
    """Session, streams, queue and player, driven through :meth:`run`'s controller task.

    The awaitable methods (``play``, ``pause``, ...) are the commands' front door: each
    hands its command to :meth:`execute` and, for a start, waits until it is audible."""

    def __init__(
        self,
        *,
        session: Session,
        cache: Cache | None,
        player: Player,
        streaming: StreamingConfig | None = None,
        volume: int = 100,
        max_volume: int = 100,
        metadata_path: Path | None = None,
        normalisation: bool = False,
        overlay: PeerNetwork | None = None,
    ) -> None:
        self.session = session
        self.cache = cache
        self.player = player
        self.playlist = PlayQueue()
        self.streams = Streams(
            session=session,
            cache=cache,
            queue=self.playlist,
            position_ms=lambda: self.player.position_ms(),
            streaming=streaming or StreamingConfig(),
        )
        self.streams.overlay = overlay
        self.streams.normalisation = normalisation
        self.max_volume = max_volume
        self.volume = min(volume, max_volume)
        self.status = Status.STOPPED
        self.current: Prepared | None = None
        self.next: Prepared | None = None
        self.error = ""
        self.position_tick: float | None = POSITION_TICK
        # Metadata of tracks seen, so that a cached track plays with no network at all,
        # also after a restart.
        self.known = KnownTracks(metadata_path)
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._starting: Start | None = None
        self._play_requested_at: dict[str, float] = {}
        self._changed = trio.Event()

    # What the streams own, reachable from here (the daemon's reload, the simulator).
    overlay = property(lambda s: s.streams.overlay, lambda s, v: setattr(s.streams, "overlay", v))
    bitrate = property(lambda s: s.streams.bitrate, lambda s, v: setattr(s.streams, "bitrate", v))
    policy = property(lambda s: s.streams.policy, lambda s, v: setattr(s.streams, "policy", v))
    clock = property(lambda s: s.streams.clock, lambda s, v: setattr(s.streams, "clock", v))
    normalisation = property(
        lambda s: s.streams.normalisation, lambda s, v: setattr(s.streams, "normalisation", v)
    )
    on_prepared = property(
        lambda s: s.streams.on_prepared, lambda s, v: setattr(s.streams, "on_prepared", v)
    )
    on_streamed = property(
        lambda s: s.streams.on_streamed, lambda s, v: setattr(s.streams, "on_streamed", v)
    )

    @property
    def queue(self) -> list[Track]:
        return self.playlist.tracks

    @property
    def index(self) -> int:
        return self.playlist.index

    @property
    def stats(self) -> Stats:
        return self.streams.stats

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.streams.history

    def configure(self, streaming: StreamingConfig, *, bitrate: bool) -> None:
        """New ``[streaming]`` settings, from the next stream on (``bitrate``: its bitrate
        too, else one set over the API stands)."""
        self.streams.streaming = streaming
        self.streams.policy.target = streaming.stutter_target
        if bitrate:
            self.streams.bitrate = streaming.bitrate

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

    # --- the front door ----------------------------------------------------------------------

    async def play(self, uris: list[str], position_ms: int = 0, start_index: int = 0) -> None:
        """Replace the queue with ``uris`` (tracks; albums expand) and play the one at
        ``start_index`` (an album context starting at its third track: 2)."""
        tracks: list[Track] = []
        first_offset = position_ms
        for n, uri in enumerate(uris):
            link = links.parse(uri)
            if n == 0 and link.offset_ms is not None and not position_ms:
                first_offset = link.offset_ms
            tracks.extend(await self._resolve(link))
        if not tracks:
            raise UnknownLink(f"nothing to play in {uris}")
        await self._ask(cmd.Play(tracks, start_index, first_offset))

    async def add_to_queue(self, uris: list[str], position: int | None = None) -> None:
        """Insert tracks (albums expand) at ``position`` (default: the end)."""
        tracks: list[Track] = []
        for uri in uris:
            tracks.extend(await self._resolve(links.parse(uri)))
        await self._ask(cmd.Insert(tracks, position))

    async def next_track(self) -> None:
        await self._ask(cmd.Next())

    async def previous_track(self) -> None:
        await self._ask(cmd.Previous())

    async def pause(self) -> None:
        await self._ask(cmd.Pause())

    async def resume(self) -> None:
        await self._ask(cmd.Resume())

    async def seek(self, position_ms: int) -> None:
        await self._ask(cmd.Seek(position_ms))

    async def set_volume(self, volume: int | None, *, max_volume: int | None = None) -> None:
        await self._ask(cmd.SetVolume(volume, max_volume))

    async def set_repeat(self, mode: str) -> None:
        await self._ask(cmd.SetRepeat(mode))

    async def set_shuffle(self, on: bool) -> None:
        await self._ask(cmd.SetShuffle(on))

    async def move_in_queue(self, source: int, target: int) -> None:
        await self._ask(cmd.Move(source, target))

    async def remove_from_queue(self, index: int) -> None:
        await self._ask(cmd.Remove(index))

    async def clear_queue(self) -> None:
        """Remove everything but the track playing now."""
        await self._ask(cmd.Clear())

    def submit(self, command: cmd.Command) -> None:
        """Carry out ``command`` without waiting for a start it opens (from code that
        cannot wait: a configuration reload)."""
        start = self.execute(command)
        if start is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._carry_out, start)

    async def _ask(self, command: cmd.Command) -> None:
        start = self.execute(command)
        if start is not None:
            await self._carry_out(start, raise_errors=True)

    def player_event(self, event: Event) -> None:
        """The player's event callback (runs on the player's thread; never blocks it)."""
        if trio.lowlevel.in_trio_task():  # a player on trio's thread (the simulator's sink)
            self._on_event(event)
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_event, event)

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        cur = self.current
        p2p = self.overlay.figures() if self.overlay is not None else None
        return {
            "status": self.status,
            "track": track_summary(cur.track) if cur else None,
            "position_ms": self.player.position_ms() if cur else 0,
            "volume": self.volume,
            "max_volume": self.max_volume,
            "shuffle": self.playlist.shuffle,
            "repeat": self.playlist.repeat,
            "index": self.playlist.index,
            "queue": [track_summary(t) for t in self.playlist.tracks],
            "bytes_by_source": dict(self.stats.bytes_by_source),
            "underruns": self.player.underruns,
            "bad_chunks": self.stats.bad_chunks,
            "traffic": self.streams.traffic(p2p),
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

    def traffic(self) -> dict[str, int]:
        return self.streams.traffic()

    def playback_buffer_low(self) -> bool:
        """Our own playback is about to starve: peers must not take our bandwidth now."""
        cur = self.current
        if cur is None or self.status != Status.PLAYING or cur.buffer.complete:
            return False
        bps = cur.stream.bytes_per_second
        playhead = int(self.player.position_ms() / 1000 * bps)
        return cur.buffer.contiguous_from(playhead) < LOW_BUFFER_S * bps

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- the controller ----------------------------------------------------------------------

    def execute(self, c: cmd.Command) -> Start | None:
        """Decide what ``c`` asks; the :class:`Start` it opens, if it plays something (for
        the caller to carry out). Raises a :class:`~cadenza.errors.CadenzaError` (nothing
        changed) when ``c`` cannot be done."""
        q = self.playlist
        match c:
            case cmd.Play(tracks=tracks, start_index=start, position_ms=position):
                return self._start(q.replace(tracks, start), position)
            case cmd.Next():
                nxt = q.following(q.index, user=True)
                if nxt is not None:
                    return self._start(nxt, 0)
                self._stop_all()
            case cmd.Previous():
                return self._start(q.previous(self.player.position_ms()), 0)
            case cmd.Pause() if self.status in (Status.PLAYING, Status.BUFFERING, Status.LOADING):
                self.player.pause()
                self.status = Status.PAUSED
                self._notify()
            case cmd.Resume() if self.status == Status.PAUSED:
                self.player.resume()
                self.status = Status.PLAYING
                self._poke_streams()
                self._notify()
            case cmd.Pause() | cmd.Resume():
                pass
            case cmd.Seek(position_ms=position):
                if self.current is None:
                    raise Conflict("nothing is playing")
                duration = int(self.current.track.get("duration_ms", 0))
                self.player.seek(max(0, min(position, duration)))
                self._poke_streams()
                self._notify()
            case cmd.SetVolume(volume=volume, max_volume=ceiling):
                if ceiling is not None:
                    self.max_volume = ceiling
                wanted = self.volume if volume is None else volume
                self.volume = max(0, min(wanted, self.max_volume))
                self.player.set_volume(self.volume)
                self._notify()
            case cmd.SetRepeat(mode=mode):
                q.set_repeat(mode)
                self._upcoming_changed()
            case cmd.SetShuffle(on=on):
                if q.set_shuffle(on):
                    self._upcoming_changed()
            case cmd.Insert(tracks=tracks, position=position):
                shift = q.insert(tracks, position)
                for p in (self.current, self.next):
                    if p is not None:
                        p.index += shift
                self._upcoming_changed()
            case cmd.Move(source=source, target=target):
                cur = self.current
                q.move(source, target, cur.track if cur is not None else None)
                if cur is not None:
                    cur.index = q.index
                self._upcoming_changed()
            case cmd.Remove(index=index):
                before = q.index
                q.remove(index, playing=self.current is not None)
                if q.index != before and self.current is not None:
                    self.current.index = q.index
                self._upcoming_changed()
            case cmd.Clear():
                keep = self.current is not None and 0 <= q.index < len(q)
                q.clear(playing=keep)
                if keep and self.current is not None:
                    self.current.index = 0
                self._upcoming_changed()
            case _:
                raise TypeError(f"not a speaker command: {c!r}")
        return None

    def _poke_streams(self) -> None:
        """The playhead moves (again): the streams plan from its new place at once."""
        for p in (self.current, self.next):
            if p is not None:
                p.stream.poke()

    def _upcoming_changed(self) -> None:
        """The track after this one may differ now: drop a prefetched one that no longer is."""
        nxt = self.next
        if nxt is not None:
            following = self.playlist.following(self.playlist.index)
            if following is None or self.playlist.tracks[following] is not nxt.track:
                nxt.cancel()
                self.next = None
                self.player.set_next(None)
            else:
                nxt.index = following
        self._notify()

    def _stop_all(self) -> None:
        if self._starting is not None:
            self._starting.scope.cancel()
            self._starting = None
        self.player.stop()
        for p in (self.current, self.next):
            if p is not None:
                p.cancel()
        self.current = self.next = None
        self.status = Status.STOPPED
        self._notify()

    def _start(self, index: int, position_ms: int) -> Start:
        """The one way a track starts: everything else stops, and a start opens."""
        requested = self.clock()
        self._stop_all()
        self.playlist.index = index
        self.status = Status.LOADING
        self.error = ""
        self._notify()
        self.streams.model.begin(self.clock())  # the clock of the throughput model starts now
        start = self._starting = Start(index, position_ms, requested)
        return start

    async def _carry_out(self, start: Start, *, raise_errors: bool = False) -> None:
        """Prepare the stream, wait for enough audio, play: until the track is audible (and
        a short track's successor is prefetched), or a newer decision cancels ``start``."""
        assert self._nursery is not None
        try:
            with start.scope:
                prepared = await self.streams.prepare(
                    self._nursery, start.index, Priority.PLAYING, start.position_ms
                )
                if start.scope.cancel_called:  # a newer decision came while it started
                    prepared.cancel()
                    return
                self.current = prepared
                self._play_requested_at[prepared.key] = start.requested
                await self.streams.wait_start(
                    prepared, start.position_ms, lambda: self.current is prepared
                )
                if self.current is not prepared:
                    return
                self.player.play(self.streams.item(prepared), start.position_ms)
                prepared.stream.playing()
                self.status = Status.PLAYING
                self._notify()
                duration = int(prepared.track.get("duration_ms", 0))
                left_ms = duration - start.position_ms
                if left_ms < self.streams.streaming.prefetch_seconds * 1000:
                    await self._prefetch(prepared)  # a short track: its successor is due now
        except Exception as exc:
            if raise_errors:
                raise
            # Nobody is waiting to hear it (an automatic advance): the state says it.
            log.warning("cannot start %s: %s", self.playlist.tracks[start.index].get("title"), exc)
            if self._starting is start:
                self.status = Status.STOPPED
                self.error = str(exc)
                self._notify()
        finally:
            if self._starting is start:
                self._starting = None

    async def _advance(self, index: int) -> None:
        """The current track ended and its successor was not ready in time: start it (not
        gapless, but it plays)."""
        await self._carry_out(self._start(index, 0))

    async def _prefetch(self, cur: Prepared) -> None:
        assert self._nursery is not None
        following = self.playlist.following(cur.index)
        if self.next is not None or following is None:
            return
        nxt = await self.streams.prepare(self._nursery, following, Priority.PREFETCH)
        if self.current is cur and self.next is None:
            self.next = nxt
            self.player.set_next(self.streams.item(nxt))
            log.info("prefetching %s", nxt.track.get("title"))
        else:
            nxt.cancel()

    async def _tick(self) -> None:
        """The controller's timer: prefetch the next track ``prefetch_s`` before the end, and
        tell the control plane every ``position_tick`` s that the position moved. Sleeps
        while nothing plays (and, with ``position_tick`` None, as in the simulator, until the
        prefetch is due)."""
        while True:
            cur = self.current
            if cur is None or self.status not in (Status.PLAYING, Status.BUFFERING):
                await self._changed.wait()
                continue
            wait = self.position_tick
            if self.next is None and self.playlist.following(cur.index) is not None:
                duration = int(cur.track.get("duration_ms", 0))
                due = (duration - self.player.position_ms()) / 1000
                due -= self.streams.streaming.prefetch_seconds
                if due <= 0:
                    await self._prefetch(cur)
                    continue
                wait = due if wait is None else min(wait, due)
            with trio.move_on_after(wait if wait is not None else math.inf) as timer:
                await self._changed.wait()
            if timer.cancelled_caught and self.position_tick is not None:
                self._notify()  # the position moved

    def _on_event(self, event: Event) -> None:
        match event:
            case TrackStarted(track_key=key, first_sample_written_at=first):
                requested = self._play_requested_at.pop(key, None)
                if requested is not None:
                    self.stats.start_latencies_ms.append(round((first - requested) * 1000, 1))
                    self.stats.start_keys.append(key)
                if self.next is not None and self.next.key == key:
                    old = self.current
                    self.current, self.next = self.next, None
                    self.playlist.index = self.current.index
                    self.streams.promote(self.current)
                    if old is not None:
                        old.scope.cancel()
                self.status = Status.PLAYING
            case TrackEnded(track_key=key):
                cur = self.current
                if cur is not None and cur.key == key and self.next is None:
                    following = self.playlist.following(cur.index)
                    if following is not None and self._nursery is not None:
                        self._nursery.start_soon(self._advance, following)
                    else:
                        self.status = Status.STOPPED
            case Buffering():
                self.status = Status.BUFFERING
            case StateChanged(state=state):
                if state in ("playing", "buffering", "paused"):
                    self.status = Status(state)
                elif state == "stopped" and self.next is None and self.status != Status.LOADING:
                    self.status = Status.STOPPED
            case Error(message=message):
                self.error = message
                log.error("player: %s", self.error)
            case _:
                pass  # underruns: the player counts them
        self._notify()

    # --- links -------------------------------------------------------------------------------

    async def _resolve(self, link: links.Link) -> list[Track]:
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
                cached = self.known.get(link.id)
                if cached is not None:
                    return [cached]
            raise Unavailable(f"the service is not reachable: {exc}") from None
        assert isinstance(reply, api.LookupReply)
        records = [reply.record] if reply.kind == "track" else list(reply.record.get("tracks", []))
        for r in records:
            self.known.remember(r)
        return records
