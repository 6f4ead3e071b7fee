"""Volume: the dB curve, in-place scaling of 16-bit samples, normalisation, and the mixer.

The mixer is the hardware edge: :class:`FakeMixer` has alsaaudio.Mixer's methods and keeps
its state like a DAC's "Digital" control (raw steps with a dB scale, a mute switch).
"""

from __future__ import annotations

import itertools
import math

import alsaaudio
import numpy as np
import pytest

from cadenza.player import volume as vol
from cadenza.player.volume import MixerVolume, SoftwareVolume, level_to_db, replaygain_factor


def pcm_of(samples: list[int] | np.ndarray) -> bytearray:
    return bytearray(np.asarray(samples, dtype="<i2").tobytes())


def samples_of(pcm: bytearray) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


# --- the curve -----------------------------------------------------------------------------


def test_curve_ends_and_documented_points() -> None:
    assert level_to_db(100) == 0.0
    assert level_to_db(0) == -math.inf
    # The values the module documents, for the default 60 dB range.
    assert level_to_db(50) == pytest.approx(60 * math.log10(0.55), abs=1e-12)
    assert level_to_db(50) == pytest.approx(-15.58, abs=0.005)
    assert level_to_db(75) == pytest.approx(-6.64, abs=0.005)
    assert level_to_db(25) == pytest.approx(-29.29, abs=0.005)
    assert level_to_db(1) == pytest.approx(-57.75, abs=0.005)
    # The range is where level 0+ would land.
    assert level_to_db(1, range_db=40) > level_to_db(1, range_db=60)


def test_curve_is_strictly_increasing_and_bounded_by_the_range() -> None:
    values = [level_to_db(level) for level in range(1, 101)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert values[0] > -60


@pytest.mark.parametrize("level", [-1, 101])
def test_levels_outside_0_100_are_refused(level: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        level_to_db(level)
    with pytest.raises(ValueError):
        SoftwareVolume().set_level(level)


# --- software volume -----------------------------------------------------------------------


def test_level_100_is_bit_exact_and_untouched() -> None:
    rng = np.random.default_rng(7)
    original = pcm_of(rng.integers(-32768, 32768, 4096))
    pcm = bytearray(original)
    volume = SoftwareVolume()
    volume.apply(pcm)
    assert pcm == original
    volume.set_level(40)
    volume.set_level(100)
    volume.apply(memoryview(pcm))
    assert pcm == original
    assert volume.gain_db == 0.0


def test_level_0_is_silence() -> None:
    pcm = pcm_of([32767, -32768, 1, -1])
    volume = SoftwareVolume(0)
    volume.apply(pcm)
    assert bytes(pcm) == bytes(8)
    assert volume.gain_db == -math.inf


def test_level_50_scales_by_the_documented_db_with_rounding() -> None:
    rng = np.random.default_rng(1)
    source = rng.integers(-32768, 32768, 10000)
    pcm = pcm_of(source)
    volume = SoftwareVolume(50)
    volume.apply(pcm)
    factor = 0.55**3  # 10 ** (60 * log10(0.55) / 20)
    expected = np.clip(np.rint(source * factor), -32768, 32767)
    assert np.max(np.abs(samples_of(pcm) - expected)) <= 1  # ties may round either way
    assert volume.gain_db == pytest.approx(20 * math.log10(factor))


def test_apply_on_a_slice_touches_only_the_slice() -> None:
    pcm = pcm_of([1000] * 8)
    SoftwareVolume(50).apply(memoryview(pcm)[4:12])
    assert list(samples_of(pcm)) == [1000, 1000, 166, 166, 166, 166, 1000, 1000]


def test_replaygain_boost_is_limited_by_the_peak_and_clips() -> None:
    assert replaygain_factor(None) == 1.0
    assert replaygain_factor(-6.0) == pytest.approx(10 ** (-6 / 20))
    # +12 dB on a track peaking at 0.5 would clip: limited to 1 / 0.5.
    assert replaygain_factor(12.0, peak=0.5) == pytest.approx(2.0)
    assert replaygain_factor(3.0, peak=0.5) == pytest.approx(10 ** (3 / 20))

    volume = SoftwareVolume()
    volume.set_replaygain(12.0, peak=0.5)
    pcm = pcm_of([16000, -16384, 20000, 100])
    volume.apply(pcm)
    assert list(samples_of(pcm)) == [32000, -32768, 32767, 200]  # 20000 * 2 hard-clipped
    volume.set_replaygain(None)
    assert volume.gain_db == 0.0


def test_replaygain_and_level_multiply() -> None:
    volume = SoftwareVolume(50)
    volume.set_replaygain(-6.0)
    assert volume.gain_db == pytest.approx(level_to_db(50) - 6.0)


# --- the hardware mixer --------------------------------------------------------------------


class FakeMixer:
    """alsaaudio.Mixer's interface over a control with 0..255 raw steps from -102.00 dB to
    +0.00 dB (0.4 dB a step) and a playback switch, two channels."""

    STEP = 40  # hundredths of a dB

    def __init__(self, *, db: bool = True, switch: bool = True) -> None:
        self.raw = [255, 255]
        self.muted = [0, 0]
        self._db = db
        self._switch = switch
        self.calls: list[tuple[str, object]] = []
        self.closed = False

    def switchcap(self) -> list[str]:
        return ["Playback Mute", "Joined Playback Mute"] if self._switch else []

    def volumecap(self) -> list[str]:
        return ["Playback Volume", "Joined Playback Volume"]

    def getrange(self, pcmtype: int = alsaaudio.PCM_PLAYBACK, units: int = 1) -> list[int]:
        if units == alsaaudio.VOLUME_UNITS_DB:
            return [-10200, 0] if self._db else [0, 0]
        if units == alsaaudio.VOLUME_UNITS_PERCENTAGE:
            return [0, 100]
        return [0, 255]

    def getvolume(self, pcmtype: int = alsaaudio.PCM_PLAYBACK, units: int = 0) -> list[int]:
        if units == alsaaudio.VOLUME_UNITS_DB:
            return [r * self.STEP - 10200 for r in self.raw]
        if units == alsaaudio.VOLUME_UNITS_PERCENTAGE:
            return [round(r / 255 * 100) for r in self.raw]
        return list(self.raw)

    def setvolume(
        self,
        volume: int,
        channel: int | None = None,
        pcmtype: int = alsaaudio.PCM_PLAYBACK,
        units: int = alsaaudio.VOLUME_UNITS_PERCENTAGE,
    ) -> None:
        self.calls.append(("setvolume", (volume, units)))
        if units == alsaaudio.VOLUME_UNITS_DB:
            raw = math.floor((volume + 10200) / self.STEP)  # ALSA rounds down by default
        elif units == alsaaudio.VOLUME_UNITS_PERCENTAGE:
            raw = round(volume / 100 * 255)
        else:
            raw = volume
        self.raw = [max(0, min(255, raw))] * 2

    def getmute(self) -> list[int]:
        if not self._switch:
            raise alsaaudio.ALSAAudioError("Mixer has no playback switch capabilities")
        return list(self.muted)

    def setmute(self, mute: bool, channel: int | None = None) -> None:
        if not self._switch:
            raise alsaaudio.ALSAAudioError("Mixer has no playback switch capabilities")
        self.calls.append(("setmute", bool(mute)))
        self.muted = [int(mute)] * 2

    def close(self) -> None:
        self.closed = True


def test_unit_constants_are_pyalsaaudios() -> None:
    assert vol.UNITS_DB == alsaaudio.VOLUME_UNITS_DB
    assert vol.UNITS_PERCENTAGE == alsaaudio.VOLUME_UNITS_PERCENTAGE


def test_mixer_volume_sets_the_curve_in_db_below_the_controls_maximum() -> None:
    mixer = FakeMixer()
    volume = MixerVolume("Digital", 0, mixer=mixer)
    assert volume.level == 100  # read from the control
    volume.set_level(50)
    assert mixer.calls[-2:] == [
        ("setvolume", (round(level_to_db(50) * 100), alsaaudio.VOLUME_UNITS_DB)),
        ("setmute", False),
    ]
    assert volume.level == 50
    assert MixerVolume("Digital", 0, mixer=mixer).level == 50  # and read back the same


def test_mixer_volume_0_mutes_with_the_switch_and_unmutes_after() -> None:
    mixer = FakeMixer()
    volume = MixerVolume("Digital", 0, mixer=mixer)
    volume.set_level(0)
    assert mixer.muted == [1, 1]
    assert MixerVolume("Digital", 0, mixer=mixer).level == 0
    volume.set_level(30)
    assert mixer.muted == [0, 0]


def test_mixer_without_switch_goes_to_its_minimum_for_0() -> None:
    mixer = FakeMixer(switch=False)
    volume = MixerVolume("Digital", 0, mixer=mixer)
    volume.set_level(0)
    assert mixer.raw == [0, 0]
    assert ("setmute", True) not in mixer.calls


def test_mixer_without_db_scale_gets_a_percentage() -> None:
    mixer = FakeMixer(db=False)
    volume = MixerVolume("Master", 0, mixer=mixer)
    volume.set_level(40)
    assert mixer.calls[-2] == ("setvolume", (40, alsaaudio.VOLUME_UNITS_PERCENTAGE))


def test_mixer_volume_leaves_samples_alone_but_normalises() -> None:
    mixer = FakeMixer()
    volume = MixerVolume("Digital", 0, mixer=mixer)
    volume.set_level(20)
    pcm = pcm_of([1000, -1000])
    volume.apply(pcm)
    assert list(samples_of(pcm)) == [1000, -1000]
    volume.set_replaygain(-6.0)
    volume.apply(pcm)
    assert list(samples_of(pcm)) == [501, -501]
    volume.close()
    assert mixer.closed
