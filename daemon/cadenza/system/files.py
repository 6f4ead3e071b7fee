"""Files replaced so that a crash or a power cut leaves the old version or the new, not a mix.

:func:`atomic_write` is the one way the daemon and the service replace a file (the device
credential, API tokens, settings, the cache index, track metadata): the new content
goes to a temp file in the same folder, is fsynced, renamed over the target, and the folder is
fsynced so the rename itself survives a power cut. Without the first fsync a power cut after the
rename can leave an empty file under the old name (ext4 with delayed allocation); without the
second, the old file can come back. Both are cheap next to how rarely these files change.

Temp names carry the pid and a counter, not random bytes: the swarm simulator replaces
``os.urandom`` with a seeded generator, and a write must not draw from it (its results would
then depend on how often speakers save a file). Blocking: call it through
:mod:`cadenza.blocking` from async code where the file may be large or the disk slow.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "write_new"]

TMP_SUFFIX = ".tmp"

_counter = itertools.count()  # next() on it is atomic under the GIL: threads get distinct names


def atomic_write(
    path: Path | str,
    data: bytes | bytearray | memoryview | str,
    *,
    mode: int | None = None,
    tmp_dir: Path | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` by ``data`` (``str`` is written as UTF-8) atomically and durably.

    ``durable=False`` leaves out the two fsyncs: still atomic (a reader sees the old file or
    the new, whole), but a power cut may take the change back; for what can be fetched again
    and is written on the event loop's thread, where an fsync would stall everything.

    ``mode``: the new file's permissions (before the umask), e.g. ``0o600`` for secrets; by
    default those of the file being replaced, or ``0o666`` less the umask for a new file, as
    ``open(path, "w")`` would give. ``tmp_dir``: where the temp file goes if not beside
    ``path`` (a folder the caller cleans of leftovers; it must be on the same filesystem). On
    any error the old file is untouched and the temp file is gone.
    """
    path = Path(path)
    keep: int | None = None
    if mode is None:
        try:
            keep = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666
        else:
            mode = 0o600  # until fchmod gives it exactly the old file's, whatever the umask
    folder = tmp_dir if tmp_dir is not None else path.parent
    while True:
        tmp = folder / f".{path.name}.{os.getpid()}-{next(_counter)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:  # a dead process's leftover with our pid: take the next name
            continue
        break
    try:
        try:
            if keep is not None:
                os.fchmod(fd, keep)
            _write_all(fd, data.encode() if isinstance(data, str) else data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_new(path: Path, data: bytes | bytearray | memoryview, mode: int = 0o644) -> None:
    """Create ``path`` (it must not exist) holding ``data``, fsynced: a temp file the caller
    then renames or links into place itself (two files published together, a key that must
    never replace another). On an error ``path`` may be left behind for the caller to remove."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename, a new file, a new subfolder) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]
