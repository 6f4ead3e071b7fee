"""The speaker's cache on a real disk: LRU, pins, reopening, damage, kill -9, a full disk."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza.cache import (
    MAX_CHUNKS_PER_READ,
    Cache,
    CacheError,
    CacheLocked,
    CorruptFile,
    InvalidFileId,
    NotCached,
    RefusedFile,
    default_capacity,
)
from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    ManifestSigner,
    ManifestVerifier,
    chunk_hashes,
    file_id_of,
)

SIGNER = ManifestSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
VERIFIER = ManifestVerifier([SIGNER.public_key])
STRANGER = ManifestSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
ABSENT = "ab" * 32


class Track:
    """An encoded file as the stream engine would hand it over: id, manifest, bytes."""

    def __init__(self, seed: int, size: int = 3 * CHUNK_SIZE - 100) -> None:
        self.data = random.Random(seed).randbytes(size)
        manifest = SIGNER.sign(self.data)
        self.manifest = manifest
        self.raw_manifest = manifest.to_bytes()
        self.file_id = manifest.file_id

    @property
    def cost(self) -> int:
        """What it counts against the capacity: data and manifest."""
        return len(self.data) + len(self.raw_manifest)

    def put_into(self, cache: Cache) -> bool:
        return cache.put(self.file_id, self.raw_manifest, self.data)


A, B, C, D, E = (Track(seed) for seed in range(5))
# Room for exactly three of the equal-sized tracks above.
ROOM_FOR_3 = 3 * A.cost + 10


def open_cache(root: Path, **kwargs: object) -> Cache:
    kwargs.setdefault("capacity", 10 * 1024 * 1024)
    return Cache(root, verifier=VERIFIER, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache(root: Path) -> Iterator[Cache]:
    with open_cache(root) as cache:
        yield cache


def data_path(root: Path, file_id: str) -> Path:
    return root / "files" / file_id[:2] / file_id


def files_on_disk(root: Path) -> dict[str, list[str]]:
    """Every name under files/ and tmp/ (to catch leftovers of any kind)."""
    names: dict[str, list[str]] = {"files": [], "tmp": []}
    for top in names:
        for dirpath, _, filenames in os.walk(root / top):
            names[top].extend(os.path.join(os.path.relpath(dirpath, root), n) for n in filenames)
        names[top].sort()
    return names


def check_consistent(root: Path, cache: Cache) -> None:
    """What the cache reports is exactly what is on disk, and every file is whole."""
    ids = cache.file_ids()
    on_disk = files_on_disk(root)
    assert on_disk["tmp"] == [], "temp files left behind"
    expected = sorted(
        name
        for file_id in ids
        for name in (f"files/{file_id[:2]}/{file_id}", f"files/{file_id[:2]}/{file_id}.manifest")
    )
    assert on_disk["files"] == expected, "files on disk differ from what the cache reports"
    total = 0
    for file_id in ids:
        data = data_path(root, file_id).read_bytes()
        raw = data_path(root, file_id).with_name(file_id + ".manifest").read_bytes()
        total += len(data) + len(raw)
        check_whole(file_id, raw, data)
    assert cache.used_bytes == total


def check_whole(file_id: str, raw_manifest: bytes, data: bytes) -> None:
    """``data`` is the complete file ``file_id`` and ``raw_manifest`` describes it."""
    assert file_id_of(data) == file_id
    manifest = VERIFIER.verify(raw_manifest, file_id=file_id)
    assert manifest.size == len(data)
    assert list(manifest.hashes) == chunk_hashes(data)


# -- the good path ---------------------------------------------------------------------------


def test_put_then_everything_reads_back(root: Path, cache: Cache) -> None:
    assert not cache.has(A.file_id)
    assert A.put_into(cache)

    assert cache.has(A.file_id)
    assert cache.open(A.file_id) == A.data
    assert cache.manifest(A.file_id) == A.raw_manifest
    assert cache.size(A.file_id) == len(A.data)
    assert cache.read_chunks(A.file_id, 0, 1) == [A.data[:CHUNK_SIZE]]
    assert cache.read_chunks(A.file_id, 1, 2) == [
        A.data[CHUNK_SIZE : 2 * CHUNK_SIZE],
        A.data[2 * CHUNK_SIZE :],
    ]
    assert cache.file_ids() == [A.file_id]
    assert cache.used_bytes == A.cost
    assert cache.verify(A.file_id)
    check_consistent(root, cache)


def test_a_manifest_object_is_accepted_too(cache: Cache) -> None:
    assert cache.put(A.file_id, A.manifest, A.data)
    assert cache.manifest(A.file_id) == A.raw_manifest


def test_a_read_only_view_is_accepted_and_written_whole(cache: Cache) -> None:
    """The stream engine hands over its buffer's bytes as a view (no copy of the track)."""
    held = bytearray(A.data)
    assert cache.put(A.file_id, A.raw_manifest, memoryview(held).toreadonly())
    assert cache.open(A.file_id) == A.data
    with pytest.raises(RefusedFile):
        cache.put(B.file_id, B.raw_manifest, memoryview(held).toreadonly())


def test_an_empty_file_is_cached(cache: Cache) -> None:
    empty = Track(99, size=0)
    assert empty.put_into(cache)
    assert cache.open(empty.file_id) == b""
    assert cache.read_chunks(empty.file_id, 0, 1) == [b""]


def test_putting_a_cached_file_again_is_a_use(cache: Cache) -> None:
    for track in (A, B):
        assert track.put_into(cache)
    assert A.put_into(cache)
    assert cache.file_ids() == [B.file_id, A.file_id]
    assert cache.used_bytes == A.cost + B.cost


def test_remove(root: Path, cache: Cache) -> None:
    A.put_into(cache)
    assert cache.remove(A.file_id)
    assert not cache.remove(A.file_id)
    assert not cache.has(A.file_id)
    with pytest.raises(NotCached):
        cache.open(A.file_id)
    with pytest.raises(NotCached):
        cache.manifest(A.file_id)
    with pytest.raises(NotCached):
        cache.read_chunks(A.file_id, 0, 1)
    assert cache.used_bytes == 0
    check_consistent(root, cache)


def test_bad_arguments(cache: Cache) -> None:
    A.put_into(cache)
    with pytest.raises(InvalidFileId):
        cache.has("../../etc/passwd")
    with pytest.raises(InvalidFileId):
        cache.open(A.file_id.upper())
    with pytest.raises(NotCached):
        cache.open(ABSENT)
    for first, count in ((0, 0), (0, MAX_CHUNKS_PER_READ + 1), (-1, 1), (2, 2), (3, 1)):
        with pytest.raises(ValueError):
            cache.read_chunks(A.file_id, first, count)


# -- eviction and pins -----------------------------------------------------------------------


def test_least_recently_used_files_go_first(root: Path) -> None:
    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        for track in (A, B, C):
            assert track.put_into(cache)
        cache.open(A.file_id)  # B is now the least recently used

        assert D.put_into(cache)
        assert cache.file_ids() == [C.file_id, A.file_id, D.file_id]
        assert E.put_into(cache)
        assert cache.file_ids() == [A.file_id, D.file_id, E.file_id]
        check_consistent(root, cache)


def test_serving_peers_does_not_count_as_a_use(root: Path) -> None:
    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        for track in (A, B, C):
            track.put_into(cache)
        cache.read_chunks(A.file_id, 0, 1)
        cache.manifest(A.file_id)
        D.put_into(cache)
        assert not cache.has(A.file_id)


def test_pinned_files_survive_eviction(root: Path) -> None:
    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        for track in (A, B, C):
            track.put_into(cache)
        with cache.pinned(A.file_id):
            assert D.put_into(cache)
            assert cache.file_ids() == [A.file_id, C.file_id, D.file_id]
        assert E.put_into(cache)  # unpinned: A is the oldest again
        assert cache.file_ids() == [C.file_id, D.file_id, E.file_id]


def test_a_file_that_cannot_fit_is_refused_cleanly(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        for track in (A, B, C):
            track.put_into(cache)
        for track in (A, B, C):
            cache.pin(track.file_id)
        with caplog.at_level(logging.WARNING, logger="cadenza.cache"):
            assert not D.put_into(cache)
        assert f"not caching file {D.file_id}" in caplog.text
        assert "held by files in use" in caplog.text
        assert cache.file_ids() == [A.file_id, B.file_id, C.file_id]

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cadenza.cache"):
            assert not Track(7, size=ROOM_FOR_3).put_into(cache)  # larger than the cache
        assert "do not fit" in caplog.text
        check_consistent(root, cache)


def test_set_capacity_evicts_down_to_it(root: Path) -> None:
    with open_cache(root) as cache:
        for track in (A, B, C, D):
            track.put_into(cache)
        cache.pin(A.file_id)
        cache.set_capacity(2 * A.cost)
        assert cache.capacity == 2 * A.cost
        assert cache.file_ids() == [A.file_id, D.file_id]

        cache.set_capacity(A.cost // 2)  # the pinned file stays until it is unpinned
        assert cache.file_ids() == [A.file_id]
        cache.unpin(A.file_id)
        assert cache.file_ids() == []
        check_consistent(root, cache)


def test_reopening_keeps_the_files_and_their_order(root: Path) -> None:
    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        for track in (A, B, C):
            track.put_into(cache)
        cache.open(A.file_id)
        cache.open(B.file_id)
        order = cache.file_ids()
    assert order == [C.file_id, A.file_id, B.file_id]

    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        assert cache.file_ids() == order
        assert cache.used_bytes == 3 * A.cost
        assert cache.open(C.file_id) == C.data  # now A is the oldest
        D.put_into(cache)
        assert cache.file_ids() == [B.file_id, C.file_id, D.file_id]

    with open_cache(root, capacity=ROOM_FOR_3) as cache:
        assert cache.file_ids() == [B.file_id, C.file_id, D.file_id]
        check_consistent(root, cache)


def test_reopening_with_a_smaller_capacity_evicts(root: Path) -> None:
    with open_cache(root) as cache:
        for track in (A, B, C):
            track.put_into(cache)
    with open_cache(root, capacity=A.cost) as cache:
        assert cache.file_ids() == [C.file_id]
        check_consistent(root, cache)


def test_the_index_is_compacted(root: Path) -> None:
    with open_cache(root) as cache:
        A.put_into(cache)
        B.put_into(cache)
        for _ in range(3000):
            cache.open(A.file_id)
        cache.open(B.file_id)
        assert (root / "index").stat().st_size < 2000 * 70  # far fewer lines than uses
    with open_cache(root) as cache:
        assert cache.file_ids() == [A.file_id, B.file_id]


def test_default_capacity_comes_from_the_file_system(root: Path) -> None:
    def free_bytes() -> int:
        usage = os.statvfs(root)
        return usage.f_bavail * usage.f_frsize

    with Cache(root, verifier=VERIFIER) as cache:
        A.put_into(cache)
    before = free_bytes()
    with Cache(root, verifier=VERIFIER) as cache:
        after = free_bytes()
        total = os.statvfs(root).f_blocks * os.statvfs(root).f_frsize
        # The cache's own bytes count as free, so a full cache does not shrink on reopening.
        # Others write to this disk too: allow for what they did while it was measured.
        low = default_capacity(min(before, after) + A.cost, total) - 1024 * 1024
        high = default_capacity(max(before, after) + A.cost, total) + 1024 * 1024
        assert low <= cache.capacity <= high
    with Cache(root, verifier=VERIFIER, cap=A.cost) as cache:
        assert cache.capacity == A.cost
        assert cache.file_ids() == [A.file_id]


def test_one_cache_per_directory(root: Path) -> None:
    with open_cache(root):
        with pytest.raises(CacheLocked):
            open_cache(root)
    with open_cache(root) as cache:
        cache.close()
        with pytest.raises(CacheError, match="closed"):
            A.put_into(cache)


# -- refused files ---------------------------------------------------------------------------


def test_data_that_does_not_match_its_id_is_refused_and_nothing_is_written(
    root: Path, cache: Cache
) -> None:
    tampered = bytearray(A.data)
    tampered[CHUNK_SIZE + 5] ^= 1
    with pytest.raises(RefusedFile, match="not " + A.file_id):
        cache.put(A.file_id, A.raw_manifest, bytes(tampered))
    with pytest.raises(RefusedFile):
        cache.put(A.file_id, A.raw_manifest, A.data[:-1])
    with pytest.raises(RefusedFile):
        cache.put(A.file_id, B.raw_manifest, A.data)  # the manifest of another file
    with pytest.raises(RefusedFile, match="unknown"):
        cache.put(A.file_id, STRANGER.sign(A.data).to_bytes(), A.data)
    with pytest.raises(RefusedFile):
        cache.put(A.file_id, A.raw_manifest[:-1], A.data)

    assert not cache.has(A.file_id)
    assert cache.used_bytes == 0
    assert files_on_disk(root) == {"files": [], "tmp": []}


def test_without_a_verifier_only_manifest_objects_are_taken(root: Path) -> None:
    with Cache(root, capacity=10**6) as cache:
        with pytest.raises(RefusedFile, match="without a verifier"):
            cache.put(A.file_id, A.raw_manifest, A.data)
        with pytest.raises(RefusedFile):
            cache.put(A.file_id, B.manifest, A.data)
        assert cache.put(A.file_id, A.manifest, A.data)
        assert cache.read_chunks(A.file_id, 2, 1) == [A.data[2 * CHUNK_SIZE :]]
        assert cache.manifest(A.file_id) == A.raw_manifest


# -- damage on disk --------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_a_corrupted_file_is_never_played(root: Path, cache: Cache) -> None:
    A.put_into(cache)
    B.put_into(cache)
    flip_byte(data_path(root, A.file_id), 2 * CHUNK_SIZE + 17)

    with pytest.raises(CorruptFile):
        cache.open(A.file_id)
    assert not cache.has(A.file_id)
    assert cache.file_ids() == [B.file_id]
    check_consistent(root, cache)


def test_a_corrupted_chunk_is_never_served(root: Path, cache: Cache) -> None:
    A.put_into(cache)
    flip_byte(data_path(root, A.file_id), CHUNK_SIZE)
    assert cache.read_chunks(A.file_id, 0, 1) == [A.data[:CHUNK_SIZE]]  # chunk 0 is intact
    with pytest.raises(CorruptFile):
        cache.read_chunks(A.file_id, 0, 2)
    assert not cache.has(A.file_id)
    check_consistent(root, cache)


def test_a_corrupted_manifest_is_never_served(root: Path, cache: Cache) -> None:
    A.put_into(cache)
    flip_byte(data_path(root, A.file_id).with_name(A.file_id + ".manifest"), 40)
    with pytest.raises(CorruptFile):
        cache.manifest(A.file_id)
    assert not cache.has(A.file_id)
    check_consistent(root, cache)


def test_verify_on_open_finds_a_flipped_byte(root: Path) -> None:
    with open_cache(root) as cache:
        A.put_into(cache)
        B.put_into(cache)
    flip_byte(data_path(root, A.file_id), 3)

    # The cheap check (sizes) cannot see it; open() would.
    with open_cache(root) as cache:
        assert cache.file_ids() == [A.file_id, B.file_id]
    with open_cache(root, verify_on_open=True) as cache:
        assert cache.file_ids() == [B.file_id]
        check_consistent(root, cache)


def test_a_truncated_file_is_found_at_every_open(root: Path) -> None:
    with open_cache(root) as cache:
        A.put_into(cache)
        B.put_into(cache)
    with data_path(root, A.file_id).open("r+b") as f:
        f.truncate(CHUNK_SIZE)
    with open_cache(root) as cache:
        assert cache.file_ids() == [B.file_id]
        check_consistent(root, cache)


# -- recovery at open ------------------------------------------------------------------------


def test_open_cleans_up_after_a_crash(root: Path) -> None:
    with open_cache(root) as cache:
        for track in (A, B, C):
            track.put_into(cache)
    # What a crash can leave: a temp file, a manifest whose data never arrived (or was
    # just removed), a file renamed into place before its index line, a torn index line.
    (root / "tmp" / "0123456789abcdef.tmp").write_bytes(D.data[:1000])
    d_path = data_path(root, D.file_id)
    d_path.parent.mkdir(exist_ok=True)
    d_path.with_name(D.file_id + ".manifest").write_bytes(D.raw_manifest)
    e_path = data_path(root, E.file_id)
    e_path.parent.mkdir(exist_ok=True)
    e_path.with_name(E.file_id + ".manifest").write_bytes(E.raw_manifest)
    e_path.write_bytes(E.data)
    with (root / "index").open("ab") as f:
        f.write(f"u {A.file_id}\n+ {B.file_id} 12".encode())

    with open_cache(root) as cache:
        # A's use counts; the torn line about B does not (B keeps its real size).
        assert cache.file_ids() == [B.file_id, C.file_id, A.file_id, E.file_id]
        assert cache.size(B.file_id) == len(B.data)
        check_consistent(root, cache)


def test_a_lost_index_is_rebuilt_from_the_files(root: Path) -> None:
    with open_cache(root) as cache:
        for track in (A, B, C):
            track.put_into(cache)
    (root / "index").unlink()
    with open_cache(root) as cache:
        assert sorted(cache.file_ids()) == sorted(t.file_id for t in (A, B, C))
        check_consistent(root, cache)


def test_an_unindexed_bad_file_is_deleted(root: Path) -> None:
    with open_cache(root) as cache:
        A.put_into(cache)
    # Bytes at B's name that are not B, with B's manifest: never adopted.
    b_path = data_path(root, B.file_id)
    b_path.parent.mkdir(exist_ok=True)
    b_path.with_name(B.file_id + ".manifest").write_bytes(B.raw_manifest)
    b_path.write_bytes(A.data)
    with open_cache(root) as cache:
        assert cache.file_ids() == [A.file_id]
        check_consistent(root, cache)


def test_an_unreadable_index_is_ignored(root: Path) -> None:
    with open_cache(root) as cache:
        A.put_into(cache)
    (root / "index").write_bytes(b"\x00" * 100)
    with open_cache(root) as cache:
        assert cache.file_ids() == [A.file_id]
        check_consistent(root, cache)


# -- threads ---------------------------------------------------------------------------------


def test_concurrent_use_from_threads(root: Path) -> None:
    tracks = [Track(100 + i, size=random.Random(i).randrange(0, 5 * CHUNK_SIZE)) for i in range(12)]
    errors: list[BaseException] = []

    def worker(cache: Cache, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                track = rng.choice(tracks)
                action = rng.random()
                if action < 0.5:
                    track.put_into(cache)
                elif action < 0.8:
                    with contextlib.suppress(NotCached):
                        assert cache.open(track.file_id) == track.data
                elif action < 0.9:
                    cache.remove(track.file_id)
                else:
                    with cache.pinned(track.file_id):
                        pass
        except BaseException as e:
            errors.append(e)

    with open_cache(root, capacity=4 * 5 * CHUNK_SIZE) as cache:
        threads = [threading.Thread(target=worker, args=(cache, seed)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert cache.used_bytes <= cache.capacity
        check_consistent(root, cache)
        order = cache.file_ids()
    with open_cache(root, capacity=4 * 5 * CHUNK_SIZE) as cache:
        assert cache.file_ids() == order


# -- kill -9 ---------------------------------------------------------------------------------

# Puts files of random sizes (up to about 20 chunks) into a small cache as fast as it can,
# playing and removing some as it goes, so that evictions happen all the time.
WRITER = r"""
import random, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cadenza.cache import Cache
from cadenza.protocol.manifest import ManifestSigner, ManifestVerifier

signer = ManifestSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
rng = random.Random(int(sys.argv[2]))
cache = Cache(
    Path(sys.argv[1]), capacity=int(sys.argv[3]), verifier=ManifestVerifier([signer.public_key])
)
print("ready", flush=True)
while True:
    data = rng.randbytes(rng.randrange(0, 20 * 16384))
    manifest = signer.sign(data)
    ok = cache.put(manifest.file_id, manifest.to_bytes(), data)
    print("put", manifest.file_id, ok, flush=True)
    ids = cache.file_ids()
    if ids and rng.random() < 0.5:
        cache.open(rng.choice(ids))
    if ids and rng.random() < 0.1:
        cache.remove(rng.choice(ids))
"""


def check_every_named_file_is_whole(root: Path) -> int:
    """What holds on disk at every instant, before any recovery: a file under its final
    name is complete and verifies, and its manifest is beside it. Returns how many."""
    count = 0
    for dirpath, _, filenames in os.walk(root / "files"):
        for name in filenames:
            if name.endswith(".manifest"):
                continue
            path = Path(dirpath) / name
            check_whole(name, path.with_name(name + ".manifest").read_bytes(), path.read_bytes())
            count += 1
    return count


@pytest.mark.slow
def test_kill_9_at_random_instants_never_leaves_a_bad_file(root: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 32)
    capacity = 1024 * 1024
    puts = 0
    for iteration in range(30):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(seed + iteration), str(capacity)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        try:
            if iteration % 4 == 0:
                # Anywhere from start-up through the recovery at open to the first puts.
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                assert writer.stdout.readline() == "ready\n", f"writer failed (seed {seed})"
                time.sleep(rng.uniform(0.0, 0.3))
        finally:
            writer.send_signal(signal.SIGKILL)
            output = writer.stdout.read()
            writer.wait()
            writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        puts += sum(line.startswith("put ") for line in output.splitlines())

        check_every_named_file_is_whole(root)
        if iteration % 5 == 4:
            with open_cache(root, capacity=capacity) as cache:
                check_consistent(root, cache)
                for file_id in cache.file_ids():
                    check_whole(file_id, cache.manifest(file_id), cache.open(file_id))

    assert puts > 0, "the writer never got to put anything"
    with open_cache(root, capacity=capacity, verify_on_open=True) as cache:
        before = cache.file_ids()
        check_consistent(root, cache)
    with open_cache(root, capacity=capacity) as cache:
        assert cache.file_ids() == before


# -- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, so the disk fills up long before the cache does."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)])


def test_a_full_disk_fails_puts_cleanly_and_eviction_makes_room(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = small_fs / "cache"
    mib = 1024 * 1024
    big = [Track(200 + i, size=mib) for i in range(6)]
    # The cache would take 100 MiB; the file system has 4.
    with open_cache(root, capacity=100 * mib) as cache:
        for track in big[:3]:
            assert track.put_into(cache)
        check_consistent(root, cache)

        # The fourth does not fit on the disk: the oldest file makes room for it.
        with caplog.at_level(logging.DEBUG, logger="cadenza.cache"):
            assert big[3].put_into(cache)
        assert "because the disk is full" in caplog.text
        assert cache.file_ids() == [t.file_id for t in big[1:4]]
        check_consistent(root, cache)

        # Larger than the whole disk: refused, and nothing is evicted for it.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cadenza.cache"):
            assert not Track(300, size=5 * mib).put_into(cache)
        assert "the disk is full" in caplog.text
        assert cache.file_ids() == [t.file_id for t in big[1:4]]
        check_consistent(root, cache)

        # Everything cached is in use: nothing can go, so the put fails.
        for track in big[1:4]:
            cache.pin(track.file_id)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cadenza.cache"):
            assert not big[4].put_into(cache)
        assert f"not caching file {big[4].file_id}" in caplog.text
        assert "the disk is full" in caplog.text
        check_consistent(root, cache)

        # Something else fills the disk; once files are unpinned, eviction makes room.
        ballast = small_fs / "ballast"
        ballast.write_bytes(b"\xff" * (mib // 2))
        for track in big[1:4]:
            cache.unpin(track.file_id)
        assert big[4].put_into(cache)
        assert big[5].put_into(cache)
        assert cache.has(big[4].file_id) and cache.has(big[5].file_id)
        assert not cache.has(big[1].file_id)
        check_consistent(root, cache)
        for file_id in cache.file_ids():
            check_whole(file_id, cache.manifest(file_id), cache.open(file_id))
        order = cache.file_ids()

    with open_cache(root, capacity=100 * mib, verify_on_open=True) as cache:
        assert cache.file_ids() == order
        check_consistent(root, cache)
