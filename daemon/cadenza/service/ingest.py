"""Ingest: turn audio files into catalog tracks, each with three Ogg Vorbis encodings.

For every source file, in the order :func:`scan` finds them:

1. hash its bytes (SHA-256, :func:`source_hash`): the idempotency key. A source the
   catalog already has is counted as already present and not decoded at all;
2. read its tags with mutagen (:func:`read_tags`), falling back to the file name;
3. decode it with libsndfile (:func:`decode`: WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, AIFF)
   to float samples at the source rate, refusing what no listener wants (see the limits);
4. measure EBU R128 integrated loudness and the sample peak (:func:`measure_loudness`);
5. encode Ogg Vorbis at three qualities with ``oggenc``, the three encoders in parallel,
   each fed 16-bit PCM on stdin (:func:`encode_all`);
6. store the three files (content-addressed, idempotent) and add the track.

Steps 2-5 run in ``jobs`` worker threads (the work itself is in libsndfile, numpy and the
``oggenc`` processes, all outside the GIL); steps 1 and 6 run in the calling thread, in
input order, so the catalog and the store are only ever touched from one thread and the
report reads in the order of the input. A file that cannot be ingested is reported with
its reason and the batch goes on.

Decisions:

* The source sample rate is kept (44.1 and 48 kHz both occur; Opus always decodes at
  48 kHz): resampling costs quality and the player's output resamples anyway. Only
  rates above 48 kHz are brought down (to 44.1 or 48 kHz, whichever divides evenly):
  beyond that nothing is audible and the Vorbis bitrate tiers would be spent on it.
* Mono stays mono: upmixing would spend bits on a copy the player can make for free,
  and Vorbis mono at the same quality is smaller. The catalog records the channel
  count. Its loudness is measured as played, on both channels of a stereo speaker
  (dual mono), so normalisation treats mono and stereo tracks alike.
* More than two channels (3 to 8, the layouts WAV, FLAC and Vorbis define) are mixed
  down to stereo with the usual ITU-R BS.775 coefficients, scaled so that nothing
  clips; more than 8 channels is refused.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mutagen
import mutagen.id3
import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile

from cadenza.service.catalog import FileRef

if TYPE_CHECKING:
    from cadenza.service.catalog import Catalog, Track
    from cadenza.service.storage import Storage

__all__ = [
    "MAX_DURATION_S",
    "QUALITIES",
    "SOURCE_EXTENSIONS",
    "Audio",
    "IngestError",
    "IngestReport",
    "IngestSetupError",
    "IngestedTrack",
    "Progress",
    "Quality",
    "Tags",
    "decode",
    "encode_all",
    "encode_vorbis",
    "ingest",
    "measure_loudness",
    "printable",
    "read_tags",
    "scan",
    "source_hash",
]

log = logging.getLogger("cadenza.ingest")

# What libsndfile decodes; anything else in a folder (covers, cue sheets, playlists) is
# passed over, and a file named on the command line with another extension is refused.
SOURCE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc"}
)


@dataclass(frozen=True, slots=True)
class Quality:
    """One encoding tier: the nominal bitrate the catalog records and oggenc's -q for it."""

    bitrate: int  # nominal kbps
    vorbis_q: int


# libvorbis 1.3 runs below its nominal table (q2/5/9 gave 80/113/235 kbps on the drascula
# corpus and 80/125/260 on pink noise); q3/7/10 gave 94/154/326 there, nearest the tiers.
# Real rates follow the music (bench/ingest.py measures them); the nominal ones name tiers.
QUALITIES = (Quality(96, 3), Quality(160, 7), Quality(320, 10))

# Longer than any album side or DJ mix worth streaming as one track; beyond it a file is
# a mistake (a whole concert, a recording left running), and decoding it would take GBs.
MAX_DURATION_S = 2 * 60 * 60
# Below this no music survives; telephone audio (8 kHz) is the lowest we accept.
MIN_SAMPLE_RATE = 8000
# Above this the source is resampled (see the module docstring).
MAX_SAMPLE_RATE = 48000
# WAV, FLAC and Vorbis define layouts up to 7.1; more is not a music release.
MAX_SOURCE_CHANNELS = 8
# A decoder that returns less than this share of the frames its header promised has hit
# a truncated or corrupt file (libsndfile's MP3 decoder stops quietly at the cut).
MIN_DECODED_FRACTION = 0.97
# BS.1770 gates on 400 ms blocks; shorter audio has no integrated loudness.
LOUDNESS_BLOCK_S = 0.4
# Samples converted to 16-bit PCM at a time (a 4 MiB float32 temporary).
_PCM_BLOCK = 1 << 20

UNKNOWN_ARTIST = "Unknown Artist"
UNKNOWN_ALBUM = "Unknown Album"

OGGENC = "oggenc"


class IngestError(Exception):
    """One source file cannot be ingested; the message is the reason, for people."""


class IngestSetupError(Exception):
    """Nothing can be ingested on this machine (a missing encoder); the message says why."""


# -- finding files ----------------------------------------------------------------------


def scan(
    paths: Iterable[Path | str], on_error: Callable[[Path, str], None] | None = None
) -> list[Path]:
    """The audio files in ``paths``: files as given, folders searched recursively.

    Folders contribute files whose extension is in :data:`SOURCE_EXTENSIONS`, sorted,
    skipping hidden files and folders (``.DS_Store``, macOS ``._`` shadow files). A path
    that is missing, unreadable or (named directly) not an audio file is passed to
    ``on_error(path, reason)`` (logged if there is none) and left out. Each file appears
    once even if named twice. Symbolic links to folders are not followed inside a folder,
    so a link to a parent cannot make the search endless; a link that loops is reported.
    """

    def fail(path: Path, reason: str) -> None:
        if on_error is not None:
            on_error(path, reason)
        else:
            log.warning("%s: %s", printable(path), reason)

    found: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        # realpath, unlike Path.resolve, never raises: a link turned into a loop since
        # it was looked at must not end the scan.
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for arg in paths:
        path = Path(arg)
        # One stat, not Path.is_dir/is_file/exists: those answer False for a symbolic
        # link loop, which would then be reported as missing.
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            fail(path, "no such file or folder")
            continue
        except OSError as e:
            fail(path, _os_reason(e))
            continue
        except ValueError:  # a NUL in the name, which no file can have
            fail(path, "no such file or folder")
            continue
        if stat.S_ISDIR(mode):
            for file in _walk(path, fail):
                add(file)
        elif stat.S_ISREG(mode):
            if path.suffix.lower() not in SOURCE_EXTENSIONS:
                kind = f"'{path.suffix}'" if path.suffix else "without an extension"
                fail(
                    path,
                    f"not a supported audio file (a file {kind}; supported: "
                    + ", ".join(sorted(SOURCE_EXTENSIONS))
                    + ")",
                )
            elif not os.access(path, os.R_OK):
                fail(path, "cannot read: permission denied")
            else:
                add(path)
        else:
            fail(path, "not a regular file or folder")
    return found


def _walk(top: Path, fail: Callable[[Path, str], None]) -> list[Path]:
    files: list[Path] = []

    def on_walk_error(e: OSError) -> None:
        fail(Path(e.filename) if e.filename else top, _os_reason(e))

    for folder, dirs, names in os.walk(top, onerror=on_walk_error):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in SOURCE_EXTENSIONS:
                continue
            path = Path(folder) / name
            # stat first: os.access answers False for any failure, and a symbolic link
            # loop or a dangling link would be reported as "permission denied".
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                fail(path, _os_reason(e))
                continue
            if not stat.S_ISREG(mode):
                continue
            if not os.access(path, os.R_OK):
                fail(path, "cannot read: permission denied")
            else:
                files.append(path)
    return sorted(files)


def source_hash(path: Path) -> str:
    """SHA-256 of the file's bytes, in hex: the same input always gives the same track."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- tags -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tags:
    """What the catalog needs to know about a track besides its audio."""

    title: str
    artists: tuple[str, ...]
    album: str
    album_artists: tuple[str, ...] | None = None  # None: the track's artists
    year: int | None = None
    disc: int | None = None
    number: int | None = None

    def vorbis_comments(self) -> list[tuple[str, str]]:
        """The tags as Vorbis comments, for the encoded files."""
        comments = [("TITLE", self.title)]
        comments += [("ARTIST", a) for a in self.artists]
        comments.append(("ALBUM", self.album))
        comments += [("ALBUMARTIST", a) for a in self.album_artists or ()]
        if self.number is not None:
            comments.append(("TRACKNUMBER", str(self.number)))
        if self.disc is not None:
            comments.append(("DISCNUMBER", str(self.disc)))
        if self.year is not None:
            comments.append(("DATE", str(self.year)))
        return comments


# ID3 frames for the easy keys, for WAV and AIFF, whose ID3 chunk mutagen does not wrap
# in its easy interface.
_ID3_FRAMES = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "albumartist": "TPE2",
    "tracknumber": "TRCK",
    "discnumber": "TPOS",
    "date": "TDRC",
    "originaldate": "TDOR",
}
_LEADING_INT = re.compile(r"\s*0*(\d{1,6})")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")


def read_tags(path: Path) -> Tags:
    """The file's tags (mutagen), with fallbacks: title = file stem, "Unknown Artist",
    "Unknown Album". Never raises for bad tags: a file whose tags cannot be parsed gets
    the fallbacks (whether its audio can be decoded is :func:`decode`'s business).
    """
    path = Path(path)
    tags: Any = None
    try:
        audio = mutagen.File(path, easy=True)
        tags = audio.tags if audio is not None else None
    except Exception as e:
        # mutagen raises more than MutagenError on hostile input (struct.error,
        # IndexError, ...); tags are best effort, so any of them means "no tags".
        log.debug("%s: unreadable tags: %s", printable(path), e)

    def values(*keys: str) -> list[str]:
        for key in keys:
            raw: Any
            try:
                if isinstance(tags, mutagen.id3.ID3):
                    raw = tags[_ID3_FRAMES[key]].text
                else:
                    raw = tags[key] if tags is not None else []
            except (KeyError, ValueError, TypeError):
                continue
            items = raw if isinstance(raw, list) else [raw]
            cleaned = [" ".join(str(v).replace("\x00", " ").split()) for v in items]
            cleaned = [v for v in cleaned if v]
            if cleaned:
                return cleaned
        return []

    def first(*keys: str) -> str | None:
        found = values(*keys)
        return found[0] if found else None

    # A name that is not UTF-8 holds lone surrogates (Python's stand-ins for its raw
    # bytes), which SQLite and oggenc's --utf8 refuse; U+FFFD marks those bytes instead.
    title = first("title") or os.fsencode(path.stem).decode("utf-8", "replace")
    artists = tuple(values("artist")) or (UNKNOWN_ARTIST,)
    album = first("album") or UNKNOWN_ALBUM
    album_artists = tuple(values("albumartist", "album artist", "album_artist")) or None
    return Tags(
        title=title,
        artists=artists,
        album=album,
        album_artists=album_artists,
        year=_year(first("date", "originaldate", "year")),
        disc=_leading_int(first("discnumber")),
        number=_leading_int(first("tracknumber")),
    )


def _leading_int(text: str | None) -> int | None:
    """3 from "3", "03" and "3/12"; None for "", "A1" (vinyl sides) and 0."""
    if text is None:
        return None
    m = _LEADING_INT.match(text)
    return (int(m.group(1)) or None) if m else None


def _year(text: str | None) -> int | None:
    """2004 from "2004", "2004-05-01" and "05/01/2004"; None when there is no year."""
    if text is None:
        return None
    m = _YEAR.search(text)
    return (int(m.group(1)) or None) if m else None


# -- decoding ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: float32 samples in [-1, 1] (lossy sources may overshoot a little),
    shape (frames, channels), C order, i.e. interleaved."""

    samples: npt.NDArray[np.float32] = field(repr=False)
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def duration_ms(self) -> int:
        return round(1000 * self.frames / self.sample_rate)


# Speaker roles of each channel, in file order, for 3 to 8 channels. WAV (and FLAC and
# AIFF, which follow it) put the centre third; Vorbis and Opus put it second and the LFE
# last. libsndfile hands channels over in the file's own order.
_WAV_LAYOUTS = {
    3: ("L", "R", "C"),
    4: ("L", "R", "Ls", "Rs"),
    5: ("L", "R", "C", "Ls", "Rs"),
    6: ("L", "R", "C", "LFE", "Ls", "Rs"),
    7: ("L", "R", "C", "LFE", "Cs", "Ls", "Rs"),
    8: ("L", "R", "C", "LFE", "Ls", "Rs", "Ls", "Rs"),  # back pair, then side pair
}
_VORBIS_LAYOUTS = {
    3: ("L", "C", "R"),
    4: ("L", "R", "Ls", "Rs"),
    5: ("L", "C", "R", "Ls", "Rs"),
    6: ("L", "C", "R", "Ls", "Rs", "LFE"),
    7: ("L", "C", "R", "Ls", "Rs", "Cs", "LFE"),
    8: ("L", "C", "R", "Ls", "Rs", "Ls", "Rs", "LFE"),
}
# ITU-R BS.775 downmix: centre and surrounds at -3 dB; the LFE is left out, as usual.
_M3DB = 1 / math.sqrt(2)
_TO_STEREO = {
    "L": (1.0, 0.0),
    "R": (0.0, 1.0),
    "C": (_M3DB, _M3DB),
    "Ls": (_M3DB, 0.0),
    "Rs": (0.0, _M3DB),
    "Cs": (0.5, 0.5),
    "LFE": (0.0, 0.0),
}


def decode(path: Path) -> Audio:
    """The file's audio as float32 at its own sample rate, mono or stereo.

    Raises :class:`IngestError` with a reason for files libsndfile cannot decode, that
    are empty, truncated (fewer frames than the header promised), longer than
    :data:`MAX_DURATION_S`, below :data:`MIN_SAMPLE_RATE`, or with more than
    :data:`MAX_SOURCE_CHANNELS` channels. More than two channels are mixed down to
    stereo; rates above :data:`MAX_SAMPLE_RATE` are resampled (module docstring).
    """
    try:
        # soundfile encodes a str name as strict UTF-8, which fails for names that are
        # not UTF-8 (files from old Latin-1 disks); the bytes are the name the kernel has.
        with soundfile.SoundFile(os.fsencode(path)) as f:
            rate, channels, declared = f.samplerate, f.channels, f.frames
            container = f.format
            if channels < 1:
                raise IngestError("no audio channels")
            if channels > MAX_SOURCE_CHANNELS:
                raise IngestError(
                    f"{channels} channels: more than the {MAX_SOURCE_CHANNELS} that can be"
                    " mixed down to stereo"
                )
            if rate < MIN_SAMPLE_RATE:
                raise IngestError(
                    f"sample rate {rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum"
                )
            if declared > MAX_DURATION_S * rate:
                raise IngestError(
                    f"too long: {_clock(declared / rate)} (the limit is {_clock(MAX_DURATION_S)})"
                )
            samples = f.read(dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as e:
        raise IngestError(f"cannot decode: {_sndfile_reason(e)}") from None
    except OSError as e:
        raise IngestError(_os_reason(e)) from None
    except (RuntimeError, TypeError) as e:  # soundfile's own checks on odd headers
        raise IngestError(f"cannot decode: {e}") from None

    if not np.isfinite(samples).all():
        # Float files can hold NaN or infinity; no encoder or meter is ready for them.
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    frames = samples.shape[0]
    if frames == 0:
        raise IngestError("no audio in the file (empty, or truncated before the first frame)")
    if declared > 0 and frames < declared * MIN_DECODED_FRACTION:
        raise IngestError(
            f"truncated or corrupt: decoded {_clock(frames / rate)} of the"
            f" {_clock(declared / rate)} its header promises"
        )
    if channels > 2:
        samples = _downmix(samples, container)
    out_rate = rate
    if rate > MAX_SAMPLE_RATE:
        out_rate = 44100 if rate % 44100 == 0 else MAX_SAMPLE_RATE
        samples = _resample(samples, rate, out_rate)
    return Audio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=out_rate,
        source_rate=rate,
        source_channels=channels,
    )


def _downmix(samples: npt.NDArray[np.float32], container: str) -> npt.NDArray[np.float32]:
    channels = samples.shape[1]
    layouts = _VORBIS_LAYOUTS if container == "OGG" else _WAV_LAYOUTS
    matrix = np.array([_TO_STEREO[role] for role in layouts[channels]], dtype=np.float32)
    # Full scale in every channel at once must not clip: scale by the larger column sum.
    matrix /= matrix.sum(axis=0).max()
    result: npt.NDArray[np.float32] = samples @ matrix
    return result


def _resample(samples: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    g = math.gcd(rate, target)
    out: npt.NDArray[np.float32] = resample_poly(samples, target // g, rate // g, axis=0)
    return out.astype(np.float32, copy=False)


# -- loudness ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loudness:
    lufs: float | None  # EBU R128 integrated loudness; None for silence or < 400 ms
    peak_dbfs: float | None  # sample peak; None for digital silence


def measure_loudness(audio: Audio) -> Loudness:
    """EBU R128 integrated loudness (ITU-R BS.1770-4, gated) and the sample peak.

    Mono is measured as dual mono, as a stereo speaker plays it: 3.01 dB louder than
    the same samples in one channel. Silence (nothing above the -70 LUFS gate) and
    audio shorter than one 400 ms gating block have no loudness (None).
    """
    samples = audio.samples
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    peak_dbfs = 20 * math.log10(peak) if peak > 0 else None
    if audio.frames < LOUDNESS_BLOCK_S * audio.sample_rate or peak == 0:
        return Loudness(None, peak_dbfs)
    stereo = samples if audio.channels == 2 else np.repeat(samples, 2, axis=1)
    meter = pyloudnorm.Meter(audio.sample_rate)  # K-weighting, BS.1770-4 gating
    lufs = float(meter.integrated_loudness(stereo))
    return Loudness(lufs if math.isfinite(lufs) else None, peak_dbfs)


# -- encoding ---------------------------------------------------------------------------


def require_oggenc() -> str:
    """The path of ``oggenc``; :class:`IngestSetupError` if it is not installed."""
    found = shutil.which(OGGENC)
    if found is None:
        raise IngestSetupError(
            f"{OGGENC} not found: install vorbis-tools (apt-get install vorbis-tools)"
        )
    return found


def pcm16(audio: Audio) -> memoryview:
    """Interleaved signed 16-bit little-endian PCM, rounded and clipped, as bytes.

    16-bit sources come back bit for bit (libsndfile scales them by 1/32768); no dither,
    since the Vorbis encoder's noise floor lies far above 16-bit rounding. Converted a
    block at a time, so the only large allocation is the result (2 bytes a sample).
    """
    flat = audio.samples.reshape(-1)
    out = np.empty(flat.shape, dtype="<i2")
    for start in range(0, len(flat), _PCM_BLOCK):
        block = flat[start : start + _PCM_BLOCK] * np.float32(32768.0)
        np.rint(block, out=block)
        np.clip(block, -32768, 32767, out=block)
        out[start : start + _PCM_BLOCK] = block
    return out.data.cast("B")


def encode_vorbis(
    pcm: bytes | memoryview,
    out: Path,
    *,
    sample_rate: int,
    channels: int,
    quality: int,
    tags: Tags | None = None,
    serial: int = 0,
    oggenc: str = OGGENC,
) -> None:
    """Encode 16-bit PCM to Ogg Vorbis at ``-q quality`` with ``oggenc``, tags included.

    The Ogg stream serial number is fixed (oggenc picks a random one otherwise), so the
    same input always gives the same bytes and thus the same content-addressed file.
    Raises :class:`IngestError` if the encoder fails.
    """
    cmd = [
        oggenc,
        "--quiet",
        "--utf8",  # our tags are str, always UTF-8, whatever the locale says
        "--raw",
        "--raw-bits=16",
        f"--raw-chan={channels}",
        f"--raw-rate={sample_rate}",
        "--raw-endianness=0",
        f"--quality={quality}",
        f"--serial={serial}",
    ]
    for key, value in tags.vorbis_comments() if tags is not None else ():
        cmd += ["--comment", f"{key}={value}"]
    cmd += ["--output", str(out), "-"]
    try:
        proc = subprocess.run(
            cmd, input=pcm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
    except OSError as e:
        raise IngestError(f"cannot run {oggenc}: {_os_reason(e)}") from None
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = detail[-1] if detail else f"exit status {proc.returncode}"
        raise IngestError(f"oggenc -q {quality} failed: {why}")


def encode_all(
    audio: Audio,
    tags: Tags,
    workdir: Path,
    *,
    serial: int = 0,
    oggenc: str = OGGENC,
) -> list[tuple[Quality, Path]]:
    """One Ogg Vorbis file per :data:`QUALITIES` tier in ``workdir``, encoded in parallel."""
    pcm = pcm16(audio)
    outputs = [(q, workdir / f"q{q.vorbis_q}.ogg") for q in QUALITIES]
    with ThreadPoolExecutor(len(QUALITIES), thread_name_prefix="oggenc") as pool:
        futures = [
            pool.submit(
                encode_vorbis,
                pcm,
                out,
                sample_rate=audio.sample_rate,
                channels=audio.channels,
                quality=q.vorbis_q,
                tags=tags,
                serial=(serial + i) & 0x7FFFFFFF,
                oggenc=oggenc,
            )
            for i, (q, out) in enumerate(outputs)
        ]
        for future in futures:
            future.result()
    return outputs


# -- the batch --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestedTrack:
    path: Path
    track: Track

    @property
    def duration_s(self) -> float:
        return self.track.duration_ms / 1000


@dataclass(slots=True)
class IngestReport:
    added: list[IngestedTrack] = field(default_factory=list)
    already_present: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole batch
    audio_seconds: float = 0.0  # duration of the tracks added

    @property
    def files(self) -> int:
        return len(self.added) + len(self.already_present) + len(self.failed)

    def summary(self) -> str:
        """One line for people, e.g. ``6 files: 5 added, 0 already present, 1 failed; ...``."""
        line = (
            f"{self.files} file{'s' if self.files != 1 else ''}: {len(self.added)} added,"
            f" {len(self.already_present)} already present, {len(self.failed)} failed"
        )
        line += f"; {_clock(self.audio_seconds)} of audio in {self.seconds:.1f} s"
        if self.added and self.seconds > 0:
            line += (
                f" ({self.audio_seconds / self.seconds:.1f}x real time,"
                f" {len(self.added) / self.seconds:.2f} tracks/s)"
            )
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [{"path": str(t.path), "track": t.track.to_json()} for t in self.added],
            "already_present": [str(p) for p in self.already_present],
            "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
            "seconds": self.seconds,
            "audio_seconds": self.audio_seconds,
        }


Status = Literal["scanned", "added", "already present", "failed"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after the scan (``scanned``, ``done`` 0) and after each file."""

    done: int
    total: int
    status: Status
    path: Path | None = None
    detail: str = ""  # the title added, or the reason it failed
    elapsed: float = 0.0  # seconds since the batch started


@dataclass(frozen=True, slots=True)
class _Prepared:
    tags: Tags
    audio_rate: int
    audio_channels: int
    duration_ms: int
    loudness: Loudness
    encodings: list[tuple[Quality, Path]]


@dataclass(slots=True)
class _Pending:
    path: Path
    digest: str | None = None
    future: Future[_Prepared] | None = None
    workdir: Path | None = None
    present: bool = False
    duplicate_of: Path | None = None
    failure: str | None = None


def ingest(
    paths: Iterable[Path | str],
    *,
    storage: Storage,
    catalog: Catalog,
    progress: Callable[[Progress], None] | None = None,
    jobs: int = 2,
) -> IngestReport:
    """Ingest the audio files in ``paths`` (see :func:`scan`) into ``storage`` and ``catalog``.

    Each source becomes one track with one Ogg Vorbis file per tier of
    :data:`QUALITIES`. Sources the catalog has (by :func:`source_hash`) are counted as
    already present without being decoded. A file that cannot be ingested is reported
    in ``failed`` with the reason, and the rest goes on. ``jobs`` files are prepared at
    once, each with its three encoders running in parallel. Temporary files live in one
    temporary folder, removed however the call ends. Raises :class:`IngestSetupError`
    before touching anything if the encoder is missing.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    oggenc = require_oggenc()
    start = time.monotonic()
    report = IngestReport()
    scan_failures: list[tuple[Path, str]] = []
    files = scan(paths, on_error=lambda p, reason: scan_failures.append((p, reason)))
    total = len(files) + len(scan_failures)
    done = 0

    def emit(status: Status, path: Path | None = None, detail: str = "") -> None:
        nonlocal done
        if status != "scanned":
            done += 1
        if progress is not None:
            progress(Progress(done, total, status, path, detail, time.monotonic() - start))

    def fail(path: Path, reason: str) -> None:
        report.failed.append((path, reason))
        emit("failed", path, reason)

    emit("scanned")
    for path, reason in scan_failures:
        fail(path, reason)

    def commit(item: _Pending) -> None:
        try:
            _commit(item)
        finally:
            if item.workdir is not None:
                shutil.rmtree(item.workdir, ignore_errors=True)

    def _commit(item: _Pending) -> None:
        if item.failure is not None:
            fail(item.path, item.failure)
            return
        assert item.digest is not None
        if item.duplicate_of is not None:
            if catalog.track_for_source(item.digest) is None:
                fail(item.path, f"same content as {item.duplicate_of}, which failed")
                return
            item.present = True
        if item.present:
            report.already_present.append(item.path)
            emit("already present", item.path)
            return
        assert item.future is not None
        try:
            prepared = item.future.result()
        except IngestError as e:
            fail(item.path, str(e))
            return
        except Exception as e:
            log.exception("%s: unexpected error", printable(item.path))
            fail(item.path, f"unexpected error: {type(e).__name__}: {e}")
            return
        try:
            refs = []
            for quality, encoded in prepared.encodings:
                manifest = storage.put_file(encoded)
                refs.append(FileRef(quality.bitrate, manifest.file_id, manifest.size))
            tags = prepared.tags
            track = catalog.add_track(
                title=tags.title,
                artists=list(tags.artists),
                album=tags.album,
                album_artists=list(tags.album_artists) if tags.album_artists else None,
                year=tags.year,
                disc=tags.disc,
                number=tags.number,
                duration_ms=prepared.duration_ms,
                sample_rate=prepared.audio_rate,
                channels=prepared.audio_channels,
                loudness_lufs=prepared.loudness.lufs,
                peak_dbfs=prepared.loudness.peak_dbfs,
                files=refs,
                source_hash=item.digest,
            )
        except Exception as e:
            # A full disk or a catalog that refuses the tags fails this file, not the batch.
            log.exception("%s: could not store the track", printable(item.path))
            fail(item.path, f"could not store the track: {type(e).__name__}: {e}")
            return
        report.added.append(IngestedTrack(item.path, track))
        report.audio_seconds += track.duration_ms / 1000
        emit("added", item.path, track.title)

    with tempfile.TemporaryDirectory(prefix="cadenza-ingest-") as tmp:
        pool = ThreadPoolExecutor(jobs, thread_name_prefix="ingest")
        pending: deque[_Pending] = deque()
        first_of: dict[str, Path] = {}  # source hash -> first file with it in this batch
        try:
            for index, path in enumerate(files):
                item = _Pending(path)
                try:
                    item.digest = source_hash(path)
                except OSError as e:
                    item.failure = _os_reason(e)
                if item.digest is None:
                    pass
                elif item.digest in first_of:
                    item.duplicate_of = first_of[item.digest]
                elif catalog.track_for_source(item.digest) is not None:
                    item.present = True
                else:
                    first_of[item.digest] = path
                    item.workdir = Path(tmp) / str(index)
                    item.workdir.mkdir()
                    item.future = pool.submit(_prepare, path, item.digest, item.workdir, oggenc)
                pending.append(item)
                # Keep every worker busy with one file queued behind them, no more: the
                # commit order is the input order, and memory stays bounded.
                while len(pending) > jobs:
                    commit(pending.popleft())
            while pending:
                commit(pending.popleft())
        finally:
            for item in pending:
                if item.future is not None:
                    item.future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
    report.seconds = time.monotonic() - start
    return report


def _prepare(path: Path, digest: str, workdir: Path, oggenc: str) -> _Prepared:
    """Everything but storing: tags, decode, loudness, three encodings (a worker thread)."""
    tags = read_tags(path)
    audio = decode(path)
    loudness = measure_loudness(audio)
    encodings = encode_all(audio, tags, workdir, serial=int(digest[:8], 16), oggenc=oggenc)
    return _Prepared(
        tags=tags,
        audio_rate=audio.sample_rate,
        audio_channels=audio.channels,
        duration_ms=audio.duration_ms,
        loudness=loudness,
        encodings=encodings,
    )


# -- helpers ----------------------------------------------------------------------------


def printable(text: object) -> str:
    """``str(text)`` on one line and safe for a terminal: every character that is not
    printable is written as a Python escape (a newline as ``\\n``, ESC as ``\\x1b``, a
    right-to-left override as ``\\u202e``), and a byte of a file name that is not UTF-8
    as ``\\xe9``. File names are anyone's bytes; in a report each must stay one line.
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _escape(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:
        # os.fsdecode's stand-in for an undecodable byte: show the byte itself.
        return f"\\x{code - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        # strerror alone does not say the usual cause: a link that leads back to itself.
        return "cannot read: too many levels of symbolic links (a symbolic link loop)"
    reason = e.strerror or str(e)
    return f"cannot read: {reason[0].lower()}{reason[1:]}" if reason else "cannot read"


def _sndfile_reason(e: soundfile.LibsndfileError) -> str:
    # The message names the file ("Error opening 'x.flac': ..."); the caller already does.
    text = str(getattr(e, "error_string", "") or e).strip().rstrip(".")
    if "does not exist" in text:
        # What libsndfile says when its MP3 decoder finds no frame it can read.
        return "no audio stream found (corrupt or truncated)"
    return text or "unknown libsndfile error"


def _clock(seconds: float) -> str:
    """1:02:03 or 2:03 (m:ss); what people read durations in."""
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
