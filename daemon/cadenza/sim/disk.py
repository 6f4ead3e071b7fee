"""The simulator's disks: the service's storage and the speakers' caches, in memory.

A thousand speakers' caches hold more than this machine's disk (a day of listening is about
100 MB per speaker), so the simulator keeps file *contents* implicit: every file of the
catalogue is one 16 KiB block, derived from its track, repeated (the last chunk cut short).
Everything else is real: the service signs a real manifest (hash tree over the chunks, file id
= root), every chunk travels the real protocol and is verified by the real engine against it,
and the caches decide what to keep with the real :class:`~cadenza.cache.policy.LruPolicy`.
:class:`SimStorage` and :class:`SimCache` have the interfaces of
:class:`cadenza.service.storage.Storage` and :class:`cadenza.cache.store.Cache` that the access
point, the streaming engine and the overlay use, and refuse what those refuse.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from cadenza.cache.policy import LruPolicy
from cadenza.cache.store import MAX_CHUNKS_PER_READ, CacheError, NotCached, RefusedFile
from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    Manifest,
    ManifestSigner,
    ManifestVerifier,
    chunk_count,
    leaf_hash,
)
from cadenza.service.storage import FileNotFound


@dataclass(frozen=True, slots=True)
class SimFile:
    file_id: str
    size: int
    block: bytes  # CHUNK_SIZE bytes: every full chunk
    tail: bytes  # the last chunk
    manifest: bytes  # signed, as on the wire

    def chunk(self, index: int) -> bytes:
        return self.tail if index == chunk_count(self.size) - 1 else self.block

    def data(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes]:
        n = chunk_count(self.size)
        return [self.block] * (n - 1) + [self.tail]

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """``data`` is this file's contents (compared chunk by chunk; not copied if it is
        bytes, a bytearray or a whole view of one)."""
        # bytes.startswith(chunk, offset) compares in place (memcmp); comparing memoryview
        # slices goes item by item, fifty times slower (a tenth of a swarm's run, once).
        raw: bytes | bytearray
        if (
            isinstance(data, memoryview)
            and isinstance(data.obj, bytes | bytearray)
            and data.c_contiguous
        ):
            raw = data.obj if data.nbytes == len(data.obj) else bytes(data)
        else:
            raw = data if isinstance(data, bytes | bytearray) else bytes(data)
        if len(raw) != self.size:
            return False
        return all(raw.startswith(c, i * CHUNK_SIZE) for i, c in enumerate(self.chunks()))


# Whole files kept made (Library.whole): a cached play is of a popular track, mostly; 64
# files (256 MB) serve nine opens in ten at 1,000 speakers.
WHOLE_FILES_KEPT = 64


class Library:
    """Every file of the catalogue, made once and shared (read-only) by all the disks."""

    def __init__(self, signer: ManifestSigner, whole_files_kept: int = WHOLE_FILES_KEPT) -> None:
        self.signer = signer
        self.files: dict[str, SimFile] = {}
        self._whole: OrderedDict[str, bytes] = OrderedDict()
        self._whole_kept = whole_files_kept

    def make(self, name: str, size: int) -> SimFile:
        """The file called ``name`` (any stable string) of ``size`` bytes, signed."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        block = hashlib.shake_256(name.encode()).digest(CHUNK_SIZE)
        n = chunk_count(size)
        tail = block[: size - (n - 1) * CHUNK_SIZE]
        leaf = leaf_hash(block)
        hashes = [leaf] * (n - 1) + [leaf_hash(tail)]
        manifest = self.signer.sign_hashes(hashes, size)
        f = SimFile(manifest.file_id, size, block, tail, manifest.to_bytes())
        self.files[f.file_id] = f
        return f

    def get(self, file_id: str) -> SimFile | None:
        return self.files.get(file_id)

    def whole(self, f: SimFile) -> bytes:
        """``f``'s contents as one bytes object, shared: a speaker's cache reads whole files,
        and making 4 MB anew for every cached play (allocating, copying) was a fiftieth of a
        swarm's run. Immutable, so every reader may hold the same one."""
        data = self._whole.get(f.file_id)
        if data is None:
            data = f.data()
            self._whole[f.file_id] = data
            if len(self._whole) > self._whole_kept:
                self._whole.popitem(last=False)
        else:
            self._whole.move_to_end(f.file_id)
        return data


def _chunks(f: SimFile, first: int, count: int) -> list[bytes]:
    for name, value in (("first", first), ("count", count)):
        if type(value) is not int:
            raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= count <= MAX_CHUNKS_PER_READ:
        raise ValueError(f"count {count} not in 1..{MAX_CHUNKS_PER_READ}")
    n = chunk_count(f.size)
    if first < 0 or first + count > n:
        raise ValueError(f"chunks {first}..{first + count - 1} not within 0..{n - 1}")
    if first + count < n:
        return [f.block] * count
    return [f.block] * (count - 1) + [f.tail]


class SimStorage:
    """The service's storage (the part the access point reads): the whole library."""

    def __init__(self, library: Library) -> None:
        self.library = library

    def _file(self, file_id: str) -> SimFile:
        f = self.library.get(file_id)
        if f is None:
            raise FileNotFound(f"no file {file_id}")
        return f

    def has(self, file_id: str) -> bool:
        return file_id in self.library.files

    def manifest_bytes(self, file_id: str) -> bytes:
        return self._file(file_id).manifest

    def size(self, file_id: str) -> int:
        return self._file(file_id).size

    def read_chunks(self, file_id: str, first: int, count: int) -> list[bytes]:
        return _chunks(self._file(file_id), first, count)

    def file_ids(self) -> Iterator[str]:
        return iter(self.library.files)


class SimCache:
    """A speaker's cache: which files it holds, under the real LRU policy, pins included."""

    def __init__(self, library: Library, capacity: int) -> None:
        self.library = library
        self._policy = LruPolicy(capacity)
        self._clock = itertools.count()  # recency: a counter, as the real store uses
        self._verifier: ManifestVerifier | None = None
        self.evictions = 0

    # the interface of cadenza.cache.store.Cache that the daemon uses

    def set_verifier(self, verifier: ManifestVerifier | None) -> None:
        self._verifier = verifier

    def close(self) -> None:
        pass

    @property
    def capacity(self) -> int:
        return self._policy.capacity

    @property
    def used_bytes(self) -> int:
        return self._policy.used

    def has(self, file_id: str) -> bool:
        return file_id in self._policy

    def file_ids(self) -> list[str]:
        return list(self._policy)

    def _held(self, file_id: str) -> SimFile:
        f = self.library.get(file_id) if file_id in self._policy else None
        if f is None:
            raise NotCached(f"file {file_id} is not cached")
        return f

    def size(self, file_id: str) -> int:
        return self._held(file_id).size

    def manifest(self, file_id: str) -> bytes:
        return self._held(file_id).manifest

    def open(self, file_id: str) -> bytes:
        f = self._held(file_id)
        self._policy.touch(file_id, next(self._clock))
        return self.library.whole(f)

    def read_chunks(self, file_id: str, first: int, count: int) -> list[bytes]:
        return _chunks(self._held(file_id), first, count)

    def put(self, file_id: str, manifest: bytes | Manifest, data: bytes | memoryview) -> bool:
        f = self.library.get(file_id)
        raw = manifest.to_bytes() if isinstance(manifest, Manifest) else manifest
        if f is None or raw != f.manifest or not f.matches(data):
            raise RefusedFile(f"file {file_id}: data or manifest does not match its id")
        return self._admit(f)

    def warm(self, file_id: str) -> bool:
        """Put a file in without streaming it (a cache that was in use before the run)."""
        f = self.library.get(file_id)
        if f is None:
            raise CacheError(f"no file {file_id}")
        return self._admit(f)

    def _admit(self, f: SimFile) -> bool:
        needed = f.size + len(f.manifest)
        if f.file_id in self._policy:
            self._policy.touch(f.file_id, next(self._clock))
            return True
        victims = self._policy.victims(needed)
        if victims is None:
            return False
        for v in victims:
            self._policy.remove(v)
            self.evictions += 1
        self._policy.add(f.file_id, needed, next(self._clock))
        return True

    def remove(self, file_id: str) -> bool:
        if file_id not in self._policy:
            return False
        self._policy.remove(file_id)
        return True

    def set_capacity(self, capacity: int) -> None:
        self._policy.set_capacity(capacity)

    def pin(self, file_id: str) -> None:
        self._policy.pin(file_id)

    def unpin(self, file_id: str) -> None:
        self._policy.unpin(file_id)
