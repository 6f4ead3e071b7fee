"""The speaker's on-disk cache of whole encoded files, each beside its signed manifest.

Layout under ``root``::

    files/ab/abcd…ef             a file's bytes, named by its id (the root of its hash tree)
    files/ab/abcd…ef.manifest    its signed manifest, so a cached track plays with no network
    tmp/<random>.tmp             files being written
    index                        the LRU log (below)
    lock                         flock()ed by the one process that has the cache open

The files are the truth; the index only remembers the order in which they were used.

*Files.* A file enters only after its bytes hashed to its id and its manifest matched them.
Both are written to ``tmp/`` and fsynced; the manifest is renamed into place, then the data,
then the directory is fsynced. Removal unlinks the data, then the manifest. Nothing is ever
changed in place. So whenever a crash comes, a data file under ``files/`` is complete and
verified, and has its manifest beside it; the only debris is temp files and manifests
without data, which the next open deletes (the lock tells it nobody else is writing).

*Index.* An append-only text log: a header line, then ``+ <id> <size> <manifest size>``
when a file enters and ``u <id>`` when it is played (or put again). Replaying it gives each
file's sizes and the LRU order (the last line naming a file is its last use); recency is a
counter, not the wall clock, which can jump on a board without a real-time clock. Each line
goes out in one ``write`` and is not fsynced: a killed process loses nothing the kernel
already has, and a power cut can lose only the last few uses, which makes eviction slightly
less accurate and never serves a wrong byte. A line is believed only if it is whole (ends in
a newline and parses), so a torn last line is skipped. At every open, and whenever the log
has grown to several lines per file, it is rewritten compactly (temp file, fsync, rename): a
crash leaves either the old log or the new one.

*Open* reconciles the two. Entries without files are dropped; files whose sizes differ from
their entry are verified in full and kept only if they pass; files without an entry (a
crash between the rename and the log line, or a lost log) are verified in full and adopted
as the most recently used, or deleted. ``verify_on_open=True`` verifies every file in full.

*Space.* A put first evicts least recently used, unpinned files until it fits under the
capacity. If the disk fills up anyway (ENOSPC: an SD card shared with other data), the temp
files go, more files are evicted until the file system reports room, and the put is tried
once more; then it gives up and returns ``False``, with a log line saying why.

*Reads* never trust the disk: :meth:`Cache.open` hashes the whole file against its id (a
few ms per MB) so a file damaged on an SD card is never played, and
:meth:`Cache.read_chunks` checks every chunk against the manifest before serving it. A
damaged file is removed and reported as :class:`CorruptFile`, a kind of :class:`NotCached`.

Blocking and thread-safe; the daemon calls it through :mod:`cadenza.blocking`. One lock guards
the index and is held only briefly; a second one runs puts one at a time so that space
decisions do not race, and a put writes and fsyncs its temp files outside the first, so
playback reads never wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from cadenza.cache.policy import LruPolicy, default_capacity
from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    MAX_FILE_SIZE,
    MAX_MANIFEST_SIZE,
    ChunkError,
    Manifest,
    ManifestError,
    ManifestVerifier,
    chunk_count,
    chunk_hashes,
    file_id_of,
    is_file_id,
    leaf_hash,
    tree_root,
)
from cadenza.system.files import atomic_write, fsync_dir, write_new

__all__ = [
    "MAX_CHUNKS_PER_READ",
    "Cache",
    "CacheError",
    "CacheLocked",
    "CorruptFile",
    "InvalidFileId",
    "NotCached",
    "RefusedFile",
]

log = logging.getLogger("cadenza.cache")

# 1 MiB per call, as the service's storage: enough for a burst ahead of playback, little
# enough that one peer's request cannot tie up a worker thread or much memory.
MAX_CHUNKS_PER_READ = 64
# Files are hashed in blocks of this many bytes: few system calls, bounded memory.
_BLOCK_SIZE = 64 * CHUNK_SIZE
# Room a full disk must have beyond a file's bytes before a retried put is worth it:
# block rounding of two files, directory entries, an index line.
_DISK_SLACK = 256 * 1024
# Rewrite the index once it holds this many lines per cached file (plus a floor, so a
# nearly empty cache is not rewritten on every play).
_COMPACT_LINES_PER_FILE = 4
_COMPACT_MIN_LINES = 1024
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_FILES = "files"
_TMP = "tmp"
_INDEX = "index"
_LOCK = "lock"
_MANIFEST_SUFFIX = ".manifest"
_TMP_SUFFIX = ".tmp"
_INDEX_HEADER = b"cadenza-cache-index 1\n"
_ADDED_RE = re.compile(rb"\+ ([0-9a-f]{64}) (0|[1-9][0-9]{0,11}) (0|[1-9][0-9]{0,11})\n")
_USED_RE = re.compile(rb"u ([0-9a-f]{64})\n")
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")


class CacheError(Exception):
    """The cache cannot do what was asked; the message says which file and why."""


class NotCached(CacheError, KeyError):
    """The file is not (or no longer) in the cache."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CorruptFile(NotCached):
    """The cached file failed verification; it has been removed, fetch it again."""


class RefusedFile(CacheError, ValueError):
    """:meth:`Cache.put` was given data or a manifest that does not match the file id."""


class InvalidFileId(CacheError, ValueError):
    """A string that is not a file id; refused before it gets near a path."""


class CacheLocked(CacheError):
    """Another :class:`Cache` (in this process or another) has this directory open."""


class Cache:
    """Whole encoded files under ``root``, evicted least recently used first.

    ``capacity`` is the size limit in bytes (data and manifests); ``None`` takes
    :func:`~cadenza.cache.policy.default_capacity` of the file system, counting what the
    cache already holds as free, with ``cap`` (the configured bound for a small SD card)
    as its upper limit. ``verifier`` checks manifests (signature, id, hashes) when they
    enter and whenever they are read; without one, :meth:`put` takes only
    :class:`Manifest` objects and stored manifests are not re-checked (data always is,
    against its id). ``verify_on_open`` hashes every file when the cache is opened;
    otherwise only their sizes are checked (and each file is hashed when it is opened).

    Raises :class:`CacheLocked` if the directory is already open.

    Why one class of this length: one lock guards the index, the files on disk and the
    size accounting together, and every method keeps the invariant that they agree (what is
    indexed is on disk and counted); the decisions that need no lock (eviction order, capacity)
    are already apart, in :mod:`cadenza.cache.policy`.
    """

    def __init__(
        self,
        root: Path,
        *,
        capacity: int | None = None,
        cap: int | None = None,
        verifier: ManifestVerifier | None = None,
        verify_on_open: bool = False,
    ) -> None:
        if capacity is not None and cap is not None:
            raise ValueError("give capacity or cap (a bound on the default capacity), not both")
        self.root = Path(root)
        self._files = self.root / _FILES
        self._tmp = self.root / _TMP
        self._index_path = self.root / _INDEX
        self._verifier = verifier
        # Guards the policy, the sizes and the index; held briefly (no file is written
        # under it but the index).
        self._lock = threading.Lock()
        # One put at a time, so the room one put makes is not taken by another.
        self._put_lock = threading.Lock()
        self._policy = LruPolicy(0)
        # (data size, manifest size) of every cached file; the policy holds their sum.
        self._sizes: dict[str, tuple[int, int]] = {}
        self._clock = 0
        self._index_fd = -1
        self._index_bytes = 0
        self._index_lines = 0
        # Set while the index cannot be written (a full disk), so that is logged once.
        self._index_failing = False
        self._closed = False

        self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self._files, self._tmp):
            _make_dir(directory)
        self._lock_fd = _lock_directory(self.root / _LOCK)
        try:
            self._recover(verify_all=verify_on_open)
            if capacity is None:
                usage = shutil.disk_usage(self.root)
                capacity = default_capacity(usage.free + self._policy.used, usage.total, cap)
            with self._lock:
                self._policy.set_capacity(capacity)
                self._evict_to_capacity_locked()
                self._rewrite_index_locked()
        except BaseException:
            self.close()
            raise
        log.info(
            "cache at %s: %d files, %d of %d bytes",
            self.root,
            len(self._policy),
            self._policy.used,
            self._policy.capacity,
        )

    def set_verifier(self, verifier: ManifestVerifier | None) -> None:
        """Check manifests with ``verifier`` from now on (the service's keys, known at login):
        then a chunk served to a peer is checked alone, not by hashing its whole file."""
        with self._lock:
            self._verifier = verifier

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the directory. The cache on disk is consistent at every instant, so
        this only closes files; calling it again does nothing."""
        with self._lock:
            self._closed = True
            for fd in (self._index_fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)
            self._index_fd = self._lock_fd = -1

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries ----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The size limit in bytes."""
        return self._policy.capacity

    @property
    def used_bytes(self) -> int:
        """The bytes of every cached file and its manifest."""
        with self._lock:
            return self._policy.used

    def has(self, file_id: str) -> bool:
        """Whether ``file_id`` is cached (does not count as a use)."""
        _check_file_id(file_id)
        with self._lock:
            return file_id in self._policy

    def file_ids(self) -> list[str]:
        """Every cached file id, least recently used first."""
        with self._lock:
            return list(self._policy)

    def size(self, file_id: str) -> int:
        """The size of the data of ``file_id`` in bytes. :class:`NotCached` if absent."""
        _check_file_id(file_id)
        with self._lock:
            sizes = self._sizes.get(file_id)
        if sizes is None:
            raise _not_cached(file_id)
        return sizes[0]

    def manifest(self, file_id: str) -> bytes:
        """The signed manifest of ``file_id`` as it goes on the wire (checked when the
        cache has a verifier). :class:`NotCached` if absent, :class:`CorruptFile` if bad."""
        data_path = self._path_if_cached(file_id)
        raw = self._read_manifest(file_id, _manifest_path(data_path))
        if self._verifier is not None:
            self._verified_manifest(file_id, raw)
        return raw

    def open(self, file_id: str) -> bytes:
        """The whole of ``file_id``, verified against its id, and a use of it (LRU).

        :class:`NotCached` if absent; :class:`CorruptFile` (and the file is removed) if its
        bytes no longer hash to its id.
        """
        data = self._read_verified(file_id)
        with self._lock:
            if file_id in self._policy:
                self._touch_locked(file_id)
        return data

    def read_chunks(self, file_id: str, first: int, count: int) -> list[bytes]:
        """Chunks ``first`` to ``first + count - 1`` of ``file_id``, each checked before it
        is returned (for serving peers; not a use, so peers cannot keep a file cached).

        ``ValueError`` if ``count`` is not in ``1..MAX_CHUNKS_PER_READ`` or the range is not
        within the file; :class:`NotCached` if absent; :class:`CorruptFile` (and the file is
        removed) if a chunk fails its check.
        """
        for name, value in (("first", first), ("count", count)):
            if type(value) is not int:
                raise ValueError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= count <= MAX_CHUNKS_PER_READ:
            raise ValueError(f"count {count} not in 1..{MAX_CHUNKS_PER_READ}")
        path = self._path_if_cached(file_id)
        size = self.size(file_id)
        chunks = chunk_count(size)
        if first < 0 or first + count > chunks:
            raise ValueError(
                f"chunks {first}..{first + count - 1} not within 0..{chunks - 1} of file {file_id}"
            )
        if self._verifier is None:
            # No manifest to check single chunks against: check the whole file by its id.
            whole = self._read_verified(file_id)
            start = first * CHUNK_SIZE
            return _split(whole[start : start + count * CHUNK_SIZE])
        manifest = self._verified_manifest(
            file_id, self._read_manifest(file_id, _manifest_path(path))
        )
        start = first * CHUNK_SIZE
        length = min(count * CHUNK_SIZE, size - start)
        try:
            with path.open("rb") as f:
                data = os.pread(f.fileno(), length, start)
        except FileNotFoundError:
            raise _not_cached(file_id) from None
        if len(data) != length:
            raise self._discard_corrupt(file_id, f"it is shorter than its {size} bytes")
        result = _split(data)
        for offset, chunk in enumerate(result):
            try:
                manifest.verify_chunk(first + offset, chunk)
            except ChunkError as e:
                raise self._discard_corrupt(file_id, str(e)) from None
        return result

    def verify(self, file_id: str) -> bool:
        """Hash ``file_id`` and check its manifest; remove it and return ``False`` if either
        is bad. :class:`NotCached` if absent."""
        self._path_if_cached(file_id)
        problem = self._problem_with(file_id)
        if problem is None:
            return True
        self._discard_corrupt(file_id, problem)
        return False

    # -- changes ----------------------------------------------------------------------------

    def put(self, file_id: str, manifest: bytes | Manifest, data: bytes | memoryview) -> bool:
        """Cache ``data`` as ``file_id`` with its ``manifest``; ``True`` once it is cached.

        Checks before anything is written that ``data`` hashes to ``file_id`` and that the
        manifest names it and lists its chunk hashes (and, with a verifier, is signed by a
        trusted key): :class:`RefusedFile` if not. Evicts least recently used files (never
        a pinned one) to make room. ``False``, with a log message saying why, if the file
        cannot fit (larger than the capacity, or pinned files hold the room) or the disk
        is full even after evicting more; no partial file is ever left behind. A file
        already cached counts as a use and returns ``True``.
        """
        _check_file_id(file_id)
        manifest_bytes = self._checked_manifest(file_id, manifest, data)
        needed = len(data) + len(manifest_bytes)
        with self._put_lock:
            with self._lock:
                self._check_open()
                if file_id in self._policy:
                    self._touch_locked(file_id)
                    return True
                victims = self._policy.victims(needed)
                if victims is None:
                    log.warning(
                        "not caching file %s: its %d bytes do not fit in the cache's %d"
                        " (%d bytes held by files in use)",
                        file_id,
                        needed,
                        self._policy.capacity,
                        self._pinned_bytes_locked(),
                    )
                    return False
                self._evict_locked(victims, f"to make room for {file_id}")
            return self._write_with_retry(file_id, manifest_bytes, data)

    def remove(self, file_id: str) -> bool:
        """Delete ``file_id`` even if pinned; ``False`` if it was not cached."""
        _check_file_id(file_id)
        with self._lock:
            self._check_open()
            if file_id not in self._policy:
                return False
            self._evict_locked([file_id], "on request")
            return True

    def set_capacity(self, capacity: int) -> None:
        """Change the size limit, evicting least recently used files down to it (pinned
        files stay, and the rest go when they are unpinned)."""
        with self._lock:
            self._check_open()
            self._policy.set_capacity(capacity)
            self._evict_to_capacity_locked()

    def pin(self, file_id: str) -> None:
        """Keep ``file_id`` from eviction (it is being played or uploaded) until unpinned.

        Counted; a file not cached yet may be pinned (one streaming in while it plays).
        """
        _check_file_id(file_id)
        with self._lock:
            self._policy.pin(file_id)

    def unpin(self, file_id: str) -> None:
        """Undo one :meth:`pin`; ``ValueError`` if ``file_id`` is not pinned."""
        _check_file_id(file_id)
        with self._lock:
            self._policy.unpin(file_id)
            if not self._closed:
                self._evict_to_capacity_locked()

    @contextlib.contextmanager
    def pinned(self, file_id: str) -> Iterator[None]:
        """:meth:`pin` ``file_id`` for the duration of a ``with`` block."""
        self.pin(file_id)
        try:
            yield
        finally:
            self.unpin(file_id)

    # -- put --------------------------------------------------------------------------------

    def _checked_manifest(
        self, file_id: str, manifest: bytes | Manifest, data: bytes | memoryview
    ) -> bytes:
        """The manifest's wire bytes, once data and manifest are known to match ``file_id``."""
        if len(data) > MAX_FILE_SIZE:
            raise RefusedFile(f"file of {len(data)} bytes exceeds the {MAX_FILE_SIZE} limit")
        hashes = chunk_hashes(data)
        root = tree_root(hashes).hex()
        parsed: Manifest | None
        if root != file_id:
            raise RefusedFile(f"data of {len(data)} bytes is file {root}, not {file_id}")
        if isinstance(manifest, Manifest):
            parsed, raw = manifest, manifest.to_bytes()
        elif self._verifier is None:
            raise RefusedFile(
                f"cannot check the manifest bytes of {file_id} without a verifier;"
                " pass a verified Manifest"
            )
        else:
            parsed, raw = None, bytes(manifest)
        if self._verifier is not None:
            try:
                parsed = self._verifier.verify(raw, file_id=file_id)
            except ManifestError as e:
                raise RefusedFile(f"manifest of {file_id} refused: {e}") from None
        assert parsed is not None
        if parsed.file_id != file_id or parsed.size != len(data) or list(parsed.hashes) != hashes:
            raise RefusedFile(f"manifest of {parsed.file_id} does not describe file {file_id}")
        return raw

    def _write_with_retry(
        self, file_id: str, manifest_bytes: bytes, data: bytes | memoryview
    ) -> bool:
        needed = len(data) + len(manifest_bytes)
        try:
            self._write_and_publish(file_id, manifest_bytes, data)
            return True
        except OSError as e:
            if e.errno not in _DISK_FULL:
                log.error("not caching file %s: cannot write it: %s", file_id, e)
                return False
        with self._lock:
            avail = _available_bytes(self.root)
            # Evict until the file system itself reports room. If it already did and
            # still said no (reserved blocks, inodes), evict at least one file.
            shortfall = max(needed + _DISK_SLACK - avail, 1)
            victims = self._policy.oldest_unpinned(shortfall)
            if victims is None:
                log.warning(
                    "not caching file %s (%d bytes): the disk is full (%d bytes free) and"
                    " evicting every file not in use would not make room",
                    file_id,
                    needed,
                    avail,
                )
                return False
            self._evict_locked(victims, f"because the disk is full, for {file_id}")
        try:
            self._write_and_publish(file_id, manifest_bytes, data)
            return True
        except OSError as e:
            log.warning(
                "not caching file %s (%d bytes): %s, even after evicting %d files",
                file_id,
                needed,
                "the disk is full" if e.errno in _DISK_FULL else f"cannot write it: {e}",
                len(victims),
            )
            return False

    def _write_and_publish(
        self, file_id: str, manifest_bytes: bytes, data: bytes | memoryview
    ) -> None:
        """Write both temp files, then rename them into place (manifest first) and record
        the file. On any error nothing of it is left on disk or in the index."""
        target = self._data_path(file_id)
        manifest_target = _manifest_path(target)
        temps: list[Path] = []
        manifest_placed = False
        try:
            data_tmp = self._write_temp(data, temps)
            manifest_tmp = self._write_temp(manifest_bytes, temps)
            with self._lock:
                self._check_open()
                self._make_fanout_dir(target.parent)
                os.replace(manifest_tmp, manifest_target)
                manifest_placed = True
                os.replace(data_tmp, target)
                manifest_placed = False
                temps.clear()
                self._record_locked(file_id, len(data), len(manifest_bytes))
        finally:
            for path in temps:
                _unlink_quietly(path)
            if manifest_placed:
                _unlink_quietly(manifest_target)
        try:
            fsync_dir(target.parent)
        except OSError as e:
            # The renames are done (a killed process keeps them); only a power cut could
            # now lose the file, and open() would then forget it.
            log.warning("cached file %s, but syncing its directory failed: %s", file_id, e)

    def _write_temp(self, data: bytes | memoryview, temps: list[Path]) -> Path:
        path = self._tmp / f"{secrets.token_hex(8)}{_TMP_SUFFIX}"
        temps.append(path)
        write_new(path, data, 0o644)
        return path

    def _make_fanout_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            _make_dir(directory)
            # The new directory's entry lives in its parent; without this a power cut
            # could lose it and every file renamed into it.
            fsync_dir(directory.parent)

    # -- bookkeeping (all *_locked under self._lock) ----------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError(f"the cache at {self.root} is closed")

    def _record_locked(self, file_id: str, size: int, manifest_size: int) -> None:
        self._clock += 1
        self._policy.add(file_id, size + manifest_size, self._clock)
        self._sizes[file_id] = (size, manifest_size)
        self._append_index_locked(f"+ {file_id} {size} {manifest_size}\n".encode())
        # set_capacity may have lowered the capacity since the put made room.
        self._evict_to_capacity_locked()

    def _touch_locked(self, file_id: str) -> None:
        self._clock += 1
        self._policy.touch(file_id, self._clock)
        self._append_index_locked(f"u {file_id}\n".encode())

    def _evict_to_capacity_locked(self) -> None:
        victims = self._policy.victims(0)
        if victims is None:  # pinned files alone exceed the capacity: all but them go
            victims = self._policy.evictable()
        if victims:
            self._evict_locked(victims, f"to stay within {self._policy.capacity} bytes")

    def _evict_locked(self, file_ids: list[str], why: str) -> None:
        for file_id in file_ids:
            size = self._policy.remove(file_id)
            del self._sizes[file_id]
            # No index line: an entry whose file is gone is dropped at the next open.
            self._delete_files(file_id)
            log.debug("evicted file %s (%d bytes) %s", file_id, size, why)

    def _pinned_bytes_locked(self) -> int:
        return sum(self._policy.size_of(f) for f in self._policy if self._policy.is_pinned(f))

    def _discard_corrupt(self, file_id: str, problem: str) -> CorruptFile:
        """Remove a file that failed a check; returns the error for the caller to raise."""
        log.warning("removing cached file %s: %s", file_id, problem)
        with self._lock:
            if file_id in self._policy and not self._closed:
                self._evict_locked([file_id], "as corrupt")
        return CorruptFile(f"cached file {file_id} was corrupt ({problem}) and has been removed")

    # -- the index --------------------------------------------------------------------------

    def _append_index_locked(self, line: bytes) -> None:
        if self._closed:
            return
        if self._index_fd < 0:
            # An earlier write failed; a rewrite records the whole state, this line included.
            self._rewrite_index_locked()
            return
        try:
            written = os.write(self._index_fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            # The order is advisory (the files are the truth), so losing a line is
            # harmless; a torn one must not stay in front of the next line.
            self._index_trouble(f"cannot append to {self._index_path}: {e}")
            try:
                os.ftruncate(self._index_fd, self._index_bytes)
            except OSError:
                os.close(self._index_fd)
                self._index_fd = -1
            return
        self._index_bytes += written
        self._index_lines += 1
        if self._index_lines > max(_COMPACT_MIN_LINES, _COMPACT_LINES_PER_FILE * len(self._policy)):
            self._rewrite_index_locked()

    def _rewrite_index_locked(self) -> None:
        """Replace the index by one line per cached file, least recently used first."""
        if self._closed:
            return
        content = _INDEX_HEADER + b"".join(
            f"+ {file_id} {self._sizes[file_id][0]} {self._sizes[file_id][1]}\n".encode()
            for file_id in self._policy
        )
        try:
            atomic_write(self._index_path, content, mode=0o644, tmp_dir=self._tmp)
            new_fd = os.open(self._index_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            self._index_trouble(f"cannot rewrite {self._index_path}: {e}")
            if self._index_fd >= 0:
                os.close(self._index_fd)
            # Appending to an index that lacks lines would be fine, but which lines it
            # has is unknown here; record nothing until a rewrite succeeds.
            self._index_fd = -1
            return
        if self._index_fd >= 0:
            os.close(self._index_fd)
        self._index_fd = new_fd
        self._index_bytes = len(content)
        self._index_lines = len(self._policy)
        if self._index_failing:
            self._index_failing = False
            log.info("cache index: %s written again", self._index_path)

    def _index_trouble(self, problem: str) -> None:
        if not self._index_failing:
            self._index_failing = True
            log.warning("cache index: %s; recency is not recorded until it can be", problem)

    def _read_index(self) -> OrderedDict[str, tuple[int, int]]:
        """The recorded (data size, manifest size) of each file, least recently used first."""
        order: OrderedDict[str, tuple[int, int]] = OrderedDict()
        try:
            f = self._index_path.open("rb")
        except FileNotFoundError:
            return order
        skipped = 0
        with f:
            if f.readline() != _INDEX_HEADER:
                log.warning(
                    "cache index %s is not in a known format; ignoring it", self._index_path
                )
                return order
            for line in f:
                if added := _ADDED_RE.fullmatch(line):
                    file_id = added[1].decode()
                    order[file_id] = (int(added[2]), int(added[3]))
                    order.move_to_end(file_id)
                elif used := _USED_RE.fullmatch(line):
                    file_id = used[1].decode()
                    if file_id in order:
                        order.move_to_end(file_id)
                else:
                    skipped += 1
        if skipped:
            log.info("cache index: skipped %d torn or unreadable lines", skipped)
        return order

    # -- open -------------------------------------------------------------------------------

    def _recover(self, *, verify_all: bool) -> None:
        """Make the in-memory index agree with the files (see the module docstring)."""
        # We hold the directory lock, so every temp file is a dead writer's.
        with os.scandir(self._tmp) as scan:
            leftovers = [entry.name for entry in scan]
        for name in leftovers:
            _unlink_quietly(self._tmp / name)
        if leftovers:
            log.info("cache: deleted %d unfinished temp files", len(leftovers))

        recorded = self._read_index()
        data, manifests = self._scan_files()
        for file_id in manifests.keys() - data.keys():  # a put or a removal cut short
            _unlink_quietly(self._manifest_path(file_id))
        for file_id in data.keys() - manifests.keys():  # not ours to explain: never serve it
            log.warning("cache: deleting file %s, which has no manifest", file_id)
            _unlink_quietly(self._data_path(file_id))

        complete = data.keys() & manifests.keys()
        for file_id, sizes in recorded.items():
            if file_id not in complete:
                continue
            on_disk = (data[file_id][0], manifests[file_id])
            if on_disk != sizes or verify_all:
                problem = self._problem_with(file_id)
                if problem is not None:
                    log.warning("cache: deleting file %s: %s", file_id, problem)
                    self._delete_files(file_id)
                    continue
            self._adopt(file_id, on_disk)
        # Files without an entry entered just before a crash: oldest first, after the rest.
        unrecorded = sorted(complete - recorded.keys(), key=lambda f: (data[f][1], f))
        for file_id in unrecorded:
            problem = self._problem_with(file_id)
            if problem is not None:
                log.warning("cache: deleting unindexed file %s: %s", file_id, problem)
                self._delete_files(file_id)
            else:
                log.info("cache: adopted file %s, which has no index entry", file_id)
                self._adopt(file_id, (data[file_id][0], manifests[file_id]))

    def _adopt(self, file_id: str, sizes: tuple[int, int]) -> None:
        self._clock += 1
        self._policy.add(file_id, sizes[0] + sizes[1], self._clock)
        self._sizes[file_id] = sizes

    def _scan_files(self) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """``({id: (data size, mtime_ns)}, {id: manifest size})`` of what is under files/."""
        data: dict[str, tuple[int, int]] = {}
        manifests: dict[str, int] = {}
        with os.scandir(self._files) as scan:
            fanout = [e.path for e in scan if _FANOUT_RE.fullmatch(e.name) and e.is_dir()]
        for directory in fanout:
            prefix = os.path.basename(directory)
            with os.scandir(directory) as scan:
                for entry in scan:
                    name = entry.name
                    file_id = name.removesuffix(_MANIFEST_SUFFIX)
                    if not (is_file_id(file_id) and file_id.startswith(prefix)):
                        continue  # not a name this cache gives; leave it alone
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if name == file_id:
                        data[file_id] = (st.st_size, st.st_mtime_ns)
                    else:
                        manifests[file_id] = st.st_size
        return data, manifests

    def _problem_with(self, file_id: str) -> str | None:
        """What is wrong with the stored file and manifest of ``file_id``, if anything."""
        path = self._data_path(file_id)
        try:
            size, root = _hash_file(path)
        except OSError as e:
            return f"cannot read it: {e}"
        if root != file_id:
            return "its bytes do not hash to its id"
        if self._verifier is None:
            return None
        try:
            raw = self._read_manifest(file_id, _manifest_path(path))
            manifest = self._verifier.verify(raw, file_id=file_id)
        except (OSError, NotCached, ManifestError) as e:
            return f"its manifest is unusable: {e}"
        if manifest.size != size:
            return f"its manifest is for {manifest.size} bytes, not {size}"
        return None

    # -- paths and reads --------------------------------------------------------------------

    def _data_path(self, file_id: str) -> Path:
        return self._files / file_id[0:2] / file_id

    def _manifest_path(self, file_id: str) -> Path:
        return _manifest_path(self._data_path(file_id))

    def _path_if_cached(self, file_id: str) -> Path:
        _check_file_id(file_id)
        with self._lock:
            if file_id not in self._policy:
                raise _not_cached(file_id)
        return self._data_path(file_id)

    def _read_verified(self, file_id: str) -> bytes:
        path = self._path_if_cached(file_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # evicted or removed since the look-up
            raise _not_cached(file_id) from None
        if file_id_of(data) != file_id:
            raise self._discard_corrupt(file_id, "its bytes no longer hash to its id")
        return data

    def _read_manifest(self, file_id: str, path: Path) -> bytes:
        try:
            with path.open("rb") as f:
                return f.read(MAX_MANIFEST_SIZE + 1)
        except FileNotFoundError:
            raise _not_cached(file_id) from None

    def _verified_manifest(self, file_id: str, raw: bytes) -> Manifest:
        assert self._verifier is not None
        try:
            manifest = self._verifier.verify(raw, file_id=file_id)
        except ManifestError as e:
            raise self._discard_corrupt(file_id, f"its manifest does not verify: {e}") from None
        with self._lock:
            sizes = self._sizes.get(file_id)
        if sizes is not None and manifest.size != sizes[0]:
            raise self._discard_corrupt(
                file_id, f"its manifest is for {manifest.size} bytes, not {sizes[0]}"
            )
        return manifest

    def _delete_files(self, file_id: str) -> None:
        # Data first: a crash in between leaves a lone manifest, which open() deletes.
        for path in (self._data_path(file_id), self._manifest_path(file_id)):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                log.error("cache: cannot delete %s: %s", path, e)


# -- helpers ---------------------------------------------------------------------------------


def _check_file_id(file_id: str) -> None:
    if not is_file_id(file_id):
        raise InvalidFileId(f"{file_id!r} is not a file id (64 lower-case hex digits)")


def _not_cached(file_id: str) -> NotCached:
    return NotCached(f"file {file_id} is not cached")


def _manifest_path(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + _MANIFEST_SUFFIX)


def _split(data: bytes) -> list[bytes]:
    view = memoryview(data)
    return [bytes(view[i : i + CHUNK_SIZE]) for i in range(0, max(len(view), 1), CHUNK_SIZE)]


def _hash_file(path: Path) -> tuple[int, str]:
    """The size and id of the file at ``path``, read in blocks."""
    hashes: list[bytes] = []
    size = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK_SIZE):
            size += len(block)
            view = memoryview(block)
            hashes.extend(
                leaf_hash(view[i : i + CHUNK_SIZE]) for i in range(0, len(view), CHUNK_SIZE)
            )
    return size, tree_root(hashes or [leaf_hash(b"")]).hex()


def _lock_directory(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CacheLocked(f"the cache at {path.parent} is open elsewhere") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _available_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _make_dir(directory: Path) -> None:
    directory.mkdir(mode=0o755, exist_ok=True)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
