"""The service's content-addressed store of encoded files, each beside its signed manifest.

Layout under ``root``::

    files/ab/cd/abcd…ef             the file's bytes, named by its id (see protocol.manifest)
    files/ab/cd/abcd…ef.manifest    its signed manifest, as sent to speakers
    tmp/<pid>-<random>.tmp          files being written

Crash safety. Every file is written to ``tmp/``, fsynced, renamed into place with
``os.replace`` and its directory fsynced, so no name ever points at a torn file. The
manifest goes into place before the data, and deletion removes the data before the
manifest, so at every instant (and after a crash at any point) a data file in ``files/``
has its manifest beside it. A crash can leave only a manifest without data, which
:meth:`Storage.has` reports as absent and the next :meth:`Storage.put` of those bytes
completes; and temp files, removed when a store is next opened (the reverse order could
leave data without a manifest, a file that looks present but cannot be served).

Temp files live in one directory of their own (on the same file system, so the rename is
atomic) rather than beside their targets: cleaning up after a crash then lists one
directory instead of walking the whole store. A temp file is named after the process
writing it, so opening the store from a second process (``cadenza ingest`` next to a
running service) removes only the leftovers of processes that are gone.

Blocking and thread-safe; the service calls it through :mod:`cadenza.blocking`. Open one
:class:`Storage` per root per process (a second one would take the first one's temp files
for leftovers).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    MAX_FILE_SIZE,
    MAX_MANIFEST_SIZE,
    Manifest,
    ManifestError,
    ManifestSigner,
    ManifestVerifier,
    chunk_count,
    is_file_id,
    leaf_hash,
)
from cadenza.system.files import fsync_dir

__all__ = [
    "MAX_CHUNKS_PER_READ",
    "FileNotFound",
    "InvalidFileId",
    "Storage",
    "StorageError",
]

# 1 MiB per call: enough for a burst well past the ~15 s (about 20 chunks at 160 kbps)
# that server requests run ahead of playback, small enough that one request cannot tie
# up a worker thread or much memory.
MAX_CHUNKS_PER_READ = 64
# Files are copied and checked in blocks of this many chunks (1 MiB): few system calls,
# little memory, whatever the file's size.
_BLOCK_CHUNKS = 64

_FILES = "files"
_TMP = "tmp"
_MANIFEST_SUFFIX = ".manifest"
_TMP_SUFFIX = ".tmp"
_MAX_PID = 2**22  # Linux's PID_MAX_LIMIT
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")


class StorageError(Exception):
    """The store cannot do what was asked; the message says which file and why."""


class FileNotFound(StorageError, KeyError):
    """No complete file (data and manifest) with this id is stored."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidFileId(StorageError, ValueError):
    """A string that is not a file id; refused before it gets near a path."""


class Storage:
    """Files named by content, each with its signed manifest, under one directory."""

    def __init__(self, root: Path, signer: ManifestSigner) -> None:
        self.root = Path(root)
        self._files = self.root / _FILES
        self._tmp = self.root / _TMP
        self._signer = signer
        # Manifests on disk were signed with this key; checking them on the way out
        # catches a damaged or misplaced manifest before a speaker has to.
        self._verifier = ManifestVerifier([signer.public_key])
        # Orders publishing and deleting within this process, so that a delete cannot
        # interleave with a put and leave data without its manifest.
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self._files, self._tmp):
            _make_dir(directory)
        self._remove_stale_temp_files()

    # -- queries ------------------------------------------------------------------------

    def path(self, file_id: str) -> Path:
        """Where the data of ``file_id`` lives (whether or not it is there)."""
        _check_file_id(file_id)
        return self._files / file_id[0:2] / file_id[2:4] / file_id

    def has(self, file_id: str) -> bool:
        """Whether the file and its manifest are both completely stored."""
        data = self.path(file_id)
        return data.is_file() and _manifest_path(data).is_file()

    def manifest(self, file_id: str) -> Manifest:
        """The stored manifest of ``file_id``, checked against the signing key and the id."""
        manifest, _ = self._load_manifest(file_id)
        return manifest

    def manifest_bytes(self, file_id: str) -> bytes:
        """The stored manifest of ``file_id`` as sent on the wire, checked as :meth:`manifest`."""
        _, data = self._load_manifest(file_id)
        return data

    def size(self, file_id: str) -> int:
        """The size in bytes of ``file_id``."""
        try:
            return os.stat(self.path(file_id)).st_size
        except FileNotFoundError:
            raise _not_found(file_id) from None

    def read_chunks(self, file_id: str, first: int, count: int) -> list[bytes]:
        """Chunks ``first`` to ``first + count - 1`` of ``file_id``, each as its own bytes.

        ``ValueError`` if ``count`` is not in ``1..MAX_CHUNKS_PER_READ`` or the range does
        not lie within the file. One ``pread`` for the whole range.
        """
        for name, value in (("first", first), ("count", count)):
            if type(value) is not int:
                raise ValueError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= count <= MAX_CHUNKS_PER_READ:
            raise ValueError(f"count {count} not in 1..{MAX_CHUNKS_PER_READ}")
        with self._open(file_id) as f:
            # The data file was renamed into place whole, so its length is the manifest's.
            size = os.fstat(f.fileno()).st_size
            chunks = chunk_count(size)
            if first < 0 or first + count > chunks:
                raise ValueError(
                    f"chunks {first}..{first + count - 1} not within 0..{chunks - 1}"
                    f" of file {file_id}"
                )
            start = first * CHUNK_SIZE
            length = min(count * CHUNK_SIZE, size - start)
            data = os.pread(f.fileno(), length, start)
        if len(data) != length:
            raise StorageError(f"file {file_id} shrank while being read")
        view = memoryview(data)
        return [bytes(view[i : i + CHUNK_SIZE]) for i in range(0, max(length, 1), CHUNK_SIZE)]

    def read_all(self, file_id: str) -> bytes:
        """The whole of ``file_id``."""
        with self._open(file_id) as f:
            return f.read()

    def verify(self, file_id: str) -> bool:
        """Whether every chunk of ``file_id`` still matches its manifest (reads the whole file).

        ``False`` also for a manifest that no longer verifies. ``FileNotFound`` if absent.
        """
        _check_file_id(file_id)
        try:
            manifest = self.manifest(file_id)
        except FileNotFound:
            raise
        except StorageError:
            return False
        with self._open(file_id) as f:
            if os.fstat(f.fileno()).st_size != manifest.size:
                return False
            if manifest.size == 0:
                return manifest.hashes[0] == leaf_hash(b"")
            index = 0
            while block := f.read(_BLOCK_CHUNKS * CHUNK_SIZE):
                view = memoryview(block)
                for offset in range(0, len(view), CHUNK_SIZE):
                    if index >= manifest.num_chunks or (
                        leaf_hash(view[offset : offset + CHUNK_SIZE]) != manifest.hashes[index]
                    ):
                        return False  # grew under us, or a chunk that no longer matches
                    index += 1
        return index == manifest.num_chunks

    def file_ids(self) -> Iterator[str]:
        """The ids of every complete file, in order."""
        for first in _sorted_dirs(self._files):
            for second in _sorted_dirs(first):
                with os.scandir(second) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
                for entry in entries:
                    name = entry.name
                    if (
                        is_file_id(name)
                        and name.startswith(first.name + second.name)
                        and entry.is_file()
                        and _manifest_path(Path(entry.path)).is_file()
                    ):
                        yield name

    # -- changes ------------------------------------------------------------------------

    def put(self, data: bytes) -> Manifest:
        """Store ``data`` and return its manifest; bytes already stored are not rewritten."""
        if len(data) > MAX_FILE_SIZE:
            raise StorageError(f"file of {len(data)} bytes exceeds the {MAX_FILE_SIZE} limit")
        manifest = self._signer.sign(data)
        if (stored := self._stored(manifest.file_id)) is not None:
            return stored
        data_tmp = self._write_temp(data)
        try:
            return self._publish(manifest, data_tmp)
        finally:
            _unlink_quietly(data_tmp)

    def put_file(self, path: Path) -> Manifest:
        """Store the file at ``path`` as :meth:`put` does, copying and hashing it in one pass.

        Errors opening or reading ``path`` itself (``OSError``) propagate unchanged.
        """
        hashes: list[bytes] = []
        size = 0
        with open(path, "rb") as src:
            tmp, out = self._open_temp()
            try:
                with out:
                    while block := src.read(_BLOCK_CHUNKS * CHUNK_SIZE):
                        size += len(block)
                        if size > MAX_FILE_SIZE:
                            raise StorageError(
                                f"{path} is larger than the {MAX_FILE_SIZE} byte limit"
                            )
                        view = memoryview(block)
                        hashes.extend(
                            leaf_hash(view[i : i + CHUNK_SIZE])
                            for i in range(0, len(view), CHUNK_SIZE)
                        )
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                if not hashes:
                    hashes.append(leaf_hash(b""))
                manifest = self._signer.sign_hashes(hashes, size)
                if (stored := self._stored(manifest.file_id)) is not None:
                    return stored
                return self._publish(manifest, tmp)
            finally:
                _unlink_quietly(tmp)

    def delete(self, file_id: str) -> None:
        """Remove ``file_id`` and its manifest. ``FileNotFound`` if neither was there."""
        data = self.path(file_id)
        removed = False
        with self._lock:
            # Data first: a crash in between leaves a manifest alone, which is harmless.
            for target in (data, _manifest_path(data)):
                try:
                    target.unlink()
                except FileNotFoundError:
                    continue
                removed = True
            if removed:
                fsync_dir(data.parent)
        if not removed:
            raise _not_found(file_id)

    # -- internals ----------------------------------------------------------------------

    def _stored(self, file_id: str) -> Manifest | None:
        """The manifest of ``file_id`` if it is stored whole with an intact manifest, so a
        put can be skipped; ``None`` if a put must (re)write it."""
        try:
            return self.manifest(file_id)
        except StorageError:
            return None

    def _publish(self, manifest: Manifest, data_tmp: Path) -> Manifest:
        """Move a fully written, fsynced data temp file into place after its manifest."""
        target = self.path(manifest.file_id)
        manifest_tmp = self._write_temp(manifest.to_bytes())
        try:
            with self._lock:
                self._make_parents(target)
                os.replace(manifest_tmp, _manifest_path(target))
                fsync_dir(target.parent)
                os.replace(data_tmp, target)
                fsync_dir(target.parent)
        finally:
            _unlink_quietly(manifest_tmp)
        return manifest

    def _load_manifest(self, file_id: str) -> tuple[Manifest, bytes]:
        data_path = self.path(file_id)
        manifest_path = _manifest_path(data_path)
        # Without its data file a manifest is a leftover of an interrupted put or delete.
        if not data_path.is_file():
            raise _not_found(file_id)
        try:
            with open(manifest_path, "rb") as f:
                data = f.read(MAX_MANIFEST_SIZE + 1)
        except FileNotFoundError:
            raise _not_found(file_id) from None
        try:
            return self._verifier.verify(data, file_id=file_id), data
        except ManifestError as e:
            raise StorageError(f"stored manifest of {file_id} does not verify: {e}") from None

    def _open(self, file_id: str) -> BinaryIO:
        try:
            return open(self.path(file_id), "rb")
        except FileNotFoundError:
            raise _not_found(file_id) from None

    def _open_temp(self) -> tuple[Path, BinaryIO]:
        path = self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}{_TMP_SUFFIX}"
        # 0o644 less the umask, like any other file the service writes; O_EXCL because the
        # name must be ours alone.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return path, os.fdopen(fd, "wb")

    def _write_temp(self, data: bytes) -> Path:
        path, out = self._open_temp()
        try:
            with out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(path)
            raise
        return path

    def _make_parents(self, target: Path) -> None:
        # A new directory's entry lives in its parent: fsync the parent too, or a crash
        # could lose the directory and the files renamed into it.
        for directory in (target.parent.parent, target.parent):
            if not directory.is_dir():
                _make_dir(directory)
                fsync_dir(directory.parent)

    def _remove_stale_temp_files(self) -> None:
        with os.scandir(self._tmp) as scan:
            names = [entry.name for entry in scan]
        for name in names:
            pid_text = name.partition("-")[0]
            pid = int(pid_text) if pid_text.isascii() and pid_text.isdigit() else 0
            # Our own pid counts as stale: it is this process's previous life (pid 1 in a
            # container restarted after a crash), since puts remove their own temp files.
            if pid == os.getpid() or not _process_exists(pid):
                _unlink_quietly(self._tmp / name)


# -- helpers ----------------------------------------------------------------------------


def _check_file_id(file_id: str) -> None:
    if not is_file_id(file_id):
        raise InvalidFileId(f"{file_id!r} is not a file id (64 lower-case hex digits)")


def _manifest_path(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + _MANIFEST_SUFFIX)


def _not_found(file_id: str) -> FileNotFound:
    return FileNotFound(f"no such file {file_id}")


def _make_dir(directory: Path) -> None:
    directory.mkdir(mode=0o755, exist_ok=True)


def _sorted_dirs(parent: Path) -> list[Path]:
    with os.scandir(parent) as scan:
        return sorted(
            Path(entry.path)
            for entry in scan
            if _FANOUT_RE.fullmatch(entry.name) and entry.is_dir()
        )


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    # kill(0) and kill(-1) would probe process groups, not a process.
    if not 0 < pid <= _MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as e:
        # EPERM: it exists but belongs to another user.
        return e.errno == errno.EPERM
    return True
