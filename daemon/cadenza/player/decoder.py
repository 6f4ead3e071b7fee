"""Ogg Vorbis to 16-bit PCM with libvorbisfile, reading from the stream buffer as it fills.

libvorbisfile (through pyogg's ctypes bindings) pulls the encoded bytes through our own
read/seek/tell/close callbacks, so it decodes straight out of a :class:`ChunkBuffer`
while the engine is still filling it. The stream is opened seekable: libvorbisfile reads
the end of the file at open to learn its length; that read blocks and the buffer reports
the offset as ``wanted``, so the engine fetches the end first.

The PCM is what ``oggdec -R -b 16 -e 0 -s 1`` writes (the same library call: ``ov_read``
with little-endian, 16-bit, signed samples), interleaved, sample for sample.

A decoder is used from one thread. Only the ``cancel`` event may be set from elsewhere: a
read that is blocked waiting for bytes gives up within ``poll_interval`` and the call
raises :class:`DecodeCancelled`; the decoder stays usable (it seeks back to where it was
on its next call). A closed buffer aborts a blocked read with
:class:`~cadenza.stream.buffer.BufferClosed`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pyogg import vorbis as _vorbis

from cadenza.stream.buffer import ChunkBuffer

__all__ = ["DecodeCancelled", "DecodeError", "DecoderSource", "VorbisDecoder"]

# How often a read that waits for bytes checks the cancel event: the longest a seek or a
# stop waits for a stalled read to give up.
POLL_INTERVAL = 0.05
BYTES_PER_SAMPLE = 2  # S16_LE

# libvorbisfile's codes (vorbis/codec.h) and what they mean.
OV_HOLE = -3
_MEANING = {
    -1: "OV_FALSE: not true, or no data available",
    -2: "OV_EOF: end of file",
    -3: "OV_HOLE: interruption in the data (garbage, lost sync or a corrupt page)",
    -128: "OV_EREAD: read error from the source",
    -129: "OV_EFAULT: internal logic fault (a bug or heap/stack corruption in libvorbis)",
    -130: "OV_EIMPL: feature not implemented",
    -131: "OV_EINVAL: invalid argument, or the file is not open",
    -132: "OV_ENOTVORBIS: not Vorbis data",
    -133: "OV_EBADHEADER: invalid Vorbis bitstream header",
    -134: "OV_EVERSION: Vorbis version mismatch",
    -135: "OV_ENOTAUDIO: packet data is not audio",
    -136: "OV_EBADPACKET: invalid packet",
    -137: "OV_EBADLINK: invalid stream section, or corrupt link",
    -138: "OV_ENOSEEK: the stream is not seekable",
}


class DecodeError(Exception):
    """libvorbisfile refused the stream (``code`` is its negative return value)."""

    def __init__(self, code: int, during: str) -> None:
        self.code = code
        meaning = _MEANING.get(code, f"unknown libvorbisfile error {code}")
        super().__init__(f"{during}: {meaning}")


class DecodeCancelled(Exception):
    """A read that waited for bytes gave up because the cancel event was set."""


class _ReadableSource(Protocol):
    """What the decoder needs from its source: :class:`ChunkBuffer` has exactly this."""

    size: int

    def read(self, offset: int, n: int, timeout: float | None = None) -> bytes: ...


DecoderSource = ChunkBuffer | bytes | bytearray | memoryview | str | os.PathLike[str]


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data).cast("B")
        self.size = len(self._data)

    def read(self, offset: int, n: int, timeout: float | None = None) -> bytes:
        return bytes(self._data[offset : offset + n])


class _FileSource:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, n: int, timeout: float | None = None) -> bytes:
        return os.pread(self._fd, n, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# Our own prototypes, so that pyogg's stay as they are: the read callback sets errno
# (libvorbisfile tells a read error from the end of the file by it), and ov_read takes
# the destination as an address so it decodes straight into the caller's buffer.
_READ_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
    use_errno=True,
)  # fmt: skip
_SEEK_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int)
_CLOSE_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_TELL_FUNC = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    _fields_ = [
        ("read_func", _READ_FUNC),
        ("seek_func", _SEEK_FUNC),
        ("close_func", _CLOSE_FUNC),
        ("tell_func", _TELL_FUNC),
    ]


_lib = _vorbis.libvorbisfile
_VF = _vorbis.OggVorbis_File
_VF_P = ctypes.POINTER(_VF)


def _prototype(name: str, restype: Any, argtypes: list[Any]) -> Any:
    func = _lib[name]  # indexing gives a fresh function object; pyogg's stays untouched
    func.restype = restype
    func.argtypes = argtypes
    return func


_ov_open_callbacks = _prototype(
    "ov_open_callbacks",
    ctypes.c_int,
    [ctypes.c_void_p, _VF_P, ctypes.c_char_p, ctypes.c_long, _Callbacks],
)
_ov_read = _prototype(
    "ov_read",
    ctypes.c_long,
    [_VF_P, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
     ctypes.POINTER(ctypes.c_int)],
)  # fmt: skip
_ov_pcm_seek = _prototype("ov_pcm_seek", ctypes.c_int, [_VF_P, ctypes.c_int64])
_ov_pcm_tell = _prototype("ov_pcm_tell", ctypes.c_int64, [_VF_P])
_ov_pcm_total = _prototype("ov_pcm_total", ctypes.c_int64, [_VF_P, ctypes.c_int])
_ov_info = _prototype("ov_info", ctypes.POINTER(_vorbis.vorbis_info), [_VF_P, ctypes.c_int])
_ov_clear = _prototype("ov_clear", ctypes.c_int, [_VF_P])

_INT_MAX = 2**31 - 1
_SEEK_SET, _SEEK_CUR, _SEEK_END = os.SEEK_SET, os.SEEK_CUR, os.SEEK_END


class _Reader:
    """The callbacks' side: a position in the source, and the exception that stopped a
    read (libvorbisfile only sees a failed read; the decoder raises the real reason)."""

    def __init__(
        self,
        source: _ReadableSource,
        cancel: threading.Event | None,
        on_wait: Callable[[], None] | None,
        poll_interval: float,
    ) -> None:
        self.source = source
        self.size = source.size
        self.pos = 0
        self.error: BaseException | None = None
        self._cancel = cancel
        self._on_wait = on_wait
        self._poll = poll_interval
        # Reads stop at a chunk boundary: the part that is there is decoded while the
        # rest is still on its way.
        self._chunk = getattr(source, "chunk_size", 0) or 0
        # The ctypes function objects must live as long as libvorbisfile may call them.
        self.callbacks = _Callbacks(
            _READ_FUNC(self._read),
            _SEEK_FUNC(self._seek),
            _CLOSE_FUNC(self._close),
            _TELL_FUNC(self._tell),
        )

    def _fetch(self, offset: int, n: int) -> bytes:
        try:
            return self.source.read(offset, n, 0.0)
        except TimeoutError:
            pass
        if self._on_wait is not None:
            self._on_wait()
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise DecodeCancelled("read cancelled while waiting for bytes")
            try:
                return self.source.read(offset, n, self._poll)
            except TimeoutError:
                continue

    def _read(self, ptr: int, size: int, nmemb: int, _datasource: int) -> int:
        if self.error is not None:
            # Once a read failed, every read fails until the decoder has raised it: a
            # source that fails only now and then can keep libvorbisfile searching.
            ctypes.set_errno(errno.EIO)
            return 0
        try:
            n = size * nmemb
            if n <= 0 or self.pos >= self.size:
                ctypes.set_errno(0)
                return 0
            if self._chunk:
                n = min(n, self._chunk - self.pos % self._chunk)
            n = max(size, n - n % size)
            data = self._fetch(self.pos, n)
            items = len(data) // size
            ctypes.memmove(ptr, data, items * size)
            self.pos += items * size
            ctypes.set_errno(0)
            return items
        except BaseException as exc:  # nothing may cross the C frames; re-raised later
            self.error = exc
            ctypes.set_errno(errno.EIO)
            return 0

    def _seek(self, _datasource: int, offset: int, whence: int) -> int:
        if whence == _SEEK_SET:
            target = offset
        elif whence == _SEEK_CUR:
            target = self.pos + offset
        elif whence == _SEEK_END:
            target = self.size + offset
        else:
            return -1
        if target < 0:
            return -1
        self.pos = target
        return 0

    def _tell(self, _datasource: int) -> int:
        return self.pos

    def _close(self, _datasource: int) -> int:
        return 0


class VorbisDecoder:
    """One Ogg Vorbis stream decoded to interleaved S16_LE.

    ``source`` is a :class:`ChunkBuffer` (reads wait for missing chunks), the whole file
    as bytes, or a path. Opening reads the headers and, the stream being seekable, the
    end of the file: it may block on a buffer. ``on_wait`` is called (from the decoding
    thread) each time a read has to wait for bytes; ``cancel`` makes such a wait give up.
    """

    def __init__(
        self,
        source: DecoderSource,
        *,
        cancel: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._owned: _FileSource | None = None
        readable: _ReadableSource
        if isinstance(source, ChunkBuffer):
            readable = source
        elif isinstance(source, bytes | bytearray | memoryview):
            readable = _BytesSource(source)
        else:
            self._owned = readable = _FileSource(source)
        self._reader = _Reader(readable, cancel, on_wait, poll_interval)
        self._vf = _VF()
        self._vf_p = ctypes.pointer(self._vf)
        self._bitstream = ctypes.c_int(-1)
        self._bitstream_p = ctypes.pointer(self._bitstream)
        self._open = False
        self._resync = False
        self._at_end = False
        self.holes = 0  # OV_HOLE reports skipped, as oggdec skips them
        try:
            # The datasource pointer only has to be non-NULL: the callbacks know theirs.
            rc = _ov_open_callbacks(1, self._vf_p, None, 0, self._reader.callbacks)
            self._raise_reader_error()
            if rc < 0:
                raise DecodeError(rc, "opening the stream")
            self._open = True
            info = _ov_info(self._vf_p, -1)
            self.rate: int = int(info.contents.rate)
            self.channels: int = int(info.contents.channels)
            total = int(_ov_pcm_total(self._vf_p, -1))
            if total < 0:
                raise DecodeError(total, "reading the stream length")
            self.total_frames: int = total
            self._pos = int(_ov_pcm_tell(self._vf_p))
        except BaseException:
            self.close()
            raise
        self.frame_bytes: int = self.channels * BYTES_PER_SAMPLE

    # --- decoding ------------------------------------------------------------------------

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Decode into ``buf`` as many whole frames as fit; returns the frame count,
        0 only at the end of the stream. Blocks while the source waits for bytes."""
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        frame_bytes = self.frame_bytes
        want = len(view) - len(view) % frame_bytes
        if want == 0:
            raise ValueError(f"buffer of {len(view)} bytes is smaller than a frame")
        self._check_open()
        if self._resync:
            self._seek_to(self._pos)
        base = ctypes.addressof(ctypes.c_char.from_buffer(view))
        vf_p, bitstream_p = self._vf_p, self._bitstream_p
        done = 0
        while done < want:
            n = _ov_read(vf_p, base + done, min(want - done, _INT_MAX), 0, 2, 1, bitstream_p)
            if self._reader.error is not None:
                self._resync = True  # a read failed inside libvorbisfile: seek back next time
                self._raise_reader_error()
            if n > 0:
                done += n
                continue
            if n == 0:
                self._at_end = True
                break
            if n == OV_HOLE:
                self.holes += 1
                continue
            self._resync = True
            raise DecodeError(n, "decoding")
        if done and self._bitstream.value > 0:
            self._check_link()
        frames = done // frame_bytes
        self._pos += frames
        return frames

    def read(self, max_frames: int) -> bytes:
        """Up to ``max_frames`` frames as bytes (shorter at the end, empty at the end)."""
        out = bytearray(max_frames * self.frame_bytes)
        frames = self.read_into(out)
        return bytes(memoryview(out)[: frames * self.frame_bytes])

    def seek(self, frame: int) -> None:
        """Continue decoding at ``frame`` (clamped to the stream), sample-exact."""
        self._check_open()
        self._seek_to(max(0, min(frame, self.total_frames)))

    def tell(self) -> int:
        """The frame the next read starts at."""
        return self._pos

    @property
    def eof(self) -> bool:
        """True once a read found the end of the stream (until the next seek)."""
        return self._at_end

    def close(self) -> None:
        """Release libvorbisfile's state (the source buffer stays open: it is not ours)."""
        if self._open:
            self._open = False
            _ov_clear(self._vf_p)
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> VorbisDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self.close()

    # --- internals -----------------------------------------------------------------------

    def _seek_to(self, frame: int) -> None:
        rc = _ov_pcm_seek(self._vf_p, frame)
        if self._reader.error is not None:
            self._resync = True
            self._raise_reader_error()
        if rc < 0:
            self._resync = True
            raise DecodeError(rc, f"seeking to frame {frame}")
        self._resync = False
        self._at_end = False
        self._pos = frame

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("decoder is closed")

    def _raise_reader_error(self) -> None:
        error, self._reader.error = self._reader.error, None
        if error is not None:
            raise error

    def _check_link(self) -> None:
        # A chained stream (several logical streams back to back) may change format.
        info = _ov_info(self._vf_p, -1)
        if (info.contents.rate, info.contents.channels) != (self.rate, self.channels):
            raise DecodeError(
                -137,
                f"chained stream changes to {info.contents.rate} Hz, "
                f"{info.contents.channels} channels",
            )
