"""The audio device: an ALSA PCM through pyalsaaudio, and clock pacing for when there is none.

:class:`AlsaOutput` plays interleaved S16_LE on an ALSA PCM with blocking writes. What
ALSA (1.2.8, pyalsaaudio 0.11) does here, as measured:

* pyalsaaudio asks for the rate with ``set_rate_near``: a device that cannot play the
  rate silently gets another. :meth:`AlsaOutput.open` reads the configured rate back and
  raises :class:`UnsupportedFormat` rather than playing at the wrong speed; the caller
  decides whether to resample.
* pyalsaaudio 0.11 has no ``delay()``: the frames queued in the device are
  ``buffer_size - avail()`` (the ring buffer; a codec's own latency is not included).
* An underrun leaves the PCM in the XRUN state. pyalsaaudio's ``write`` has handled that
  differently from release to release (re-prepare silently, raise "Broken pipe", return
  ``-EPIPE``), so :meth:`AlsaOutput.write` looks at the state itself before writing:
  XRUN is counted and the PCM re-armed (``drop``; the next write prepares it); a write
  that fails with EPIPE either way is counted and the same frames are written again.
* ``PCM.close()`` drains (waits until everything queued has played); ``close`` here drops
  first so that it is instant, ``drain`` is explicit.
* ALSA ``null`` consumes everything at once, never underruns and reports an empty queue.
  So does the ``file`` plugin over ``null``, which records what the application writes
  at the moment it writes it (dropped frames included, silence never inserted). A file
  plugin piping into a rate-limited pipe (``pv -L``) paces the writes, but ALSA still
  reports an empty queue and no underruns: the frames wait in the pipe.

:class:`ClockPacedOutput` wraps an output that consumes at once (``null``, a capture
file) and behaves like a sound card: writes block to keep at most one buffer ahead of a
clock running at the sample rate, the queue drains in real time, and a writer that falls
behind gets an underrun, so that position and prefetch stay true without a card.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "AlsaOutput",
    "ClockPacedOutput",
    "Output",
    "OutputError",
    "UnsupportedFormat",
]

BYTES_PER_SAMPLE = 2  # S16_LE only: what the decoder produces
DEFAULT_PERIOD_FRAMES = 1024  # 23 ms at 44.1 kHz: one write, one volume pass
DEFAULT_PERIODS = 4  # 93 ms queued: enough to ride out a slow decode, short enough to seek
_EPIPE_TEXT = os.strerror(errno.EPIPE)  # how ALSA words an underrun (snd_strerror)


class OutputError(Exception):
    """The device could not be opened or stopped working."""


class UnsupportedFormat(OutputError):
    """The device opened, but not at the rate or channel count asked for."""

    def __init__(self, device: str, rate: int, channels: int, got_rate: int, got_channels: int):
        self.device = device
        self.rate, self.channels = rate, channels
        self.got_rate, self.got_channels = got_rate, got_channels
        super().__init__(
            f"ALSA device {device!r} cannot play {rate} Hz with {channels} channel(s) "
            f"(it offers {got_rate} Hz, {got_channels} channel(s)): resample, or use a "
            f"'plug' device"
        )


class Output(Protocol):
    """What the player needs from a device (:class:`AlsaOutput`, :class:`ClockPacedOutput`)."""

    @property
    def rate(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def period_frames(self) -> int: ...
    @property
    def buffer_frames(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def is_open(self) -> bool: ...

    def open(self, rate: int, channels: int) -> None: ...
    def write(self, pcm: bytes | bytearray | memoryview) -> int: ...
    def delay_frames(self) -> int: ...
    def pause(self) -> int: ...
    def resume(self) -> int: ...
    def drain(self) -> None: ...
    def drop(self) -> None: ...
    def close(self) -> None: ...


def _alsaaudio() -> Any:
    # Imported where a PCM is opened: ALSA reads its configuration at first use.
    import alsaaudio

    return alsaaudio


class AlsaOutput:
    """An ALSA playback PCM in S16_LE, opened for one rate and channel count at a time.

    Not thread-safe: one thread (the player's) calls everything.
    """

    def __init__(
        self,
        device: str = "default",
        *,
        period_frames: int = DEFAULT_PERIOD_FRAMES,
        periods: int = DEFAULT_PERIODS,
    ) -> None:
        if period_frames <= 0 or periods < 2:
            raise ValueError("need period_frames > 0 and at least 2 periods")
        self.device = device
        self._want_period = period_frames
        self._want_periods = periods
        self._pcm: Any = None
        self._rate = 0
        self._channels = 0
        self._period = period_frames
        self._buffer = period_frames * periods
        self._frame_bytes = 0
        self._can_pause = False
        self._paused = False
        self._underruns = 0

    # --- properties ----------------------------------------------------------------------

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def period_frames(self) -> int:
        """The period the device granted (writes of this many frames are the natural unit)."""
        return self._period

    @property
    def buffer_frames(self) -> int:
        return self._buffer

    @property
    def underruns(self) -> int:
        """Underruns (xruns) seen since this object was made."""
        return self._underruns

    @property
    def is_open(self) -> bool:
        return self._pcm is not None

    # --- control -------------------------------------------------------------------------

    def open(self, rate: int, channels: int) -> None:
        """Open for ``rate`` and ``channels`` (S16_LE). A no-op when already open in that
        format; otherwise what was queued is dropped and the device reopened.
        Raises :class:`UnsupportedFormat` if the device would play another format."""
        if self._pcm is not None:
            if (rate, channels) == (self._rate, self._channels):
                return
            self.close()
        alsaaudio = _alsaaudio()
        try:
            pcm = alsaaudio.PCM(
                type=alsaaudio.PCM_PLAYBACK,
                mode=alsaaudio.PCM_NORMAL,
                device=self.device,
                rate=rate,
                channels=channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self._want_period,
                periods=self._want_periods,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise OutputError(
                f"cannot open ALSA device {self.device!r} for {rate} Hz, {channels} "
                f"channel(s), S16_LE: {exc}"
            ) from None
        info = pcm.info()
        if (info["rate"], info["channels"]) != (rate, channels) or info["format_name"] != (
            "S16_LE"
        ):
            _close_quietly(pcm)
            raise UnsupportedFormat(self.device, rate, channels, info["rate"], info["channels"])
        self._pcm = pcm
        self._rate, self._channels = rate, channels
        self._frame_bytes = channels * BYTES_PER_SAMPLE
        self._period = int(info["period_size"])
        self._buffer = int(info["buffer_size"])
        self._can_pause = bool(info["can_pause"])
        self._paused = False

    def write(self, pcm: bytes | bytearray | memoryview) -> int:
        """Queue whole frames, blocking while the device is full; returns the frames
        written (all of them). An underrun is counted and recovered from: the frames are
        written again after ALSA re-prepared the stream."""
        dev = self._require_open()
        view = memoryview(pcm)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        total = len(view)
        if total % self._frame_bytes:
            raise ValueError(f"{total} bytes is not a whole number of frames")
        if self._paused:
            raise OutputError("write while paused: resume first")
        alsaaudio = _alsaaudio()
        if dev.state() == alsaaudio.PCM_STATE_XRUN:  # ran dry since the last write
            self._underruns += 1
            dev.drop()
        done = 0
        while done < total:
            try:
                res = dev.write(view if done == 0 else view[done:])
            except alsaaudio.ALSAAudioError as exc:
                if not str(exc).startswith(_EPIPE_TEXT):
                    raise OutputError(f"ALSA device {self.device!r}: {exc}") from None
                res = -errno.EPIPE
            if res == -errno.EPIPE:  # ran dry during this write: nothing of it was taken
                self._underruns += 1
                if dev.state() == alsaaudio.PCM_STATE_XRUN:
                    dev.drop()
                continue
            if res <= 0:
                raise OutputError(f"ALSA device {self.device!r} accepted no frames ({res})")
            done += res * self._frame_bytes
        return total // self._frame_bytes

    def delay_frames(self) -> int:
        """Frames written but not yet played (0 when closed, stopped or underrun)."""
        if self._pcm is None:
            return 0
        avail = int(self._pcm.avail())
        if avail < 0:  # -EPIPE in an xrun, -EBADFD when not prepared
            return 0
        return max(0, self._buffer - avail)

    def pause(self) -> int:
        """Stop playing at once. Returns the frames discarded: 0 when the device paused
        and keeps its queue, else the queue it had (the caller writes them again)."""
        if self._pcm is None or self._paused:
            return 0
        queued = self.delay_frames()
        if self._can_pause and queued:
            try:
                self._pcm.pause(1)
            except _alsaaudio().ALSAAudioError:
                pass  # not running after all (underrun): nothing to keep
            else:
                self._paused = True
                return 0
        self._pcm.drop()
        return queued

    def resume(self) -> int:
        """Continue after :meth:`pause`. Returns frames discarded (if unpausing failed)."""
        if self._pcm is None or not self._paused:
            return 0
        self._paused = False
        try:
            self._pcm.pause(0)
        except _alsaaudio().ALSAAudioError:
            queued = self.delay_frames()
            self._pcm.drop()
            return queued
        return 0

    def drain(self) -> None:
        """Block until everything queued has played."""
        if self._pcm is None:
            return
        if self._paused:
            self.resume()
        # Fails only when not running (nothing written, or underrun): nothing left to play.
        with contextlib.suppress(_alsaaudio().ALSAAudioError):
            self._pcm.drain()

    def drop(self) -> None:
        """Discard what is queued, at once."""
        if self._pcm is None:
            return
        self._paused = False
        with contextlib.suppress(_alsaaudio().ALSAAudioError):
            self._pcm.drop()

    def close(self) -> None:
        """Close at once (queued frames are dropped; :meth:`drain` first to hear them)."""
        pcm, self._pcm = self._pcm, None
        self._paused = False
        if pcm is not None:
            _close_quietly(pcm)

    def __enter__(self) -> AlsaOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_open(self) -> Any:
        if self._pcm is None:
            raise OutputError("output is not open")
        return self._pcm


def _close_quietly(pcm: Any) -> None:
    with contextlib.suppress(Exception):
        pcm.drop()
    pcm.close()  # drains, which is immediate after a drop


class ClockPacedOutput:
    """Paces an output that consumes at once as if it were a sound card playing in real time.

    The wrapped output gets every frame at once (so a ``file`` capture records exactly
    what was played); this class keeps a virtual device: playback starts with the first
    write and advances at the sample rate, :meth:`write` blocks while a whole buffer is
    queued, :meth:`delay_frames` is what the clock has not played yet, and a queue that
    runs dry before the next write is an underrun (counted; playback restarts with the
    next write, as ALSA's does after re-preparing). ``can_pause=False`` behaves like a
    device that cannot pause: :meth:`pause` drops the queue and says how much it dropped.
    """

    def __init__(
        self,
        inner: AlsaOutput,
        *,
        can_pause: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.can_pause = can_pause
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None  # when the virtual device started playing
        self._queued = 0  # frames written since it started
        self._paused_at: float | None = None
        self._underruns = 0
        self._lock = threading.Lock()  # delay_frames may be asked from another thread

    @property
    def rate(self) -> int:
        return self.inner.rate

    @property
    def channels(self) -> int:
        return self.inner.channels

    @property
    def period_frames(self) -> int:
        return self.inner.period_frames

    @property
    def buffer_frames(self) -> int:
        return self.inner.buffer_frames

    @property
    def underruns(self) -> int:
        return self._underruns + self.inner.underruns

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    def open(self, rate: int, channels: int) -> None:
        if self.inner.is_open and (rate, channels) == (self.inner.rate, self.inner.channels):
            return
        self.inner.open(rate, channels)
        self._reset()

    def write(self, pcm: bytes | bytearray | memoryview) -> int:
        view = memoryview(pcm)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        frame_bytes = self.inner.channels * BYTES_PER_SAMPLE
        if self._paused_at is not None:
            raise OutputError("write while paused: resume first")
        rate, buffer_frames = self.inner.rate, self.inner.buffer_frames
        step = buffer_frames * frame_bytes
        total = len(view) // frame_bytes
        for offset in range(0, len(view), step):
            part = view[offset : offset + step]
            frames = len(part) // frame_bytes
            with self._lock:
                now = self._clock()
                if self._start is not None and (now - self._start) * rate > self._queued:
                    self._underruns += 1  # the virtual device ran dry before this write
                    self._start = None
                if self._start is None:
                    self._start, self._queued = now, 0
                wait = (self._queued + frames - buffer_frames) / rate - (now - self._start)
            if wait > 0:
                self._sleep(wait)
            self.inner.write(part)
            with self._lock:
                self._queued += frames
        return total

    def delay_frames(self) -> int:
        with self._lock:
            if self._start is None:
                return 0
            now = self._clock() if self._paused_at is None else self._paused_at
            played = int((now - self._start) * self.inner.rate)
            return max(0, self._queued - played)

    def pause(self) -> int:
        if not self.can_pause:
            queued = self.delay_frames()
            self.drop()
            return queued
        with self._lock:
            if self._paused_at is None and self._start is not None:
                self._paused_at = self._clock()
        return 0

    def resume(self) -> int:
        with self._lock:
            if self._paused_at is not None:
                if self._start is not None:
                    self._start += self._clock() - self._paused_at
                self._paused_at = None
        return 0

    def drain(self) -> None:
        self.resume()
        delay = self.delay_frames()
        if delay and self.inner.rate:
            self._sleep(delay / self.inner.rate)
        self.inner.drain()
        self._reset()

    def drop(self) -> None:
        self.inner.drop()
        self._reset()

    def close(self) -> None:
        self.inner.close()
        self._reset()

    def __enter__(self) -> ClockPacedOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _reset(self) -> None:
        with self._lock:
            self._start = None
            self._queued = 0
            self._paused_at = None
