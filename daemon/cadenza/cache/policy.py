"""How big the cache may be and which files leave it first: pure bookkeeping, no I/O.

:class:`LruPolicy` knows each cached file's size and when it was last used, and answers
one question: which files to evict, least recently used first, so that a new file fits
under the capacity. Files being played or uploaded are pinned and never chosen.
:mod:`cadenza.cache.store` keeps the files and uses a policy as its in-memory index.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["DEFAULT_FRACTION_OF_FREE", "MAX_DEFAULT_CAPACITY", "LruPolicy", "default_capacity"]

# The seed's client took 10% of the free disk space for its cache, up to 10 GB: enough for
# a couple of thousand tracks, little enough not to crowd out anything else on the disk.
DEFAULT_FRACTION_OF_FREE = 0.10
MAX_DEFAULT_CAPACITY = 10 * 1000**3


def default_capacity(free_bytes: int, total_bytes: int, cap: int | None = None) -> int:
    """The cache size to use when none is configured: ``min(10% of free, 10 GB, cap)``.

    ``free_bytes`` should count the space the cache already holds as free, or a full cache
    would shrink a little every time it is opened. ``total_bytes`` is the file system's
    size; free space beyond it (a caller's mistake) is not believed. ``cap`` is the
    configured upper bound (a small SD card), ``None`` for none.
    """
    for name, value in (("free_bytes", free_bytes), ("total_bytes", total_bytes)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, not {value}")
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be >= 0 or None, not {cap}")
    share = int(min(free_bytes, total_bytes) * DEFAULT_FRACTION_OF_FREE)
    capacity = min(share, MAX_DEFAULT_CAPACITY)
    return capacity if cap is None else min(capacity, cap)


@dataclass
class _Entry:
    size: int
    last_used: float


class LruPolicy:
    """Sizes, recency and pins of the files in a cache of ``capacity`` bytes.

    Recency is the ``now`` passed to :meth:`add` and :meth:`touch`: any clock whose values
    do not go backwards in normal use (the store uses a counter, not the wall clock, which
    can jump on a board without a real-time clock). Files are ordered by it, ties in the
    order of the calls. Iterating yields ids least recently used first.

    Recording a file never refuses it: making room first (:meth:`victims`) is the caller's
    job, so :attr:`used` can exceed :attr:`capacity` until it does.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = _check_size("capacity", capacity)
        # Least recently used first; kept sorted by last_used.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._used = 0
        # Pins are counted (a file can be played and uploaded at once) and may name a file
        # that is not cached yet (one being streamed in while it plays).
        self._pins: Counter[str] = Counter()

    # -- queries --------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def used(self) -> int:
        """The sum of the sizes of every recorded file."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._entries

    def __iter__(self) -> Iterator[str]:
        """The recorded ids, least recently used first."""
        return iter(list(self._entries))

    def size_of(self, file_id: str) -> int:
        """The recorded size of ``file_id``; ``KeyError`` if it is not recorded."""
        return self._entries[file_id].size

    def last_used(self, file_id: str) -> float:
        """The ``now`` of the last :meth:`add` or :meth:`touch` of ``file_id``."""
        return self._entries[file_id].last_used

    def is_pinned(self, file_id: str) -> bool:
        return self._pins[file_id] > 0

    def victims(self, needed_bytes: int) -> list[str] | None:
        """Which files to evict, least recently used first, so ``needed_bytes`` more fit.

        The shortest such list of unpinned files (empty if they fit already); ``None`` if
        they cannot fit even with every unpinned file gone (more than the capacity, or
        pinned files holding the room).
        """
        _check_size("needed_bytes", needed_bytes)
        return self.oldest_unpinned(max(0, self._used + needed_bytes - self._capacity))

    def oldest_unpinned(self, min_bytes: int) -> list[str] | None:
        """The least recently used unpinned files whose sizes add up to ``min_bytes`` or
        more, oldest first and no more than needed; ``None`` if all of them add up to less.
        """
        _check_size("min_bytes", min_bytes)
        chosen: list[str] = []
        freed = 0
        for file_id, entry in self._entries.items():
            if freed >= min_bytes:
                break
            if self._pins[file_id] > 0:
                continue
            chosen.append(file_id)
            freed += entry.size
        return chosen if freed >= min_bytes else None

    def evictable(self) -> list[str]:
        """Every unpinned file, least recently used first."""
        return [file_id for file_id in self._entries if self._pins[file_id] == 0]

    # -- changes --------------------------------------------------------------------------

    def set_capacity(self, capacity: int) -> None:
        """Change the capacity; evicting down to it (:meth:`victims` with 0) is the caller's."""
        self._capacity = _check_size("capacity", capacity)

    def add(self, file_id: str, size: int, now: float) -> None:
        """Record ``file_id`` of ``size`` bytes as used at ``now`` (again, if recorded)."""
        _check_size("size", size)
        old = self._entries.get(file_id)
        if old is not None:
            self._used -= old.size
        self._entries[file_id] = _Entry(size, now)
        self._used += size
        self._place_last_used(file_id)

    def touch(self, file_id: str, now: float) -> None:
        """Record a use of ``file_id`` at ``now``; ``KeyError`` if it is not recorded."""
        self._entries[file_id].last_used = now
        self._place_last_used(file_id)

    def remove(self, file_id: str) -> int:
        """Forget ``file_id`` and return its size; ``KeyError`` if it is not recorded.

        Pins are kept: whoever pinned it still unpins it.
        """
        entry = self._entries.pop(file_id)
        self._used -= entry.size
        return entry.size

    def pin(self, file_id: str) -> None:
        """Keep ``file_id`` from being chosen as a victim until a matching :meth:`unpin`."""
        self._pins[file_id] += 1

    def unpin(self, file_id: str) -> None:
        """Undo one :meth:`pin`; ``ValueError`` if ``file_id`` is not pinned."""
        count = self._pins[file_id]
        if count <= 0:
            raise ValueError(f"file {file_id} is not pinned")
        if count == 1:
            del self._pins[file_id]
        else:
            self._pins[file_id] = count - 1

    # -- internals ------------------------------------------------------------------------

    def _place_last_used(self, file_id: str) -> None:
        """Keep ``_entries`` sorted by last use, given that only ``file_id`` changed."""
        self._entries.move_to_end(file_id)
        if len(self._entries) < 2:
            return
        newest_first = reversed(self._entries)
        next(newest_first)
        before = next(newest_first)
        if self._entries[before].last_used <= self._entries[file_id].last_used:
            return  # the usual case: time went forward
        # An earlier ``now`` than some recorded one (a rebuilt index, a caller's clock):
        # re-sort. Stable, so ties stay in call order with this one last among them.
        ordered = sorted(self._entries.items(), key=lambda item: item[1].last_used)
        self._entries = OrderedDict(ordered)


def _check_size(name: str, value: int) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be an int >= 0, not {value!r}")
    return value
