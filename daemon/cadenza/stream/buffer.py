"""The in-memory copy of one encoded file while it streams in.

The streaming engine (trio) writes verified 16 KiB chunks into it in any order; the
decoder (a plain thread, libvorbisfile) reads byte ranges from it and blocks until the
bytes are there. When a read has to wait, the buffer records the offset it waits for
(``wanted``), so the engine can fetch that part first (a seek, or the end of the file
that libvorbisfile looks at when it opens a seekable stream).

Thread-safe; the only blocking call is :meth:`ChunkBuffer.read` (decoder side).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

from cadenza.protocol.manifest import CHUNK_SIZE as CHUNK_SIZE  # the engine's import of it


class BufferClosed(Exception):
    """The buffer was closed (track changed, player stopped) while a read waited."""


class ChunkBuffer:
    def __init__(
        self,
        size: int,
        *,
        chunk_size: int = CHUNK_SIZE,
        on_wanted: Callable[[int], None] | None = None,
        data: bytes | None = None,
    ) -> None:
        """``on_wanted(chunk_index)`` is called (from the reading thread) when a read blocks.
        With ``data`` (``size`` bytes: a file from the cache) the buffer starts complete."""
        if size < 0:
            raise ValueError("size must be >= 0")
        if data is not None and len(data) != size:
            raise ValueError(f"data of {len(data)} bytes for a buffer of {size}")
        self.size = size
        self.chunk_size = chunk_size
        self.num_chunks = max(1, -(-size // chunk_size))
        self._data: bytes | bytearray
        if data is None:
            self._data = bytearray(size)
            self._have = bytearray(self.num_chunks)  # 1 where the chunk is present
            self._count = 0
            self._contiguous = 0  # chunks present from the start without a hole
        else:  # complete: never written again, so the bytes themselves (no copy)
            self._data = bytes(data)
            self._have = bytearray(b"\x01") * self.num_chunks
            self._count = self._contiguous = self.num_chunks
        self._cond = threading.Condition()
        self._closed = False
        self._on_wanted = on_wanted
        self.wanted: int | None = None

    # --- writer side (engine) ------------------------------------------------------------

    def write_chunk(self, index: int, data: bytes | memoryview) -> bool:
        """Store chunk ``index`` (already verified). False if it was there already."""
        start = index * self.chunk_size
        expected = min(self.chunk_size, self.size - start)
        if not 0 <= index < self.num_chunks or len(data) != expected:
            raise ValueError(f"chunk {index} of {len(data)} bytes does not fit this file")
        with self._cond:
            if self._have[index]:
                return False  # (always, in a buffer made from a whole file: its bytes stay)
            cast(bytearray, self._data)[start : start + expected] = data
            self._have[index] = 1
            self._count += 1
            while self._contiguous < self.num_chunks and self._have[self._contiguous]:
                self._contiguous += 1
            if self.wanted == index:
                self.wanted = None
            self._cond.notify_all()
        return True

    def has_chunk(self, index: int) -> bool:
        return bool(self._have[index])

    def missing(self, start: int = 0, end: int | None = None) -> list[int]:
        """Chunk indexes not yet present in ``[start, end)``."""
        stop = self.num_chunks if end is None else min(end, self.num_chunks)
        have = self._have
        return [i for i in range(start, stop) if not have[i]]

    @property
    def complete(self) -> bool:
        return self._count == self.num_chunks

    @property
    def contiguous_chunks(self) -> int:
        """Chunks present from the start of the file without a hole."""
        return self._contiguous

    def contiguous_from(self, offset: int) -> int:
        """Bytes present without a hole from ``offset`` on."""
        index = offset // self.chunk_size
        end = index
        while end < self.num_chunks and self._have[end]:
            end += 1
        return max(0, min(self.size, end * self.chunk_size) - offset) if end > index else 0

    @property
    def contiguous_bytes(self) -> int:
        return min(self.size, self._contiguous * self.chunk_size)

    def getvalue(self) -> bytes:
        """The whole file, a copy (only meaningful once complete)."""
        with self._cond:
            return bytes(self._data)

    def view(self) -> memoryview:
        """The whole file, read-only and not copied (only meaningful once complete: nothing
        writes a complete buffer). For handing a streamed file to the cache: a copy is as
        big as the track, twice the memory for a moment."""
        return memoryview(self._data).toreadonly()

    def detach(self) -> None:
        """The writer is gone (done, or stopped): drop its ``on_wanted``, so that a reader
        keeping the buffer does not keep the writer too (a bound method of the stream engine
        made a cycle that held a whole track until the cyclic collector came by)."""
        with self._cond:
            self._on_wanted = None

    def close(self) -> None:
        """Wake and fail any waiting read; later reads fail too."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- reader side (decoder thread) ----------------------------------------------------

    def want(self, index: int) -> None:
        """Say that the reader needs chunk ``index`` next, without waiting for it (a reader
        that polls, such as the simulator's audio device): as a read that blocks there."""
        with self._cond:
            if not self._have[index] and not self._closed and self.wanted != index:
                self.wanted = index
                if self._on_wanted is not None:
                    self._on_wanted(index)

    def read(self, offset: int, n: int, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes at ``offset`` (short only at the end of the file), waiting for
        missing chunks. BufferClosed if closed; TimeoutError after ``timeout`` seconds."""
        if offset >= self.size or n <= 0:
            return b""
        end = min(self.size, offset + n)
        first = offset // self.chunk_size
        last = (end - 1) // self.chunk_size
        with self._cond:
            for index in range(first, last + 1):
                while not self._have[index]:
                    if self._closed:
                        raise BufferClosed("buffer closed")
                    if self.wanted != index:
                        self.wanted = index
                        if self._on_wanted is not None:
                            self._on_wanted(index)
                    if not self._cond.wait(timeout):
                        raise TimeoutError(f"chunk {index} did not arrive in {timeout} s")
            if self._closed:
                raise BufferClosed("buffer closed")
            return bytes(self._data[offset:end])

    def wait_for(self, nbytes: int, timeout: float | None = None) -> bool:
        """Wait until the first ``nbytes`` are present contiguously (True) or timeout."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._closed or self.contiguous_bytes >= min(nbytes, self.size), timeout
                )
                and not self._closed
            )
