"""The speaker's on-disk cache of whole encoded files, evicted least recently used first.

:class:`Cache` (blocking; the daemon calls it through :mod:`cadenza.blocking`) keeps each file
beside its signed manifest so that a cached track plays with no network at all;
:class:`LruPolicy` is its pure bookkeeping, :func:`default_capacity` its default size.
"""

from cadenza.cache.policy import LruPolicy, default_capacity
from cadenza.cache.store import (
    MAX_CHUNKS_PER_READ,
    Cache,
    CacheError,
    CacheLocked,
    CorruptFile,
    InvalidFileId,
    NotCached,
    RefusedFile,
)

__all__ = [
    "MAX_CHUNKS_PER_READ",
    "Cache",
    "CacheError",
    "CacheLocked",
    "CorruptFile",
    "InvalidFileId",
    "LruPolicy",
    "NotCached",
    "RefusedFile",
    "default_capacity",
]
