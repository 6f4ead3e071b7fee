"""`cadenza ingest` end to end: a small generated library into a real catalog and store.

Six short tracks in five formats at 44.1 and 48 kHz (one mono, one untagged), plus broken
files, go through the real pipeline (libsndfile, pyloudnorm, oggenc) into a SQLite
catalog and a content-addressed store in a temporary data directory; the CLI runs as a
separate process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mutagen
import mutagen.id3
import mutagen.wave
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza.protocol.manifest import ManifestSigner
from cadenza.service.catalog import Catalog, Track
from cadenza.service.db import Database
from cadenza.service.ingest import Progress, ingest
from cadenza.service.storage import Storage
from ingestcli import run_cli

FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}


@dataclass(frozen=True)
class Source:
    name: str
    rate: int
    channels: int
    seconds: float
    title: str  # as the catalog should show it
    artist: str | None = None
    album: str | None = None
    number: int | None = None


LIBRARY = [
    Source("polar/01 aurora.wav", 44100, 2, 2.0, "Aurora Borealis", "Nordlys", "Polar", 1),
    Source("polar/02 basalt.flac", 48000, 2, 2.5, "Basalt Columns", "Nordlys", "Polar", 2),
    Source("sky/cirrus.mp3", 44100, 2, 3.0, "Cirrus Uncinus", "Sky Choir", "Weather", 1),
    Source("sky/dune.ogg", 48000, 1, 2.0, "Dune Sea", "Sky Choir", "Weather", 2),
    Source("ember.opus", 48000, 2, 2.0, "Ember Glow", "Fennec", "Fire", 7),
    Source("field-recording.flac", 44100, 2, 2.0, "field-recording"),  # untagged
]


def make_audio(seconds: float, rate: int, channels: int, seed: int) -> npt.NDArray[np.float32]:
    """A chord distinct per track (different sources must hash and sound different)."""
    t = np.arange(round(seconds * rate)) / rate
    freqs = 220.0 * 2 ** (seed / 12), 330.0 * 2 ** (seed / 12)
    wave = sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)
    return np.repeat(np.asarray(wave)[:, None], channels, axis=1).astype(np.float32)


def write_source(root: Path, source: Source, seed: int) -> Path:
    path = root / source.name
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, subtype = FORMATS[path.suffix[1:]]
    audio = make_audio(source.seconds, source.rate, source.channels, seed)
    soundfile.write(path, audio, source.rate, format=fmt, subtype=subtype)
    if source.artist is None:
        return path
    if path.suffix == ".wav":
        wave = mutagen.wave.WAVE(path)
        wave.add_tags()
        assert wave.tags is not None
        wave.tags.add(mutagen.id3.TIT2(encoding=3, text=[source.title]))
        wave.tags.add(mutagen.id3.TPE1(encoding=3, text=[source.artist]))
        wave.tags.add(mutagen.id3.TALB(encoding=3, text=[source.album or ""]))
        wave.tags.add(mutagen.id3.TRCK(encoding=3, text=[f"{source.number}/2"]))
        wave.save()
        return path
    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    f["title"] = source.title
    f["artist"] = source.artist
    f["album"] = source.album or ""
    f["tracknumber"] = f"{source.number}/2"
    f.save()
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("library")
    for seed, source in enumerate(LIBRARY):
        write_source(root, source, seed)
    (root / "cover.jpg").write_bytes(b"\xff\xd8 not audio, passed over")
    return root


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("broken")
    noise = root / "noise.flac"
    noise.write_bytes(np.random.default_rng(5).bytes(20000))
    whole = write_source(root, Source("whole.mp3", 44100, 2, 4.0, "Whole", "W", "W", 1), 40)
    cut = root / "cut.mp3"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    whole.unlink()
    return [noise, cut]


@dataclass
class Service:
    data: Path
    db: Database
    catalog: Catalog
    storage: Storage


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    data = tmp_path / "data"
    data.mkdir()
    db = Database(data / "service.db")
    storage = Storage(data / "storage", ManifestSigner(Ed25519PrivateKey.generate()))
    yield Service(data, db, Catalog(db), storage)
    db.close()


def search_titles(catalog: Catalog, query: str) -> dict[str, Track]:
    results, _ = catalog.search("track", query, limit=50)
    return {t.id: t for t in results if isinstance(t, Track)}


def test_every_track_lands_in_the_catalog_with_three_verified_files(
    library: Path, service: Service
) -> None:
    events: list[Progress] = []
    report = ingest(
        [library], storage=service.storage, catalog=service.catalog, progress=events.append
    )

    assert report.failed == []
    assert report.already_present == []
    assert len(report.added) == len(LIBRARY)
    assert report.audio_seconds == pytest.approx(sum(s.seconds for s in LIBRARY), abs=0.3)
    # In scan order: folders sorted, files within them sorted.
    assert [t.path.relative_to(library).as_posix() for t in report.added] == sorted(
        s.name for s in LIBRARY
    )
    assert [e.status for e in events] == ["scanned"] + ["added"] * len(LIBRARY)
    assert [e.done for e in events] == list(range(len(LIBRARY) + 1))
    assert all(e.total == len(LIBRARY) for e in events)

    by_name = {t.path.relative_to(library).as_posix(): t.track for t in report.added}
    for source in LIBRARY:
        track = by_name[source.name]
        assert track.title == source.title
        assert [a.name for a in track.artists] == [source.artist or "Unknown Artist"]
        assert track.album.title == (source.album or "Unknown Album")
        assert track.number == source.number
        assert track.sample_rate == source.rate
        assert track.channels == source.channels  # mono stays mono
        assert track.duration_ms == pytest.approx(source.seconds * 1000, abs=60)
        assert track.loudness_lufs is not None and -30 < track.loudness_lufs < -5
        assert track.peak_dbfs is not None and -12 < track.peak_dbfs < 0.5
        assert [f.bitrate for f in track.files] == [96, 160, 320]
        assert track.files[0].size < track.files[1].size < track.files[2].size
        for ref in track.files:
            assert service.storage.has(ref.file_id)
            assert service.storage.size(ref.file_id) == ref.size
            assert service.storage.verify(ref.file_id)
            encoded = service.storage.path(ref.file_id)
            info = soundfile.info(encoded)
            assert (info.format, info.subtype) == ("OGG", "VORBIS")
            assert (info.samplerate, info.channels) == (source.rate, source.channels)
            assert mutagen.File(encoded)["title"] == [source.title]
        # Searchable by its title, and by the first letters of it.
        assert track.id in search_titles(service.catalog, source.title)
        assert track.id in search_titles(service.catalog, source.title[:3])

    # Tracks of one album share it.
    assert by_name["polar/01 aurora.wav"].album.id == by_name["polar/02 basalt.flac"].album.id
    assert service.catalog.stats()["files"] == 3 * len(LIBRARY)


def test_ingesting_again_adds_nothing(library: Path, service: Service) -> None:
    first = ingest([library], storage=service.storage, catalog=service.catalog)
    stats = service.catalog.stats()
    stored = sorted(service.storage.file_ids())

    again = ingest([library], storage=service.storage, catalog=service.catalog)

    assert len(first.added) == len(LIBRARY)
    assert again.added == [] and again.failed == []
    assert sorted(again.already_present) == sorted(t.path for t in first.added)
    assert service.catalog.stats() == stats
    assert sorted(service.storage.file_ids()) == stored
    for source in LIBRARY:
        assert len(search_titles(service.catalog, source.title)) == 1
    assert "0 added, 6 already present, 0 failed" in again.summary()


def test_a_copy_of_a_file_in_the_same_batch_is_one_track(
    library: Path, service: Service, tmp_path: Path
) -> None:
    original = library / "ember.opus"
    copy = tmp_path / "copy of ember.opus"
    copy.write_bytes(original.read_bytes())

    report = ingest([original, copy], storage=service.storage, catalog=service.catalog)

    assert [t.path for t in report.added] == [original]
    assert report.already_present == [copy]
    assert service.catalog.stats()["tracks"] == 1


def test_a_copy_of_a_broken_file_in_the_same_batch_fails_too(
    broken: list[Path], service: Service, tmp_path: Path
) -> None:
    noise = broken[0]
    copy = tmp_path / "copy of noise.flac"
    copy.write_bytes(noise.read_bytes())

    report = ingest([noise, copy], storage=service.storage, catalog=service.catalog)

    assert report.added == [] and report.already_present == []
    assert [p for p, _ in report.failed] == [noise, copy]
    assert report.failed[1][1] == f"same content as {noise}, which failed"


def test_broken_files_are_reported_by_name_and_the_rest_goes_on(
    library: Path, broken: list[Path], service: Service
) -> None:
    missing = library / "no-such-track.flac"
    noise, cut = broken
    report = ingest(
        [noise, library, missing, cut], storage=service.storage, catalog=service.catalog, jobs=1
    )

    assert len(report.added) == len(LIBRARY)
    failed = dict(report.failed)
    assert set(failed) == {noise, cut, missing}
    assert "cannot decode" in failed[noise]
    assert failed[cut].startswith("truncated or corrupt")
    assert "no such file" in failed[missing]
    assert "3 failed" in report.summary()
    # Nothing was stored for them.
    assert service.catalog.stats()["files"] == 3 * len(LIBRARY)


def write_wav_bytes_name(folder: Path, name: bytes, seed: int) -> Path:
    """A one-second WAV whose name is raw bytes (not necessarily UTF-8), as os.fsdecode
    gives it back."""
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        soundfile.write(f, make_audio(1.0, 44100, 2, seed), 44100, format="WAV")
    return Path(os.fsdecode(path))


def test_a_file_name_that_is_not_utf8_is_ingested_with_the_rest(
    service: Service, tmp_path: Path
) -> None:
    folder = tmp_path / "old disk"
    folder.mkdir()
    latin1 = write_wav_bytes_name(folder, b"caf\xe9.wav", 50)
    plain = write_wav_bytes_name(folder, b"plain.wav", 51)

    report = ingest([folder], storage=service.storage, catalog=service.catalog)

    assert report.failed == []
    assert [t.path for t in report.added] == [latin1, plain]
    track = report.added[0].track
    assert track.title == "caf\ufffd"
    assert all(service.storage.verify(ref.file_id) for ref in track.files)


def test_temporary_files_are_removed(
    library: Path,
    broken: list[Path],
    service: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    report = ingest([library / "sky", *broken], storage=service.storage, catalog=service.catalog)
    assert len(report.added) == 2 and len(report.failed) == 2
    assert list(scratch.iterdir()) == []


# -- the command ------------------------------------------------------------------------


def test_cli_exit_status_progress_and_summary(
    library: Path, broken: list[Path], tmp_path: Path
) -> None:
    data = tmp_path / "cadenza-data"

    out = run_cli(library, *broken, data=data)

    assert out.returncode == 1, out.stderr
    for path in broken:
        assert f"{path}: " in out.stdout  # the failure list, by name
        assert f"failed: {path}" in out.stderr  # and the per-file progress line
    assert "8 files: 6 added, 0 already present, 2 failed" in out.stdout
    assert "[8/8]" in out.stderr and "ingesting 8 files" in out.stderr
    key = data / "keys" / "signing.key"
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
    assert (data / "service.db").is_file() and (data / "storage" / "files").is_dir()

    again = run_cli(library, data=data)
    assert again.returncode == 0, again.stderr
    assert "6 files: 0 added, 6 already present, 0 failed" in again.stdout
    assert "failed" not in again.stderr

    db = Database(data / "service.db")
    try:
        catalog = Catalog(db)
        assert catalog.stats()["tracks"] == len(LIBRARY)
        assert search_titles(catalog, "Aurora Borealis")
    finally:
        db.close()


def test_cli_usage_errors(tmp_path: Path) -> None:
    for args in ((), ("--jobs", "0", "x.flac"), ("--jobs", "two", "x.flac"), ("--bogus", "x")):
        out = run_cli(*args, data=tmp_path / "d")
        assert out.returncode == 2, (args, out.stderr)
        assert "usage: cadenza ingest" in out.stderr
    assert not (tmp_path / "d").exists()


def test_cli_refuses_a_malformed_key(library: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "signing.key").write_bytes(b"not a key")
    out = run_cli(library / "ember.opus", data=data)
    assert out.returncode == 1
    assert "malformed Ed25519 private key" in out.stderr and "signing.key" in out.stderr
