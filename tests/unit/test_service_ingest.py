"""Ingest's parts on real files: scan, hash, tags, decode, loudness, encode, and the key files.

Every input is generated here (soundfile writes WAV, FLAC, MP3, Ogg Vorbis and Opus;
mutagen adds the tags), and every encoding is decoded back with Debian's ``oggdec``.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import subprocess
from pathlib import Path

import mutagen
import mutagen.id3
import mutagen.wave
import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from cadenza.service import ingest
from cadenza.service.ingest import (
    QUALITIES,
    Audio,
    IngestError,
    Tags,
    decode,
    encode_all,
    measure_loudness,
    pcm16,
    read_tags,
    scan,
    source_hash,
)
from cadenza.service.keys import (
    KeyFileError,
    load_or_create_signing_key,
    load_or_create_static_key,
)

FORMATS = {  # extension: (libsndfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}


def tone(
    seconds: float, rate: int, channels: int = 2, freq: float = 440.0, dbfs: float = -12.0
) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    wave = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def write(path: Path, samples: npt.NDArray[np.float32], rate: int) -> Path:
    fmt, subtype = FORMATS[path.suffix[1:]]
    soundfile.write(path, samples, rate, format=fmt, subtype=subtype)
    return path


def tag(path: Path, **values: list[str]) -> None:
    """Tags the way a tagger would write them for the format (easy keys)."""
    if path.suffix == ".wav":
        wave = mutagen.wave.WAVE(path)
        wave.add_tags()
        assert wave.tags is not None
        frames = {
            "title": mutagen.id3.TIT2,
            "artist": mutagen.id3.TPE1,
            "album": mutagen.id3.TALB,
            "albumartist": mutagen.id3.TPE2,
            "tracknumber": mutagen.id3.TRCK,
            "discnumber": mutagen.id3.TPOS,
            "date": mutagen.id3.TDRC,
        }
        for key, texts in values.items():
            wave.tags.add(frames[key](encoding=3, text=texts))
        wave.save()
        return
    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    for key, texts in values.items():
        f[key] = texts
    f.save()


def dominant_frequency(samples: npt.NDArray[np.float32], rate: int) -> float:
    mono = samples.mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * rate / len(mono))


# -- scan and hash ------------------------------------------------------------------------


def test_scan_walks_folders_sorted_skips_other_files_and_reports_bad_paths(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    (lib / "b").mkdir(parents=True)
    (lib / "a").mkdir()
    (lib / ".hidden").mkdir()
    for name in ("b/2.flac", "b/1.MP3", "a/z.ogg", "top.opus", ".hidden/x.wav", "a/._z.ogg"):
        (lib / name).write_bytes(b"x")
    for name in ("cover.jpg", "a/notes.txt", "a/list.m3u"):
        (lib / name).write_bytes(b"x")
    loose = tmp_path / "loose.wav"
    loose.write_bytes(b"x")
    text = tmp_path / "readme.txt"
    text.write_bytes(b"x")
    errors: list[tuple[Path, str]] = []

    too_long = tmp_path / ("x" * 300 + ".flac")
    found = scan(
        [lib, loose, tmp_path / "missing", text, lib / "top.opus", too_long],
        on_error=lambda p, r: errors.append((p, r)),
    )

    assert found == [
        lib / "a/z.ogg",
        lib / "b/1.MP3",
        lib / "b/2.flac",
        lib / "top.opus",
        loose,
    ]
    assert [p for p, _ in errors] == [tmp_path / "missing", text, too_long]
    assert "no such file" in errors[0][1]
    assert "not a supported audio file" in errors[1][1] and ".flac" in errors[1][1]
    assert errors[2][1] == "cannot read: file name too long"


def test_scan_reports_an_unreadable_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.flac").write_bytes(b"x")
    locked.chmod(0)
    try:
        errors: list[tuple[Path, str]] = []
        assert scan([tmp_path], on_error=lambda p, r: errors.append((p, r))) == []
        assert errors and errors[0][0] == locked
    finally:
        locked.chmod(0o755)


def test_a_file_name_that_is_not_utf8_is_found_read_and_decoded(tmp_path: Path) -> None:
    # Latin-1 "café": the bytes a name from an old disk has, which UTF-8 cannot decode.
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    samples = tone(0.5, 44100)
    with open(name, "wb") as f:
        soundfile.write(f, samples, 44100, format="WAV", subtype="PCM_16")

    errors: list[tuple[Path, str]] = []
    assert scan([tmp_path], on_error=lambda p, r: errors.append((p, r))) == [
        Path(os.fsdecode(name))
    ]
    assert errors == []
    path = Path(os.fsdecode(name))
    assert read_tags(path).title == "caf\ufffd"  # storable: valid UTF-8
    assert decode(path).frames == len(samples)


def test_scan_reports_symbolic_link_loops_as_loops_and_goes_on(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "a.flac").write_bytes(b"x")
    (lib / "sub" / "b.flac").write_bytes(b"x")
    (lib / "loop.flac").symlink_to("loop.flac")  # ln -s loop.flac loop.flac
    (lib / "loop").symlink_to("loop")  # no audio name: passed over in lib, reported if named
    (lib / "sub" / "up").symlink_to("..")  # a folder link back to its parent
    (lib / "sub" / "top").symlink_to(lib)
    errors: list[tuple[Path, str]] = []

    through_links = lib / "sub" / "up" / "sub" / "up" / "a.flac"  # lib/a.flac again
    found = scan(
        [lib, lib / "loop", through_links],
        on_error=lambda p, r: errors.append((p, r)),
    )

    assert found == [lib / "a.flac", lib / "sub" / "b.flac"]
    assert [p for p, _ in errors] == [lib / "loop.flac", lib / "loop"]
    for _, reason in errors:
        assert reason == "cannot read: too many levels of symbolic links (a symbolic link loop)"


def test_source_hash_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "a.flac"
    path.write_bytes(data)
    assert source_hash(path) == hashlib.sha256(data).hexdigest()


# -- tags -------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus"])
def test_read_tags_from_each_format(tmp_path: Path, ext: str) -> None:
    rate = 48000 if ext == "opus" else 44100
    path = write(tmp_path / f"song.{ext}", tone(1, rate), rate)
    tag(
        path,
        title=["Señor  Ünïcode"],
        artist=["Alpha", "Beta"],
        album=["Album X"],
        albumartist=["Various Artists"],
        tracknumber=["3/12"],
        discnumber=["2/2"],
        date=["2004-05-01"],
    )
    assert read_tags(path) == Tags(
        title="Señor Ünïcode",
        artists=("Alpha", "Beta"),
        album="Album X",
        album_artists=("Various Artists",),
        year=2004,
        disc=2,
        number=3,
    )


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
def test_untagged_files_fall_back_to_the_file_name(tmp_path: Path, ext: str) -> None:
    path = write(tmp_path / f"01 - My Song.{ext}", tone(1, 44100), 44100)
    assert read_tags(path) == Tags(
        title="01 - My Song", artists=("Unknown Artist",), album="Unknown Album"
    )


def test_unparseable_tags_fall_back_too(tmp_path: Path) -> None:
    path = tmp_path / "noise.flac"
    path.write_bytes(b"fLaC" + os.urandom(200))
    assert read_tags(path).title == "noise"


def test_blank_tags_count_as_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "x.flac", tone(1, 44100), 44100)
    tag(path, title=["  "], artist=["", "Solo"], tracknumber=["A1"], date=["unknown"])
    tags = read_tags(path)
    assert (tags.title, tags.artists, tags.number, tags.year) == ("x", ("Solo",), None, None)


@pytest.mark.parametrize(
    ("text", "number"),
    [("3", 3), ("03", 3), ("3/12", 3), (" 7 / 9", 7), ("0", None), ("A1", None), ("", None)],
)
def test_track_and_disc_numbers(text: str, number: int | None) -> None:
    assert ingest._leading_int(text) == number


@pytest.mark.parametrize(
    ("text", "year"),
    [("2004", 2004), ("2004-05-01", 2004), ("05/01/1999", 1999), ("1999T", 1999), ("n/a", None)],
)
def test_years(text: str, year: int | None) -> None:
    assert ingest._year(text) == year


def test_vorbis_comments_of_tags() -> None:
    tags = Tags("T", ("A", "B"), "Al", ("V",), 1999, 1, 4)
    assert tags.vorbis_comments() == [
        ("TITLE", "T"),
        ("ARTIST", "A"),
        ("ARTIST", "B"),
        ("ALBUM", "Al"),
        ("ALBUMARTIST", "V"),
        ("TRACKNUMBER", "4"),
        ("DISCNUMBER", "1"),
        ("DATE", "1999"),
    ]


# -- decode -----------------------------------------------------------------------------

DECODE_CASES = [(ext, rate) for ext in ("wav", "flac", "mp3", "ogg") for rate in (44100, 48000)]
DECODE_CASES.append(("opus", 48000))  # Opus always decodes at 48 kHz


@pytest.mark.parametrize(("ext", "rate"), DECODE_CASES)
def test_decode_each_format_at_its_own_rate(tmp_path: Path, ext: str, rate: int) -> None:
    path = write(tmp_path / f"a.{ext}", tone(2.0, rate, freq=1000.0), rate)
    audio = decode(path)
    assert audio.sample_rate == rate and audio.source_rate == rate
    assert audio.channels == 2
    assert audio.samples.dtype == np.float32 and audio.samples.flags.c_contiguous
    assert audio.duration_s == pytest.approx(2.0, abs=0.06)
    assert dominant_frequency(audio.samples, rate) == pytest.approx(1000.0, abs=2.0)
    assert float(np.max(np.abs(audio.samples))) == pytest.approx(10 ** (-12 / 20), rel=0.1)


def test_mono_stays_mono(tmp_path: Path) -> None:
    audio = decode(write(tmp_path / "m.flac", tone(1.0, 44100, channels=1), 44100))
    assert audio.channels == 1 and audio.samples.shape == (44100, 1)


def test_sixteen_bit_sources_come_back_bit_for_bit(tmp_path: Path) -> None:
    ints = np.random.default_rng(1).integers(-32768, 32768, size=(4410, 2), dtype=np.int16)
    path = tmp_path / "r.wav"
    soundfile.write(path, ints, 44100, subtype="PCM_16")
    assert pcm16(decode(path)) == ints.astype("<i2").tobytes()


@pytest.mark.parametrize(("ext", "order"), [("wav", "wav"), ("flac", "wav"), ("ogg", "vorbis")])
def test_surround_is_mixed_down_to_stereo(tmp_path: Path, ext: str, order: str) -> None:
    """5.1 with a tone in the left front only and another in the centre only."""
    rate = 44100
    left, centre = tone(1.0, rate, 1, 500.0, -6.0)[:, 0], tone(1.0, rate, 1, 1500.0, -6.0)[:, 0]
    six = np.zeros((rate, 6), dtype=np.float32)
    six[:, 0] = left  # front left comes first in both orders
    six[:, 2 if order == "wav" else 1] = centre
    path = tmp_path / f"s.{ext}"
    soundfile.write(path, six, rate, format=FORMATS[ext][0], subtype=FORMATS[ext][1])

    audio = decode(path)

    assert audio.channels == 2 and audio.source_channels == 6
    spectrum = np.abs(np.fft.rfft(audio.samples, axis=0))
    bin_500, bin_1500 = 500, 1500  # 1 s of audio: one bin per Hz
    # The left tone is in the left channel only; the centre tone in both, equally.
    assert spectrum[bin_500, 1] < 0.01 * spectrum[bin_500, 0]
    assert spectrum[bin_1500, 0] == pytest.approx(spectrum[bin_1500, 1], rel=0.05)
    assert spectrum[bin_1500, 0] == pytest.approx(spectrum[bin_500, 0] / math.sqrt(2), rel=0.05)
    assert float(np.max(np.abs(audio.samples))) <= 1.0


def test_nan_and_infinity_in_float_files_become_finite(tmp_path: Path) -> None:
    samples = tone(1.0, 44100)
    samples[100, 0], samples[200, 1], samples[300, 0] = np.nan, np.inf, -np.inf
    path = tmp_path / "f.wav"
    soundfile.write(path, samples, 44100, subtype="FLOAT")
    audio = decode(path)
    assert np.isfinite(audio.samples).all()
    assert audio.samples[200, 1] == 1.0 and audio.samples[300, 0] == -1.0


def test_hi_res_is_brought_down_to_48k_or_44k1(tmp_path: Path) -> None:
    for rate, expected in ((96000, 48000), (88200, 44100), (192000, 48000)):
        audio = decode(write(tmp_path / f"{rate}.flac", tone(1.0, rate, freq=1000.0), rate))
        assert (audio.sample_rate, audio.source_rate) == (expected, rate)
        assert audio.frames == expected
        assert dominant_frequency(audio.samples, expected) == pytest.approx(1000.0, abs=2.0)


def test_absurd_inputs_are_refused_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reason(path: Path) -> str:
        with pytest.raises(IngestError) as info:
            decode(path)
        return str(info.value)

    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 2), dtype=np.float32), 44100)
    assert "no audio" in reason(empty)

    many = tmp_path / "many.wav"
    soundfile.write(many, np.zeros((100, 10), dtype=np.float32), 44100)
    assert "10 channels" in reason(many)

    low = tmp_path / "low.wav"
    soundfile.write(low, np.zeros((100, 1), dtype=np.float32), 4000)
    assert "4000 Hz" in reason(low)

    monkeypatch.setattr(ingest, "MAX_DURATION_S", 1)
    long = write(tmp_path / "long.flac", tone(1.5, 8000), 8000)
    assert "too long: 0:02 (the limit is 0:01)" in reason(long)
    monkeypatch.undo()

    noise = tmp_path / "noise.flac"
    noise.write_bytes(os.urandom(4096))
    assert "cannot decode" in reason(noise)

    text = tmp_path / "text.mp3"
    text.write_text("not an mp3 at all\n" * 50)
    assert "cannot decode" in reason(text)


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    # libsndfile's MP3 decoder stops quietly at the cut; its FLAC decoder loses sync.
    for ext, reason in (
        ("mp3", "truncated or corrupt: decoded 0:01 of the 0:03"),
        ("flac", "cannot decode"),
    ):
        whole = write(tmp_path / f"whole.{ext}", tone(3.0, 44100), 44100)
        cut = tmp_path / f"cut.{ext}"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(IngestError, match=reason):
            decode(cut)


# -- loudness ---------------------------------------------------------------------------

# ITU-R BS.1770-4 K-weighting at 48 kHz: the published biquads (Tables 1 and 2).
SHELF_B = (1.53512485958697, -2.69169618940638, 1.19839281085285)
SHELF_A = (1.0, -1.69065929318241, 0.73248077421585)
HIGHPASS_B = (1.0, -2.0, 1.0)
HIGHPASS_A = (1.0, -1.99004745483398, 0.99007225036621)


def k_weighting_power_gain(freq: float, rate: int = 48000) -> float:
    z = np.exp(-1j * 2 * np.pi * freq / rate)

    def biquad(b: tuple[float, ...], a: tuple[float, ...]) -> complex:
        return complex((b[0] + b[1] * z + b[2] * z**2) / (a[0] + a[1] * z + a[2] * z**2))

    return abs(biquad(SHELF_B, SHELF_A) * biquad(HIGHPASS_B, HIGHPASS_A)) ** 2


def expected_lufs(amplitude: float, freq: float, channels: int) -> float:
    """BS.1770: -0.691 + 10 log10(sum over channels of G * mean square after K-weighting).

    A steady sine passes every gate, so the integrated loudness is that of any block.
    """
    mean_square = amplitude**2 / 2 * k_weighting_power_gain(freq)
    return -0.691 + 10 * math.log10(channels * mean_square)


def test_loudness_of_a_sine_follows_the_bs1770_definition() -> None:
    rate, freq = 48000, 997.0
    samples = tone(10.0, rate, channels=2, freq=freq, dbfs=-20.0)
    loudness = measure_loudness(Audio(samples, rate, rate, 2))
    expected = expected_lufs(0.1, freq, channels=2)
    assert expected == pytest.approx(-20.0, abs=0.05)  # the scale's anchor: 997 Hz, L + R
    assert loudness.lufs == pytest.approx(expected, abs=0.05)
    assert loudness.peak_dbfs == pytest.approx(-20.0, abs=0.01)


def test_loudness_follows_frequency_weighting() -> None:
    """At 100 Hz the high-pass stage takes off a measurable amount."""
    rate = 48000
    samples = tone(10.0, rate, channels=2, freq=100.0, dbfs=-20.0)
    loudness = measure_loudness(Audio(samples, rate, rate, 2))
    assert loudness.lufs == pytest.approx(expected_lufs(0.1, 100.0, 2), abs=0.05)
    assert loudness.lufs is not None and loudness.lufs < -20.5


def test_mono_is_measured_as_dual_mono() -> None:
    rate = 48000
    mono = tone(5.0, rate, channels=1, freq=997.0, dbfs=-20.0)
    stereo = np.repeat(mono, 2, axis=1)
    a = measure_loudness(Audio(mono, rate, rate, 1))
    b = measure_loudness(Audio(stereo, rate, rate, 2))
    assert a.lufs == pytest.approx(b.lufs, abs=1e-6)
    assert a.peak_dbfs == pytest.approx(b.peak_dbfs)


def test_silence_has_no_loudness_and_no_peak() -> None:
    rate = 44100
    silence = np.zeros((rate * 3, 2), dtype=np.float32)
    assert measure_loudness(Audio(silence, rate, rate, 2)) == ingest.Loudness(None, None)
    # Below the -70 LUFS absolute gate: a peak, but no loudness.
    whisper = tone(3.0, rate, 2, 997.0, -90.0)
    quiet = measure_loudness(Audio(whisper, rate, rate, 2))
    assert quiet.lufs is None and quiet.peak_dbfs == pytest.approx(-90.0, abs=0.01)


def test_audio_shorter_than_one_gating_block_has_no_loudness() -> None:
    rate = 44100
    blip = tone(0.3, rate, 2, 997.0, -6.0)
    loudness = measure_loudness(Audio(blip, rate, rate, 2))
    assert loudness.lufs is None and loudness.peak_dbfs == pytest.approx(-6.0, abs=0.01)


# -- encode -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (48000, 2)])
def test_encodings_decode_back_with_the_same_shape(
    tmp_path: Path, rate: int, channels: int
) -> None:
    seconds = 3.0
    samples = tone(seconds, rate, channels, freq=660.0)
    # Noise on top, so the three qualities have something to differ about.
    samples += np.random.default_rng(2).normal(0, 0.05, samples.shape).astype(np.float32)
    audio = Audio(samples, rate, rate, channels)
    tags = Tags("Tïtle", ("A", "B"), "Álbum", None, 2001, None, 5)

    outputs = encode_all(audio, tags, tmp_path, serial=1234)

    assert [q.bitrate for q, _ in outputs] == [96, 160, 320]
    sizes = []
    for quality, path in outputs:
        info = soundfile.info(path)
        assert (info.format, info.subtype) == ("OGG", "VORBIS")
        wav = path.with_suffix(".wav")
        subprocess.run(["oggdec", "--quiet", "-o", str(wav), str(path)], check=True)
        decoded, decoded_rate = soundfile.read(wav, dtype="float32", always_2d=True)
        assert decoded_rate == rate and decoded.shape[1] == channels
        assert len(decoded) / rate == pytest.approx(seconds, abs=0.01)
        assert dominant_frequency(decoded, rate) == pytest.approx(660.0, abs=2.0)
        comments = mutagen.File(path)
        assert comments["title"] == ["Tïtle"] and comments["artist"] == ["A", "B"]
        assert comments["album"] == ["Álbum"] and comments["tracknumber"] == ["5"]
        assert comments["date"] == ["2001"]
        sizes.append(path.stat().st_size)
        assert quality in QUALITIES
    assert sizes[0] < sizes[1] < sizes[2]


def test_the_same_input_encodes_to_the_same_bytes(tmp_path: Path) -> None:
    """Content addressing needs it: oggenc's random stream serial is pinned."""
    audio = Audio(tone(1.0, 44100), 44100, 44100, 2)
    tags = Tags("x", ("y",), "z")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = encode_all(audio, tags, tmp_path / "a", serial=7)
    second = encode_all(audio, tags, tmp_path / "b", serial=7)
    assert [p.read_bytes() for _, p in first] == [p.read_bytes() for _, p in second]


def test_an_encoder_failure_is_an_ingest_error(tmp_path: Path) -> None:
    audio = Audio(tone(0.5, 44100), 44100, 44100, 2)
    with pytest.raises(IngestError, match="oggenc -q 2 failed"):
        ingest.encode_vorbis(
            pcm16(audio),
            tmp_path,  # a folder: oggenc cannot open it for writing
            sample_rate=44100,
            channels=2,
            quality=2,
        )


def test_qualities_are_the_three_tiers() -> None:
    assert [q.bitrate for q in QUALITIES] == [96, 160, 320]
    assert [q.vorbis_q for q in QUALITIES] == sorted({q.vorbis_q for q in QUALITIES})


# -- key files --------------------------------------------------------------------------


def test_signing_key_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_size == 32
    again = load_or_create_signing_key(path)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]  # no temp file left


def test_static_key_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "static.key"
    pair = load_or_create_static_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == pair.private
    assert load_or_create_static_key(path) == pair


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 33, b"-----BEGIN PRIVATE KEY-----\n"])
def test_malformed_key_files_are_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(content)
    for load in (load_or_create_signing_key, load_or_create_static_key):
        with pytest.raises(KeyFileError, match=r"malformed .* expected exactly 32 raw bytes"):
            load(path)
    assert path.read_bytes() == content


def test_a_folder_in_the_key_s_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "signing.key").mkdir()
    with pytest.raises(KeyFileError, match="is a directory"):
        load_or_create_signing_key(tmp_path / "signing.key")


# -- progress output --------------------------------------------------------------------


def test_progress_bar_line() -> None:
    from cadenza.cli.ingest import bar_line

    assert bar_line(0, 4, 0.0, None) == "[" + " " * 24 + "] 0/4  0:00"
    line = bar_line(1, 4, 30.0, Path("/music/a.flac"))
    assert line == "[######                  ] 1/4  0:30 ETA 1:30  a.flac"
    assert bar_line(4, 4, 3725.0, Path("b.ogg")).startswith("[" + "#" * 24 + "] 4/4  1:02:05")


def test_progress_printer_on_a_terminal_and_in_a_log() -> None:
    import io

    from cadenza.cli.ingest import ProgressPrinter
    from cadenza.service.ingest import Progress

    events = [
        Progress(0, 2, "scanned"),
        Progress(1, 2, "failed", Path("x.flac"), "cannot decode: Format not recognised", 1.0),
        Progress(2, 2, "added", Path("y.flac"), "Why", 2.0),
    ]
    log = io.StringIO()
    printer = ProgressPrinter(log, tty=False)
    for event in events:
        printer(event)
    printer.close()
    assert log.getvalue().splitlines() == [
        "ingesting 2 files",
        "[1/2] failed: x.flac: cannot decode: Format not recognised",
        "[2/2] added: y.flac (Why)",
    ]

    term = io.StringIO()
    printer = ProgressPrinter(term, tty=True)
    for event in events:
        printer(event)
    printer.close()
    text = term.getvalue()
    assert "failed: x.flac: cannot decode" in text
    assert text.endswith("] 2/2  0:02  y.flac\x1b[K\n")
    assert "\r" in text and text.count("\n") == 2  # the failure line and the final newline


def test_file_names_are_printed_escaped_one_line_each() -> None:
    import io

    from cadenza.cli.ingest import ProgressPrinter, bar_line
    from cadenza.service.ingest import Progress

    odd = Path(os.fsdecode(b"/music/new\nline \x1b[2Jcaf\xe9\r.flac"))
    shown = "/music/new\\nline \\x1b[2Jcaf\\xe9\\r.flac"
    events = [
        Progress(0, 2, "scanned"),
        Progress(1, 2, "failed", odd, "cannot decode: two\nlines", 1.0),
        Progress(2, 2, "added", odd, "A\x07title", 2.0),
    ]
    log = io.StringIO()
    printer = ProgressPrinter(log, tty=False)
    for event in events:
        printer(event)
    assert log.getvalue().splitlines() == [
        "ingesting 2 files",
        f"[1/2] failed: {shown}: cannot decode: two\\nlines",
        f"[2/2] added: {shown} (A\\x07title)",
    ]

    term = io.StringIO()
    printer = ProgressPrinter(term, tty=True)
    for event in events:
        printer(event)
    printer.close()
    text = term.getvalue()
    assert f"failed: {shown}: cannot decode: two\\nlines\n" in text
    assert text.count("\n") == 2 and "\x1b[2J" not in text
    assert bar_line(1, 2, 1.0, odd).endswith("  " + shown.rsplit("/", 1)[1])
