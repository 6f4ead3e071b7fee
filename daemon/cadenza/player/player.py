"""The player: a track and what follows it, decoded, scaled and written to the device gaplessly.

One thread (``cadenza-player``) does everything, a period at a time: decode into the
period buffer, apply the volume, write to the device (which blocks while the device is
full). Decoding a period takes a fraction of a millisecond, so a second thread with a
PCM queue between them would only add latency to pause and seek and a second place where
position is lost; the device's ring buffer is the only PCM queue, and the encoded bytes
are already buffered in memory by the stream buffer (a stall there stalls any number of
threads alike). The public methods only queue a command and wake the thread, so they
never block and may be called from any thread, trio's included; a command that must not
wait for a stalled read (play, seek, pause, stop) also cancels that read.

Gapless: when the track being decoded ends, the next one (:meth:`Player.set_next`) is
opened and its first frames go into the same period right after the last frames of the
previous one, into the same open PCM: no gap, no overlap. If the next track has another
rate or channel count, the device is drained and reopened at that one boundary (not
gapless). :meth:`Player.set_next` must be called before the current track's decoding
ends (right after its :class:`TrackStarted` is the natural moment); the queue ends, and
the device drains, when there is nothing next at that point.

Events go to ``on_event``, called from the player's thread (the daemon hands them to
trio with ``trio.from_thread.run_sync``). They describe the writing side: a track has
started when its first frame was written to the device, ended when its last frame was
(and, at the end of the queue, played out). :meth:`Player.position_ms` describes what is
audible: frames written minus those still queued in the device.

Pause keeps the device's queue where the device can pause (ALSA ``snd_pcm_pause``);
otherwise the queue is dropped and decoding steps back by as many frames of the current
track, so that playback resumes at the same sample either way (only frames of the
previous track still queued right after a gapless boundary are lost then).
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cadenza.player.decoder import POLL_INTERVAL as DECODER_POLL_INTERVAL
from cadenza.player.decoder import DecodeCancelled, DecodeError, DecoderSource, VorbisDecoder
from cadenza.player.output import (
    BYTES_PER_SAMPLE,
    DEFAULT_PERIOD_FRAMES,
    DEFAULT_PERIODS,
    AlsaOutput,
    ClockPacedOutput,
    Output,
    OutputError,
)
from cadenza.player.volume import DEFAULT_RANGE_DB, SoftwareVolume, Volume
from cadenza.stream.buffer import BufferClosed

__all__ = [
    "Buffering",
    "Error",
    "Event",
    "PlayItem",
    "Playable",
    "Player",
    "PlayerState",
    "StateChanged",
    "TrackEnded",
    "TrackStarted",
    "Underrun",
]

log = logging.getLogger(__name__)

# The format a device is tried with before any track is known: what most tracks are.
PROBE_RATE = 44100
PROBE_CHANNELS = 2


class PlayerState(enum.StrEnum):
    STOPPED = "stopped"
    PLAYING = "playing"
    PAUSED = "paused"
    BUFFERING = "buffering"  # playing, but the decoder waits for bytes


class Playable(Protocol):
    """A track to play: its key (reported back in events) and its encoded bytes."""

    @property
    def key(self) -> str: ...
    @property
    def buffer(self) -> DecoderSource: ...


@dataclass(frozen=True)
class PlayItem:
    """A track to play. ``replaygain_db``/``peak`` (0..1) normalise it when given."""

    key: str
    buffer: DecoderSource
    replaygain_db: float | None = None
    peak: float | None = None


@dataclass(frozen=True)
class TrackStarted:
    track_key: str
    first_sample_written_at: float  # time.monotonic() when the write holding it returned


@dataclass(frozen=True)
class TrackEnded:
    track_key: str


@dataclass(frozen=True)
class Buffering:
    track_key: str  # a read of this track's bytes is waiting for the stream


@dataclass(frozen=True)
class Underrun:
    count: int  # underruns so far


@dataclass(frozen=True)
class Error:
    track_key: str | None
    message: str


@dataclass(frozen=True)
class StateChanged:
    state: PlayerState


Event = TrackStarted | TrackEnded | Buffering | Underrun | Error | StateChanged


@dataclass
class _Track:
    item: Playable
    start_ms: int = 0
    decoder: VorbisDecoder | None = None
    seek_frame: int | None = None  # where decoding continues next (applied lazily)
    eof: bool = False

    @property
    def key(self) -> str:
        return self.item.key


@dataclass(frozen=True)
class _Segment:
    """From the ``start``-th frame written, the device plays ``key`` from ``start_ms``."""

    start: int
    key: str
    start_ms: float
    rate: int


@dataclass(frozen=True)
class _Snapshot:
    """The device as last seen by the player's thread (position is asked from others)."""

    written: int
    delay: int
    at: float
    running: bool


_STARTED, _ENDED = "started", "ended"


@dataclass(frozen=True)
class _Play:
    item: Playable
    position_ms: int


@dataclass(frozen=True)
class _SetNext:
    item: Playable | None


@dataclass(frozen=True)
class _Seek:
    position_ms: int


@dataclass(frozen=True)
class _Ping:
    answered: threading.Event


class _Do(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    CLOSE = "close"


_Command = _Play | _SetNext | _Seek | _Ping | _Do


class Player:
    """Plays :class:`Playable` tracks on ``output``. Starts its thread at once;
    :meth:`close` stops it and closes the output. ``on_event`` may also be set later (it
    is read for every event).

    Why one class of this length: it owns the audio thread; every method is either that
    thread's loop (decode, write a period, join the next track gaplessly) or a thread-safe
    command into it, and they share the thread's state; the decoder, the output and the volume
    curve are apart (:mod:`~cadenza.player.decoder`, :mod:`~cadenza.player.output`,
    :mod:`~cadenza.player.volume`).
    """

    def __init__(
        self,
        output: Output,
        *,
        volume: Volume | None = None,
        on_event: Callable[[Event], None] | None = None,
        poll_interval: float = DECODER_POLL_INTERVAL,
    ) -> None:
        self._output = output
        self._volume: Volume = volume if volume is not None else SoftwareVolume()
        self.on_event = on_event
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._commands: collections.deque[_Command] = collections.deque()
        self._cancel = threading.Event()  # makes a decoder read that waits give up
        # Read by other threads (under the lock for the position), written by ours.
        self._state = PlayerState.STOPPED
        self._underruns = 0
        self._segments: collections.deque[_Segment] = collections.deque()
        self._snap = _Snapshot(0, 0, time.monotonic(), False)
        # The player thread's own.
        self._cur: _Track | None = None
        self._next_item: Playable | None = None
        self._written = 0  # frames written since the player was made
        self._rate = 0
        self._frame_bytes = 0
        self._period = bytearray()
        self._period_view = memoryview(self._period)
        self._filled = 0  # bytes of the period decoded and not yet written
        self._scaled = 0  # of those, bytes the volume was already applied to
        self._pending: list[tuple[str, str]] = []  # events due once the period is written
        self._thread = threading.Thread(target=self._run, name="cadenza-player", daemon=True)
        self._thread.start()

    @classmethod
    def open_first(
        cls,
        devices: Sequence[str],
        *,
        period_frames: int = DEFAULT_PERIOD_FRAMES,
        periods: int = DEFAULT_PERIODS,
        volume_range_db: float = DEFAULT_RANGE_DB,
        on_event: Callable[[Event], None] | None = None,
        volume: Volume | None = None,
    ) -> tuple[Player, str]:
        """A player (software volume) on the first of ``devices`` that opens for 44.1 kHz
        stereo, and that device's name. The ALSA ``null`` device is paced by the clock.
        Raises :class:`OutputError` naming why each device failed."""
        failures = []
        for device in devices:
            alsa = AlsaOutput(device, period_frames=period_frames, periods=periods)
            output: Output = ClockPacedOutput(alsa) if device == "null" else alsa
            try:
                output.open(PROBE_RATE, PROBE_CHANNELS)
            except OutputError as exc:
                failures.append(str(exc))
                continue
            chosen = volume if volume is not None else SoftwareVolume(range_db=volume_range_db)
            return cls(output, volume=chosen, on_event=on_event), device
        raise OutputError("no audio device could be opened: " + "; ".join(failures or ["none"]))

    # --- control (any thread) ------------------------------------------------------------

    def play(self, item: Playable, position_ms: int = 0) -> None:
        """Play ``item`` from ``position_ms`` now, instead of anything else; forgets what
        was set to follow."""
        self._command(_Play(item, max(0, position_ms)), cancel=True)

    def set_next(self, item: Playable | None) -> None:
        """What follows the current track, gaplessly (None: nothing)."""
        self._command(_SetNext(item), cancel=False)

    def pause(self) -> None:
        self._command(_Do.PAUSE, cancel=True)

    def resume(self) -> None:
        self._command(_Do.RESUME, cancel=False)

    def seek(self, position_ms: int) -> None:
        """Continue the track being decoded at ``position_ms`` (paused stays paused)."""
        self._command(_Seek(max(0, position_ms)), cancel=True)

    def stop(self) -> None:
        self._command(_Do.STOP, cancel=True)

    def set_volume(self, level: int) -> None:
        """0..100 (see :mod:`cadenza.player.volume`); takes effect with the next period."""
        self._volume.set_level(level)

    def alive(self, timeout: float) -> bool:
        """True if the player's thread answers within ``timeout`` seconds (it takes commands
        between periods, so a thread stuck in a write or a read never does). Blocks: call it
        from a worker thread."""
        if not self._thread.is_alive():
            return False
        ping = _Ping(threading.Event())
        self._command(ping, cancel=False)
        return ping.answered.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop, end the thread and close the output (from ``on_event`` too: then
        without waiting for the thread)."""
        if self._thread.is_alive():
            self._command(_Do.CLOSE, cancel=True)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)

    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- state (any thread) --------------------------------------------------------------

    @property
    def state(self) -> PlayerState:
        return self._state

    @property
    def underruns(self) -> int:
        return self._underruns

    @property
    def output(self) -> Output:
        """The device this player writes to."""
        return self._output

    @property
    def volume(self) -> int:
        return self._volume.level

    def position_ms(self) -> int:
        """Position of what is audible now in its track (0 when stopped)."""
        segment, ms = self._audible()
        return 0 if segment is None else int(ms)

    @property
    def current_key(self) -> str | None:
        """The key of the track that is audible now (None when stopped)."""
        segment, _ = self._audible()
        return None if segment is None else segment.key

    def _audible(self) -> tuple[_Segment | None, float]:
        with self._lock:
            if self._state is PlayerState.STOPPED or not self._segments:
                return None, 0.0
            snap = self._snap
            audible = snap.written - snap.delay
            if snap.running and self._rate:
                elapsed = int((time.monotonic() - snap.at) * self._rate)
                audible = min(snap.written, audible + elapsed)
            segment = self._segments[0]
            for candidate in self._segments:
                if candidate.start > audible:
                    break
                segment = candidate
        if not segment.rate:
            return segment, segment.start_ms
        return segment, segment.start_ms + max(0, audible - segment.start) * 1000 / segment.rate

    # --- the thread ----------------------------------------------------------------------

    def _command(self, command: _Command, *, cancel: bool) -> None:
        with self._wake:
            self._commands.append(command)
            if cancel:
                self._cancel.set()
            self._wake.notify()

    def _take_command(self) -> _Command | None:
        with self._wake:
            while not self._commands and not self._active():
                self._wake.wait()
            if not self._commands:
                return None
            command = self._commands.popleft()
            if not self._commands:
                self._cancel.clear()
            return command

    def _active(self) -> bool:
        return self._cur is not None and self._state in (
            PlayerState.PLAYING,
            PlayerState.BUFFERING,
        )

    def _run(self) -> None:
        try:
            while True:
                command = self._take_command()
                if command is None:
                    self._guarded(self._step)
                elif command is _Do.CLOSE:
                    break
                else:
                    self._guarded(self._handle, command)
        finally:
            self._abandon()
            self._output.close()
            self._set_state(PlayerState.STOPPED)

    def _guarded(self, func: Callable[..., None], *args: object) -> None:
        try:
            func(*args)
        except DecodeCancelled:
            pass  # a command is waiting; what was interrupted is retried after it
        except OutputError as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.exception("player failed")
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        key = self._cur.key if self._cur is not None else None
        self._emit(Error(key, message))
        self._abandon()
        self._set_state(PlayerState.STOPPED)

    def _handle(self, command: _Command) -> None:
        match command:
            case _Play(item, position_ms):
                self._abandon()
                track = _Track(item, start_ms=position_ms)
                self._cur = track
                self._pending = [(_STARTED, track.key)]
                with self._lock:
                    self._segments = collections.deque(
                        [_Segment(self._written, track.key, position_ms, 0)]
                    )
                self._set_state(PlayerState.PLAYING)
            case _SetNext(item):
                self._next_item = item
            case _Ping(answered):
                answered.set()
            case _Seek(position_ms):
                self._seek(position_ms)
            case _Do.PAUSE:
                if self._state in (PlayerState.PLAYING, PlayerState.BUFFERING):
                    self._step_back(self._output.pause())
                    self._snapshot(running=False)
                    self._set_state(PlayerState.PAUSED)
            case _Do.RESUME:
                if self._state is PlayerState.PAUSED:
                    self._step_back(self._output.resume())
                    self._snapshot(running=True)
                    self._set_state(PlayerState.PLAYING)
            case _Do.STOP:
                self._abandon()
                self._set_state(PlayerState.STOPPED)

    def _seek(self, position_ms: int) -> None:
        track = self._cur
        if track is None:
            return
        self._output.drop()
        self._filled = self._scaled = 0
        track.eof = False
        if track.decoder is None:
            track.start_ms = position_ms
            segment = _Segment(self._written, track.key, position_ms, 0)
        else:
            decoder = track.decoder
            frame = min(decoder.total_frames, position_ms * decoder.rate // 1000)
            track.seek_frame = frame
            segment = _Segment(self._written, track.key, frame * 1000 / decoder.rate, decoder.rate)
        with self._lock:
            self._segments = collections.deque([segment])
        self._snapshot(running=self._state is not PlayerState.PAUSED)

    def _step_back(self, discarded: int) -> None:
        """The device dropped its last ``discarded`` frames: decode those of the current
        track again."""
        track = self._cur
        if not discarded or track is None or track.decoder is None or not self._segments:
            return
        own = min(discarded, self._written - self._segments[-1].start)
        if own <= 0:
            return
        base = track.decoder.tell() if track.seek_frame is None else track.seek_frame
        track.seek_frame = base - self._filled // self._frame_bytes - own
        track.eof = False
        self._filled = self._scaled = 0
        self._written -= own

    def _step(self) -> None:
        """Decode up to one period (across a gapless boundary) and write it."""
        track = self._cur
        if track is None:
            return
        if track.decoder is None and not self._begin(track):
            return
        decoder = track.decoder
        assert decoder is not None
        if track.seek_frame is not None:
            decoder.seek(track.seek_frame)
            track.seek_frame = None
        while self._filled < len(self._period):
            if track.eof:
                following = self._open_next()
                if following is None:
                    break
                assert following.decoder is not None
                if (following.decoder.rate, following.decoder.channels) != (
                    decoder.rate,
                    decoder.channels,
                ):
                    # Another format: this one boundary is not gapless.
                    self._end_track(track, drain=True)
                    self._cur = following
                    self._pending = [(_STARTED, following.key)]
                    self._begin(following)
                    return
                self._boundary(track, following)
                track, decoder = following, following.decoder
                continue
            try:
                frames = decoder.read_into(self._period_view[self._filled :])
            except (DecodeError, BufferClosed, OSError) as exc:
                self._superseded(exc)
                self._emit(Error(track.key, f"{type(exc).__name__}: {exc}"))
                frames = 0
            if frames == 0:
                track.eof = True
            self._filled += frames * self._frame_bytes
        if self._state is PlayerState.BUFFERING:
            self._set_state(PlayerState.PLAYING)
        if track.eof and self._next_item is None:
            self._end_track(track, drain=True)
            self._cur = None
            with self._lock:
                self._segments.clear()
            self._set_state(PlayerState.STOPPED)
        elif self._filled:
            self._write_period()

    def _begin(self, track: _Track) -> bool:
        """Open the track (if not yet) and the device for its format; False if it failed."""
        try:
            if track.decoder is None:
                track.decoder = self._open_decoder(track.item)
            decoder = track.decoder
            self._ensure_format(decoder.rate, decoder.channels)
        except (DecodeError, BufferClosed, OSError, OutputError) as exc:
            self._superseded(exc)
            self._emit(Error(track.key, f"{type(exc).__name__}: {exc}"))
            self._abandon()
            self._set_state(PlayerState.STOPPED)
            return False
        start = 0
        if track.start_ms:
            start = min(decoder.total_frames, track.start_ms * decoder.rate // 1000)
            track.seek_frame = start
        with self._lock:
            segment = _Segment(self._written, track.key, start * 1000 / decoder.rate, decoder.rate)
            self._segments = collections.deque([segment])
        self._set_replaygain(track.item)
        return True

    def _superseded(self, exc: BaseException) -> None:
        """A failure while a command waits (typically: the engine closed the buffer of the
        track that ``play`` replaces) is the command's business, not an error."""
        if self._cancel.is_set():
            raise DecodeCancelled("superseded by a command") from exc

    def _open_decoder(self, item: Playable) -> VorbisDecoder:
        return VorbisDecoder(
            item.buffer,
            cancel=self._cancel,
            on_wait=functools.partial(self._waiting, item.key),
            poll_interval=self._poll,
        )

    def _open_next(self) -> _Track | None:
        item = self._next_item
        if item is None:
            return None
        try:
            decoder = self._open_decoder(item)  # DecodeCancelled: retried, item kept
        except (DecodeError, BufferClosed, OSError) as exc:
            self._superseded(exc)
            self._next_item = None
            self._emit(Error(item.key, f"{type(exc).__name__}: {exc}"))
            return None
        self._next_item = None
        return _Track(item, decoder=decoder)

    def _ensure_format(self, rate: int, channels: int) -> None:
        self._output.open(rate, channels)
        frame_bytes = channels * BYTES_PER_SAMPLE
        size = self._output.period_frames * frame_bytes
        if (rate, frame_bytes, size) != (self._rate, self._frame_bytes, len(self._period)):
            self._period = bytearray(size)
            self._period_view = memoryview(self._period)
            self._filled = self._scaled = 0
            with self._lock:
                self._rate = rate
            self._frame_bytes = frame_bytes

    def _boundary(self, ended: _Track, following: _Track) -> None:
        """``following`` continues in this very period, right after ``ended``."""
        self._scale_filled()  # the ended track's frames, at its own normalisation
        assert ended.decoder is not None and following.decoder is not None
        ended.decoder.close()
        self._pending += [(_ENDED, ended.key), (_STARTED, following.key)]
        start = self._written + self._filled // self._frame_bytes
        with self._lock:
            self._segments.append(_Segment(start, following.key, 0, following.decoder.rate))
        self._cur = following
        self._set_replaygain(following.item)

    def _end_track(self, track: _Track, *, drain: bool) -> None:
        if self._filled:
            self._write_period()
        if drain:
            self._output.drain()
            self._snapshot(running=False, delay=0)
        self._flush_pending(time.monotonic())
        self._emit(TrackEnded(track.key))
        if track.decoder is not None:
            track.decoder.close()

    def _write_period(self) -> None:
        self._scale_filled()
        frames = self._output.write(self._period_view[: self._filled])
        self._written += frames
        self._filled = self._scaled = 0
        now = time.monotonic()
        self._snapshot(running=True)
        underruns = self._output.underruns
        if underruns != self._underruns:
            self._underruns = underruns
            self._emit(Underrun(underruns))
        self._flush_pending(now)

    def _scale_filled(self) -> None:
        if self._scaled < self._filled:
            self._volume.apply(self._period_view[self._scaled : self._filled])
            self._scaled = self._filled

    def _flush_pending(self, written_at: float) -> None:
        pending, self._pending = self._pending, []
        for kind, key in pending:
            self._emit(TrackStarted(key, written_at) if kind == _STARTED else TrackEnded(key))

    def _snapshot(self, *, running: bool, delay: int | None = None) -> None:
        delay = self._output.delay_frames() if delay is None else delay
        with self._lock:
            self._snap = _Snapshot(self._written, delay, time.monotonic(), running)
            audible = self._written - delay
            while len(self._segments) > 1 and self._segments[1].start <= audible:
                self._segments.popleft()

    def _set_replaygain(self, item: Playable) -> None:
        self._volume.set_replaygain(
            getattr(item, "replaygain_db", None), getattr(item, "peak", None)
        )

    def _abandon(self) -> None:
        """Silence at once and forget the tracks."""
        self._output.drop()
        for track in (self._cur,):
            if track is not None and track.decoder is not None:
                track.decoder.close()
        self._cur = None
        self._next_item = None
        self._filled = self._scaled = 0
        self._pending = []
        with self._lock:
            self._segments.clear()
        self._snapshot(running=False, delay=0)

    def _waiting(self, key: str) -> None:
        if self._state is PlayerState.PLAYING:
            self._set_state(PlayerState.BUFFERING)
        self._emit(Buffering(key))

    def _set_state(self, state: PlayerState) -> None:
        if state is not self._state:
            self._state = state
            self._emit(StateChanged(state))

    def _emit(self, event: Event) -> None:
        on_event = self.on_event
        if on_event is None:
            return
        try:
            on_event(event)
        except Exception:
            log.exception("on_event failed for %r", event)
