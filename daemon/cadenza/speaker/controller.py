"""The speaker's controller: the one owner of what plays, as the player owns its thread.

Everything that changes what the speaker does is a command (:mod:`cadenza.speaker.commands`)
handed to one method, :meth:`Controller.execute`, from the HTTP API, the board's buttons, the
simulator's listeners, or the speaker itself when a track ends; the player's events arrive at
one other, :meth:`Controller._on_event`. Both decide synchronously, on trio's thread, so no two
decisions interleave: the queue (:class:`~cadenza.speaker.queue.PlayQueue`) says which entry,
the controller stops what must stop, and to play an entry it opens a :class:`Start`, the one
way a track starts. A start is the slow part: the stream is prepared
(:class:`~cadenza.speaker.playback.Streams`), the start decision waits for enough audio, and
the player gets the buffer. It runs in the task of whoever asked (an HTTP request answers once
the player has the track; an automatic advance runs in the speaker's nursery), inside a cancel
scope the controller owns: there is one start at a time, and the next decision cancels the one
in flight. About ``prefetch_s`` before the end, the controller's timer prepares the next entry
at PREFETCH priority and queues it in the player, which joins it gaplessly; when it becomes
audible its stream is promoted to PLAYING.

Why not a task reading commands from a channel: the decisions need no task (they never wait),
and the hop through one would reorder what happens at one instant in the simulator, whose
figures must not move when the code is only reorganised.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import trio

from cadenza.cache.store import Cache
from cadenza.errors import Conflict
from cadenza.player.player import (
    Buffering,
    Error,
    Event,
    Player,
    StateChanged,
    TrackEnded,
    TrackStarted,
)
from cadenza.protocol.messages import Priority
from cadenza.session.client import Session
from cadenza.speaker import commands as cmd
from cadenza.speaker.playback import Prepared, Streams
from cadenza.speaker.queue import PlayQueue, Track
from cadenza.speaker.tracks import KnownTracks
from cadenza.stream.engine import PeerNetwork
from cadenza.system.config import StreamingConfig

log = logging.getLogger("cadenza.speaker")

# How often the control plane hears that the position moved (while playing).
POSITION_TICK = 0.25


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


class Controller:
    """What plays: the queue, the current and prefetched tracks, the status, the volume;
    changed only by :meth:`execute` (commands), :meth:`_on_event` (the player) and the
    starts and timer they open. :class:`~cadenza.speaker.speaker.Speaker` is its face."""

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
                # Paused while it loaded: loading again, and the start plays it when ready.
                loading = self._starting is not None and self.current is None
                self.status = Status.LOADING if loading else Status.PLAYING
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
                self._follow_current()
            case cmd.Move(source=source, target=target):
                q.move(source, target, self._current_entry())
                self._follow_current()
            case cmd.Remove(index=index):
                q.remove(index, playing=self._current_entry() is not None)
                self._follow_current()
            case cmd.Clear():
                keep = self._current_entry() is not None and 0 <= q.index < len(q)
                q.clear(playing=keep)
                self._follow_current()
            case _:
                raise TypeError(f"not a speaker command: {c!r}")
        return None

    def _current_entry(self) -> Track | None:
        """The queue entry playing or being started (None: neither)."""
        if self.current is not None:
            return self.current.track
        if self._starting is not None and 0 <= self.playlist.index < len(self.playlist):
            return self.playlist.tracks[self.playlist.index]
        return None

    def _follow_current(self) -> None:
        """The queue changed around the entry playing (or starting): its index follows it."""
        if self.current is not None:
            self.current.index = self.playlist.index
        if self._starting is not None:
            self._starting.index = self.playlist.index
        self._upcoming_changed()

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
        requested = self.streams.clock()
        self._stop_all()
        self.playlist.index = index
        self.status = Status.LOADING
        self.error = ""
        self._notify()
        # The clock of the throughput model starts now.
        self.streams.model.begin(self.streams.clock())
        start = self._starting = Start(index, position_ms, requested)
        return start

    async def _carry_out(self, start: Start, *, raise_errors: bool = False) -> None:
        """Prepare the stream, wait for enough audio, play: until the player has the track
        (and a short track's successor is prefetched), or a newer decision cancels ``start``."""
        assert self._nursery is not None
        try:
            with start.scope:
                prepared = await self.streams.prepare(
                    self._nursery, start.index, Priority.PLAYING, start.position_ms
                )
                if start.scope.cancel_called:  # a newer decision came while it started
                    prepared.cancel()
                    return
                prepared.index = start.index  # the queue may have changed around it meanwhile
                self.current = prepared
                self._play_requested_at[prepared.key] = start.requested
                await self.streams.wait_start(
                    prepared, start.position_ms, lambda: self.current is prepared
                )
                if self.current is not prepared:
                    return
                paused = self.status == Status.PAUSED  # paused while it loaded: stays paused
                self.player.play(self.streams.item(prepared), start.position_ms)
                prepared.stream.playing()
                if paused:
                    self.player.pause()
                else:
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
                    stats = self.streams.stats
                    stats.start_latencies_ms.append(round((first - requested) * 1000, 1))
                    stats.start_keys.append(key)
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
