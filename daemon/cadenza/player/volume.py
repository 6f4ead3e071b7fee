"""Volume: a 0..100 level on a dB curve, applied to the samples or by the card's mixer.

The curve is alsamixer's "mapped volume" (alsa-utils ``volume_mapping.c``), so that the
level feels the same as turning the knob in alsamixer::

    gain_db(level) = 60 * log10(x * (1 - m) + m)    x = level / 100,  m = 10 ** (-range_db / 60)

Level 100 is 0 dB, level 0 is silence (muted, not just ``-range_db``), and in between the
amplitude follows a cube: equal steps sound like equal steps. With the default 60 dB
range, level 75 is -6.64 dB, 50 is -15.58 dB, 25 is -29.29 dB and 1 is -57.75 dB.

Loudness normalisation (ReplayGain-style, from the catalog) is a further gain in dB,
limited by the track's sample peak so that it never pushes a sample past full scale;
whatever still exceeds it is clipped.

:class:`SoftwareVolume` scales the 16-bit samples in place (numpy); at level 100 with no
normalisation it does not touch them: bit-exact. :class:`MixerVolume` sets the board's
ALSA mixer control instead and leaves the samples alone (except for normalisation); it
has the same interface, so the player does not know which one it has.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_RANGE_DB", "MixerVolume", "SoftwareVolume", "Volume", "level_to_db"]

DEFAULT_RANGE_DB = 60.0  # alsamixer's mapping is made for ranges like this; 60 dB is quiet

# pyalsaaudio's volume units (its C enum; checked against alsaaudio in the tests).
UNITS_PERCENTAGE = 0
UNITS_DB = 2


def level_to_db(level: int, range_db: float = DEFAULT_RANGE_DB) -> float:
    """The gain in dB for a 0..100 level: 0 dB at 100, ``-inf`` (mute) at 0."""
    if not 0 <= level <= 100:
        raise ValueError(f"volume level {level} is not within 0..100")
    if level == 0:
        return -math.inf
    if level == 100:
        return 0.0
    floor = 10 ** (-range_db / 60)
    return 60 * math.log10(level / 100 * (1 - floor) + floor)


def replaygain_factor(db: float | None, peak: float | None = None) -> float:
    """The linear normalisation gain, limited so that ``peak`` (0..1 full scale) stays at
    or below full scale."""
    if db is None:
        return 1.0
    factor = 10 ** (db / 20)
    if peak is not None and peak > 0:
        factor = min(factor, 1 / peak)
    return factor


class Volume(Protocol):
    """What the player calls: from any thread ``set_level``/``set_replaygain``, from its
    own thread ``apply`` on every period before it is written."""

    @property
    def level(self) -> int: ...

    def set_level(self, level: int) -> None: ...
    def set_replaygain(self, db: float | None, peak: float | None = None) -> None: ...
    def apply(self, pcm: bytearray | memoryview) -> None: ...


class _Scaler:
    """Scales int16 samples in place by a factor, with a scratch buffer kept between calls."""

    def __init__(self) -> None:
        self._scratch: npt.NDArray[np.float64] = np.empty(0, dtype=np.float64)

    def scale(self, pcm: bytearray | memoryview, factor: float) -> None:
        if factor == 1.0:
            return
        samples = np.frombuffer(pcm, dtype="<i2")
        if factor == 0.0:
            samples.fill(0)
            return
        n = samples.size
        if self._scratch.size < n:
            self._scratch = np.empty(n, dtype=np.float64)
        work = self._scratch[:n]
        np.multiply(samples, factor, out=work)
        np.rint(work, out=work)
        np.clip(work, -32768, 32767, out=work)
        np.copyto(samples, work, casting="unsafe")


class SoftwareVolume:
    """Volume applied to the samples. Level 100 without normalisation is a no-op."""

    def __init__(self, level: int = 100, *, range_db: float = DEFAULT_RANGE_DB) -> None:
        if range_db <= 0:
            raise ValueError("range_db must be > 0")
        self.range_db = range_db
        self._scaler = _Scaler()
        self._rg_factor = 1.0
        self._level = 100
        self._level_factor = 1.0
        self._factor = 1.0  # read once per period by apply: one attribute, no lock
        self.set_level(level)

    @property
    def level(self) -> int:
        return self._level

    @property
    def gain_db(self) -> float:
        """The total gain applied (level and normalisation), ``-inf`` when muted."""
        return -math.inf if self._factor == 0 else 20 * math.log10(self._factor)

    def set_level(self, level: int) -> None:
        db = level_to_db(level, self.range_db)
        self._level = level
        self._level_factor = 0.0 if db == -math.inf else (1.0 if db == 0 else 10 ** (db / 20))
        self._factor = self._level_factor * self._rg_factor

    def set_replaygain(self, db: float | None, peak: float | None = None) -> None:
        """Normalisation for the track about to play (None: none), see the module doc."""
        self._rg_factor = replaygain_factor(db, peak)
        self._factor = self._level_factor * self._rg_factor

    def apply(self, pcm: bytearray | memoryview) -> None:
        """Scale interleaved S16_LE samples in place (rounded, clipped to 16 bits)."""
        self._scaler.scale(pcm, self._factor)


class MixerVolume:
    """Volume set on an ALSA mixer control (e.g. the board's DAC "Digital" control).

    The level goes through the same curve, below the control's maximum: level L sets
    ``max_db + level_to_db(L)`` (not below the control's minimum) and level 0 mutes
    through the control's switch (or its minimum if it has none). A control without dB
    information gets the level as a percentage of its raw range. Normalisation is still
    applied to the samples. ``mixer`` is for tests: any object with alsaaudio.Mixer's
    methods; by default ``alsaaudio.Mixer(control, cardindex=card)`` (or ``device=card``
    for a device name).
    """

    def __init__(
        self,
        control: str = "Master",
        card: int | str = 0,
        *,
        range_db: float = DEFAULT_RANGE_DB,
        mixer: Any = None,
    ) -> None:
        if mixer is None:
            import alsaaudio

            if isinstance(card, int):
                mixer = alsaaudio.Mixer(control, cardindex=card)
            else:
                mixer = alsaaudio.Mixer(control, device=card)
        self.control = control
        self.range_db = range_db
        self._mixer = mixer
        self._lock = threading.Lock()
        self._scaler = _Scaler()
        self._rg_factor = 1.0
        self._can_mute = any("Mute" in cap and "Capture" not in cap for cap in mixer.switchcap())
        low, high = mixer.getrange(units=UNITS_DB)  # hundredths of a dB
        self._db_range: tuple[int, int] | None = (low, high) if low < high else None
        self._level = self._read_level()

    @property
    def level(self) -> int:
        return self._level

    def set_level(self, level: int) -> None:
        db = level_to_db(level, self.range_db)
        with self._lock:
            if level == 0 and self._can_mute:
                self._mixer.setmute(True)
            else:
                self._set(level, db)
                if self._can_mute:
                    self._mixer.setmute(False)
            self._level = level

    def set_replaygain(self, db: float | None, peak: float | None = None) -> None:
        self._rg_factor = replaygain_factor(db, peak)

    def apply(self, pcm: bytearray | memoryview) -> None:
        self._scaler.scale(pcm, self._rg_factor)

    def close(self) -> None:
        self._mixer.close()

    def _set(self, level: int, db: float) -> None:
        if self._db_range is None:
            self._mixer.setvolume(level, units=UNITS_PERCENTAGE)
            return
        low, high = self._db_range
        value = low if db == -math.inf else max(low, round(high + db * 100))
        self._mixer.setvolume(value, units=UNITS_DB)

    def _read_level(self) -> int:
        """The level the control is at now (inverse of the curve, rounded)."""
        if self._can_mute and any(self._mixer.getmute()):
            return 0
        if self._db_range is None:
            percent = int(max(self._mixer.getvolume(units=UNITS_PERCENTAGE)))
            return 0 if percent <= 0 else min(100, percent)
        low, high = self._db_range
        current = int(max(self._mixer.getvolume(units=UNITS_DB)))
        if current <= low:
            return 0
        floor = 10 ** (-self.range_db / 60)
        x = (10 ** ((current - high) / 100 / 60) - floor) / (1 - floor)
        return max(0, min(100, round(x * 100)))
