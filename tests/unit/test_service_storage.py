"""The service's content-addressed store: real files in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    ManifestSigner,
    ManifestVerifier,
    file_id_of,
)
from cadenza.service import storage
from cadenza.service.storage import (
    MAX_CHUNKS_PER_READ,
    FileNotFound,
    InvalidFileId,
    Storage,
    StorageError,
)

SERVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = ManifestSigner(SERVICE_KEY)
# Three chunks, the last short; every byte depends on its position.
DATA = bytes((i * 7 + i // 251) % 256 for i in range(2 * CHUNK_SIZE + 1000))
FILE_ID = file_id_of(DATA)
ABSENT = "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "store", SIGNER)


def temp_files(store: Storage) -> list[str]:
    return sorted(os.listdir(store.root / "tmp"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the good path ---------------------------------------------------------------------


def test_put_then_read_everything_back(store: Storage) -> None:
    manifest = store.put(DATA)

    assert manifest.file_id == FILE_ID
    assert store.has(FILE_ID)
    assert store.manifest(FILE_ID) == manifest
    assert store.size(FILE_ID) == len(DATA)
    assert store.read_all(FILE_ID) == DATA
    assert store.read_chunks(FILE_ID, 0, 3) == [
        DATA[:CHUNK_SIZE],
        DATA[CHUNK_SIZE : 2 * CHUNK_SIZE],
        DATA[2 * CHUNK_SIZE :],
    ]
    assert store.read_chunks(FILE_ID, 2, 1) == [DATA[2 * CHUNK_SIZE :]]
    assert store.verify(FILE_ID)
    assert list(store.file_ids()) == [FILE_ID]
    assert temp_files(store) == []


def test_manifest_bytes_are_what_a_speaker_verifies(store: Storage) -> None:
    store.put(DATA)

    data = store.manifest_bytes(FILE_ID)
    manifest = ManifestVerifier([SIGNER.public_key]).verify(data, file_id=FILE_ID)

    for index, chunk in enumerate(store.read_chunks(FILE_ID, 0, manifest.num_chunks)):
        manifest.verify_chunk(index, chunk)


def test_layout_on_disk(store: Storage) -> None:
    store.put(DATA)

    path = store.root / "files" / FILE_ID[0:2] / FILE_ID[2:4] / FILE_ID

    assert store.path(FILE_ID) == path
    assert path.read_bytes() == DATA
    assert path.with_name(FILE_ID + ".manifest").read_bytes() == store.manifest_bytes(FILE_ID)


def test_put_is_idempotent_and_rewrites_nothing(store: Storage) -> None:
    first = store.put(DATA)
    path = store.path(FILE_ID)
    before = (path.stat(), path.with_name(FILE_ID + ".manifest").stat())

    second = store.put(DATA)

    after = (path.stat(), path.with_name(FILE_ID + ".manifest").stat())
    assert second == first
    assert [(s.st_ino, s.st_mtime_ns) for s in after] == [(s.st_ino, s.st_mtime_ns) for s in before]
    assert list(store.file_ids()) == [FILE_ID]


def test_put_file_streams_the_same_result_as_put(store: Storage, tmp_path: Path) -> None:
    big = bytes(range(256)) * (70 * CHUNK_SIZE // 256) + b"tail"  # more than one copy block
    source = tmp_path / "track.ogg"
    source.write_bytes(big)

    manifest = store.put_file(source)

    assert manifest.file_id == file_id_of(big)
    assert manifest == SIGNER.sign(big)
    assert store.read_all(manifest.file_id) == big
    assert store.verify(manifest.file_id)
    assert store.put_file(source) == manifest
    assert store.put(big) == manifest
    assert temp_files(store) == []


def test_empty_file(store: Storage, tmp_path: Path) -> None:
    manifest = store.put(b"")
    (tmp_path / "empty").write_bytes(b"")

    assert manifest.file_id == file_id_of(b"")
    assert store.put_file(tmp_path / "empty") == manifest
    assert store.read_chunks(manifest.file_id, 0, 1) == [b""]
    assert store.read_all(manifest.file_id) == b""
    assert store.verify(manifest.file_id)


def test_many_files(store: Storage) -> None:
    datas = [bytes([i]) * (i * 1000) for i in range(1, 20)]

    ids = [store.put(data).file_id for data in datas]

    assert list(store.file_ids()) == sorted(ids)
    for file_id, data in zip(ids, datas, strict=True):
        assert store.read_all(file_id) == data


def test_delete(store: Storage) -> None:
    store.put(DATA)
    store.put(b"other")

    store.delete(FILE_ID)

    assert not store.has(FILE_ID)
    assert not store.path(FILE_ID).exists()
    assert not store.path(FILE_ID).with_name(FILE_ID + ".manifest").exists()
    assert list(store.file_ids()) == [file_id_of(b"other")]
    with pytest.raises(FileNotFound):
        store.delete(FILE_ID)
    assert store.put(DATA).file_id == FILE_ID


def test_a_reopened_store_has_the_same_files(store: Storage) -> None:
    store.put(DATA)

    again = Storage(store.root, SIGNER)

    assert again.has(FILE_ID)
    assert again.read_all(FILE_ID) == DATA


# -- what is not there -----------------------------------------------------------------


def test_absent_file(store: Storage) -> None:
    assert not store.has(ABSENT)
    for call in (
        store.manifest,
        store.manifest_bytes,
        store.size,
        store.read_all,
        store.verify,
        store.delete,
    ):
        with pytest.raises(FileNotFound, match=f"^no such file {ABSENT}$"):
            call(ABSENT)
    with pytest.raises(FileNotFound):
        store.read_chunks(ABSENT, 0, 1)


def test_file_not_found_is_a_key_error_with_a_plain_message() -> None:
    error = FileNotFound(f"no such file {ABSENT}")

    assert isinstance(error, KeyError)
    assert isinstance(error, StorageError)
    assert str(error) == f"no such file {ABSENT}"


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../etc",
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "",
        FILE_ID.upper(),
        FILE_ID[:-1],
        FILE_ID + "0",
        FILE_ID + "\n",
        FILE_ID[:-2] + "/.",
        "../" + FILE_ID[3:],
    ],
)
def test_path_traversal_and_other_bad_ids_are_refused(
    store: Storage, tmp_path: Path, bad_id: str
) -> None:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "passwd").write_text("root")
    for call in (
        store.path,
        store.has,
        store.manifest,
        store.manifest_bytes,
        store.size,
        store.read_all,
        store.verify,
        store.delete,
    ):
        with pytest.raises(InvalidFileId):
            call(bad_id)
    with pytest.raises(ValueError):
        store.read_chunks(bad_id, 0, 1)
    assert (tmp_path / "etc" / "passwd").read_text() == "root"


# -- read_chunks bounds ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "count"),
    [(-1, 1), (3, 1), (2, 2), (0, 4), (0, 0), (1, -1), (0, MAX_CHUNKS_PER_READ + 1)],
)
def test_read_chunks_refuses_a_bad_range(store: Storage, first: int, count: int) -> None:
    store.put(DATA)

    with pytest.raises(ValueError):
        store.read_chunks(FILE_ID, first, count)


def test_read_chunks_refuses_non_integers(store: Storage) -> None:
    store.put(DATA)

    with pytest.raises(ValueError):
        store.read_chunks(FILE_ID, 0.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.read_chunks(FILE_ID, 0, True)


def test_read_chunks_up_to_the_limit(store: Storage) -> None:
    data = bytes(range(256)) * ((MAX_CHUNKS_PER_READ + 2) * CHUNK_SIZE // 256)
    file_id = store.put(data).file_id

    chunks = store.read_chunks(file_id, 1, MAX_CHUNKS_PER_READ)

    assert len(chunks) == MAX_CHUNKS_PER_READ
    assert b"".join(chunks) == data[CHUNK_SIZE : (MAX_CHUNKS_PER_READ + 1) * CHUNK_SIZE]
    with pytest.raises(ValueError, match="count"):
        store.read_chunks(file_id, 0, MAX_CHUNKS_PER_READ + 1)  # within the file, over the limit


# -- damage and crashes ----------------------------------------------------------------


def test_a_corrupted_data_file_fails_verify(store: Storage) -> None:
    store.put(DATA)
    path = store.path(FILE_ID)
    damaged = bytearray(DATA)
    damaged[CHUNK_SIZE + 5] ^= 0x01
    path.write_bytes(damaged)

    assert not store.verify(FILE_ID)


def test_a_truncated_or_extended_data_file_fails_verify(store: Storage) -> None:
    store.put(DATA)
    path = store.path(FILE_ID)

    path.write_bytes(DATA[:-1])
    assert not store.verify(FILE_ID)

    path.write_bytes(DATA + b"\x00")
    assert not store.verify(FILE_ID)


def test_a_damaged_manifest_is_refused_and_a_put_repairs_it(store: Storage) -> None:
    store.put(DATA)
    manifest_path = store.path(FILE_ID).with_name(FILE_ID + ".manifest")
    damaged = bytearray(manifest_path.read_bytes())
    damaged[-1] ^= 0x01
    manifest_path.write_bytes(damaged)

    assert not store.verify(FILE_ID)
    with pytest.raises(StorageError, match="does not verify"):
        store.manifest_bytes(FILE_ID)

    store.put(DATA)

    assert store.verify(FILE_ID)


def test_a_manifest_misplaced_under_another_id_is_refused(store: Storage) -> None:
    other = store.put(b"other")
    store.put(DATA)
    # The manifest of "other" copied beside DATA's bytes.
    store.path(FILE_ID).with_name(FILE_ID + ".manifest").write_bytes(other.to_bytes())

    with pytest.raises(StorageError, match="is for file"):
        store.manifest(FILE_ID)


def test_stale_temp_files_of_dead_processes_are_removed_on_open(store: Storage) -> None:
    tmp = store.root / "tmp"
    stale = [f"{dead_pid()}-0123456789abcdef.tmp", f"{os.getpid()}-feed.tmp", "junk", "0-x.tmp"]
    for name in stale:
        (tmp / name).write_bytes(DATA[:100])
    # A process that is still running may be writing this one.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp / f"{live.pid}-0123456789abcdef.tmp").write_bytes(DATA[:100])

        Storage(store.root, SIGNER)

        assert temp_files(store) == [f"{live.pid}-0123456789abcdef.tmp"]
    finally:
        live.kill()
        live.wait()


def test_crash_between_manifest_and_data_leaves_nothing_visible(store: Storage) -> None:
    # Manifest in place, data still a temp file: the only state a crash can leave in files/.
    store.put(DATA)
    data_path = store.path(FILE_ID)
    os.replace(data_path, store.root / "tmp" / f"{dead_pid()}-crashed.tmp")

    reopened = Storage(store.root, SIGNER)

    assert not reopened.has(FILE_ID)
    assert list(reopened.file_ids()) == []
    assert temp_files(reopened) == []
    with pytest.raises(FileNotFound):
        reopened.manifest(FILE_ID)
    with pytest.raises(FileNotFound):
        reopened.read_chunks(FILE_ID, 0, 1)

    reopened.put(DATA)

    assert reopened.has(FILE_ID)
    assert reopened.verify(FILE_ID)
    assert list(reopened.file_ids()) == [FILE_ID]


@pytest.mark.parametrize("crash_after", [0, 1])
def test_a_crash_during_put_never_shows_data_without_its_manifest(
    store: Storage, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    # Kill the put at each rename: whatever made it into files/ must be safe to serve.
    real_replace = os.replace
    renames: list[str] = []

    def crashing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if len(renames) == crash_after:
            raise SystemExit("power cut")
        renames.append(os.fspath(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(SystemExit):
        store.put(DATA)
    monkeypatch.undo()

    assert not store.has(FILE_ID)
    assert not store.path(FILE_ID).exists()
    assert list(store.file_ids()) == []
    with pytest.raises(FileNotFound):
        store.read_chunks(FILE_ID, 0, 1)

    store.put(DATA)

    assert store.verify(FILE_ID)


def test_data_without_manifest_is_not_there(store: Storage) -> None:
    # Cannot happen through Storage (the manifest goes first); has() still does not trust
    # data alone, and a put completes it.
    store.put(DATA)
    store.path(FILE_ID).with_name(FILE_ID + ".manifest").unlink()

    assert not store.has(FILE_ID)
    assert list(store.file_ids()) == []
    with pytest.raises(FileNotFound):
        store.manifest(FILE_ID)

    store.put(DATA)

    assert store.has(FILE_ID)
    assert store.verify(FILE_ID)


def test_delete_removes_a_lone_manifest(store: Storage) -> None:
    store.put(DATA)
    store.path(FILE_ID).unlink()

    store.delete(FILE_ID)

    assert not store.path(FILE_ID).with_name(FILE_ID + ".manifest").exists()


def test_a_failed_put_leaves_no_temp_file(
    store: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MAX_FILE_SIZE", CHUNK_SIZE)
    source = tmp_path / "track.ogg"
    source.write_bytes(DATA)

    with pytest.raises(StorageError, match="limit"):
        store.put_file(source)  # fails part-way through the copy
    with pytest.raises(StorageError, match="limit"):
        store.put(DATA)
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "missing.ogg")

    assert temp_files(store) == []
    assert list(store.file_ids()) == []


def test_stray_entries_in_files_are_not_file_ids(store: Storage) -> None:
    store.put(DATA)
    parent = store.path(FILE_ID).parent
    (parent / "notes.txt").write_text("x")
    (parent / ABSENT).write_bytes(b"misfiled")  # a valid id in the wrong directory
    (parent / (ABSENT + ".manifest")).write_bytes(b"misfiled")
    (store.root / "files" / "zz").mkdir()

    assert list(store.file_ids()) == [FILE_ID]
