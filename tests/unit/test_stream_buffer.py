"""ChunkBuffer: a file that streams in chunk by chunk, or arrives whole from the cache."""

from __future__ import annotations

import os

import pytest

from cadenza.stream.buffer import CHUNK_SIZE, ChunkBuffer


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 17])
def test_a_buffer_made_from_a_whole_file_is_complete_and_reads_it_back(size: int) -> None:
    data = os.urandom(size)
    whole = ChunkBuffer(size, data=data)
    streamed = ChunkBuffer(size)
    for i in range(streamed.num_chunks):
        streamed.write_chunk(i, data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
    for buf in (whole, streamed):
        assert buf.complete
        assert buf.contiguous_chunks == buf.num_chunks
        assert buf.contiguous_bytes == size
        assert buf.missing() == []
        assert buf.getvalue() == data
        assert buf.read(0, size + 10, timeout=0) == data
        assert buf.contiguous_from(size // 2) == size - size // 2
    # The cached file's bytes are the buffer (a cached track is not copied once more).
    assert whole.getvalue() is data
    # A chunk written again is a duplicate, not an error.
    assert whole.write_chunk(0, data[:CHUNK_SIZE]) is False


def test_a_complete_buffer_hands_its_bytes_over_read_only_and_without_a_copy() -> None:
    data = os.urandom(2 * CHUNK_SIZE + 3)
    buf = ChunkBuffer(len(data))
    for i in range(buf.num_chunks):
        buf.write_chunk(i, data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
    view = buf.view()
    assert view.readonly and view == data
    assert view.obj is buf.view().obj  # the buffer's own bytes, each time
    with pytest.raises(TypeError):
        view[0] = 1
    whole = ChunkBuffer(len(data), data=data)
    assert whole.view().obj is data


def test_a_whole_file_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="5 bytes for a buffer of 6"):
        ChunkBuffer(6, data=b"12345")


def test_a_detached_buffer_no_longer_calls_its_writer_back() -> None:
    asked: list[int] = []
    buf = ChunkBuffer(3 * CHUNK_SIZE, on_wanted=asked.append)
    buf.want(0)
    buf.detach()  # the stream that filled it is done (or stopped)
    buf.want(2)
    with pytest.raises(TimeoutError):
        buf.read(CHUNK_SIZE, 10, timeout=0.01)
    assert asked == [0]
    assert buf.wanted == 1  # still said, for whoever looks


def test_want_names_the_chunk_a_polling_reader_needs_without_waiting() -> None:
    asked: list[int] = []
    buf = ChunkBuffer(3 * CHUNK_SIZE, on_wanted=asked.append)
    buf.want(1)
    buf.want(1)  # said once
    assert buf.wanted == 1 and asked == [1]
    buf.write_chunk(1, bytes(CHUNK_SIZE))
    assert buf.wanted is None
    buf.want(1)  # present: nothing to ask
    assert asked == [1]
    buf.close()
    buf.want(2)  # closed: nobody will fetch it
    assert asked == [1]
