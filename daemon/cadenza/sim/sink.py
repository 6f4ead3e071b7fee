"""The simulator's audio device: a player that consumes a track's bytes at its bitrate.

:class:`SinkPlayer` has the interface of :class:`cadenza.player.player.Player` that
:class:`cadenza.speaker.Speaker` drives (play, set_next, pause, resume, seek, stop, volume,
position, underruns) and sends it the same events (``TrackStarted``, ``TrackEnded``,
``Buffering``, ``StateChanged``) through the same ``on_event`` callback. Instead of decoding
and writing PCM it moves a playhead through the track's :class:`ChunkBuffer` at the file's
byte rate on trio's clock: when the playhead reaches a chunk that is not there, that is an
underrun (the real player's decoder would block there and the device would run dry), the
buffer is told which chunk is wanted (as the decoder's blocked read tells it), and playback
resumes when the chunk arrives. Gapless: at a track's end the next one starts at once.

It wakes only when something can change: a command, the moment the bytes present run out, or
(while starved) a short poll for the missing chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from cadenza.player.player import (
    Buffering,
    PlayerState,
    StateChanged,
    TrackEnded,
    TrackStarted,
)
from cadenza.stream.buffer import ChunkBuffer

# While starved, look for the missing chunk this often (virtual seconds).
STARVED_POLL = 0.05


@dataclass
class Played:
    """One track's life in the sink (what the swarm's figures are made of)."""

    key: str
    requested_ms: int
    started_at: float | None = None
    ended_at: float | None = None
    underruns: int = 0
    stalled_s: float = 0.0
    end_byte: int = 0  # the furthest the playhead got
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class SinkPlayer:
    def __init__(self, bytes_per_second: float) -> None:
        self.bps = bytes_per_second
        self.on_event: Callable[[Any], None] | None = None
        self._underruns = 0
        self._volume = 100
        self._item: Any = None
        self._next: Any = None
        self._record: Played | None = None
        self._pos = 0.0  # bytes into the current track at self._t0
        self._t0 = 0.0
        self._running = False  # the playhead moves (playing, not paused, not starved)
        self._paused = False
        self._starved_since: float | None = None
        self._wake = trio.Event()
        self.finished: list[Played] = []
        self.state = PlayerState.STOPPED

    # --- the Player interface --------------------------------------------------------------

    @property
    def underruns(self) -> int:
        return self._underruns

    @property
    def volume(self) -> int:
        return self._volume

    def set_volume(self, level: int) -> None:
        self._volume = level

    def alive(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        self.stop()

    def play(self, item: Any, position_ms: int = 0) -> None:
        self._finish_record()
        self._item = item
        self._next = None
        self._record = Played(item.key, position_ms, size=item.buffer.size)
        self._pos = min(position_ms / 1000 * self.bps, item.buffer.size)
        self._t0 = trio.current_time()
        self._paused = False
        self._running = False
        self._starved_since = None
        self._poke()

    def set_next(self, item: Any) -> None:
        self._next = item

    def pause(self) -> None:
        if self._item is not None and not self._paused:
            self._freeze()
            self._paused = True
            self._set_state(PlayerState.PAUSED)
            self._poke()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._t0 = trio.current_time()
            self._poke()

    def seek(self, position_ms: int) -> None:
        if self._item is not None:
            self._freeze()
            self._pos = min(position_ms / 1000 * self.bps, self._item.buffer.size)
            self._running = False
            self._poke()

    def stop(self) -> None:
        self._finish_record()
        self._item = self._next = None
        self._running = self._paused = False
        self._starved_since = None
        self._set_state(PlayerState.STOPPED)
        self._poke()

    def position_ms(self) -> int:
        return int(self._position() / self.bps * 1000) if self._item is not None else 0

    # --- the clock-paced device ------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[SinkPlayer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        while True:
            wait = self._step()
            if wait is None:
                await self._wake.wait()
            else:
                with trio.move_on_after(wait):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()

    def _step(self) -> float | None:
        """Advance the state to now; the seconds until something changes (None: a command)."""
        item = self._item
        if item is None or self._paused:
            return None
        now = trio.current_time()
        buffer: ChunkBuffer = item.buffer
        pos = self._position()
        if pos >= buffer.size:
            self._end_of_track(now)
            return 0.0 if self._item is not None else None
        avail = buffer.contiguous_from(int(pos))
        if avail <= 0 or buffer.closed:
            if self._running or self._starved_since is None:
                self._freeze()
                self._running = False
                self._starved_since = now
                rec = self._record
                if rec is not None and rec.started_at is not None:
                    self._underruns += 1
                    rec.underruns += 1
                    self._emit(Buffering(item.key))
                    self._set_state(PlayerState.BUFFERING)
                # Tell the stream which chunk the "decoder" waits for, as a blocked read does.
                buffer.want(int(pos) // buffer.chunk_size)
            return STARVED_POLL
        if not self._running:
            rec = self._record
            if rec is not None:
                if self._starved_since is not None and rec.started_at is not None:
                    rec.stalled_s += now - self._starved_since
                if rec.started_at is None:
                    rec.started_at = now
                    self._emit(TrackStarted(item.key, now))
            self._starved_since = None
            self._running = True
            self._t0, self._pos = now, pos
            self._set_state(PlayerState.PLAYING)
        return max(min(avail, buffer.size - pos) / self.bps, 1e-6)

    def _end_of_track(self, now: float) -> None:
        item = self._item
        self._finish_record(ended=now)
        self._emit(TrackEnded(item.key))
        nxt, self._next = self._next, None
        self._item = nxt
        self._running = False
        self._starved_since = None
        if nxt is None:
            self._set_state(PlayerState.STOPPED)
            return
        self._record = Played(nxt.key, 0, size=nxt.buffer.size)
        self._pos, self._t0 = 0.0, now

    def finish_playing_record(self) -> None:
        """Close the record of the track playing now, up to now (it goes to ``finished``)."""
        if self._record is not None:
            self._finish_record()

    def _finish_record(self, ended: float | None = None) -> None:
        rec = self._record
        if rec is not None:
            rec.end_byte = int(self._position()) if self._item is not None else rec.end_byte
            rec.ended_at = ended if ended is not None else trio.current_time()
            if self._starved_since is not None and rec.started_at is not None:
                rec.stalled_s += rec.ended_at - self._starved_since
            self.finished.append(rec)
        self._record = None

    def _position(self) -> float:
        if self._running and not self._paused:
            pos = self._pos + (trio.current_time() - self._t0) * self.bps
            size = self._item.buffer.size if self._item is not None else math.inf
            return min(pos, size)
        return self._pos

    def _freeze(self) -> None:
        self._pos = self._position()
        self._t0 = trio.current_time()

    def _set_state(self, state: PlayerState) -> None:
        if state != self.state:
            self.state = state
            self._emit(StateChanged(state))

    def _emit(self, event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _poke(self) -> None:
        self._wake.set()
