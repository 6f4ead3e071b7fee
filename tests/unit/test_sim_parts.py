"""The simulator's stand-ins: in-memory disks (real manifests, real LRU) and the paced sink."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza.cache.store import NotCached, RefusedFile
from cadenza.player.player import Buffering, TrackEnded, TrackStarted
from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    ChunkError,
    ManifestSigner,
    ManifestVerifier,
    file_id_of,
)
from cadenza.service.storage import FileNotFound
from cadenza.sim.disk import Library, SimCache, SimStorage
from cadenza.sim.sink import SinkPlayer
from cadenza.stream.buffer import ChunkBuffer

KEY = Ed25519PrivateKey.generate()


def library() -> Library:
    return Library(ManifestSigner(KEY))


def test_a_simulated_file_is_a_real_content_addressed_file_with_a_signed_manifest() -> None:
    lib = library()
    f = lib.make("track/1", 5 * CHUNK_SIZE + 100)
    data = f.data()
    assert len(data) == f.size and file_id_of(data) == f.file_id
    manifest = ManifestVerifier([KEY.public_key()]).verify(f.manifest, file_id=f.file_id)
    storage = SimStorage(lib)
    chunks = storage.read_chunks(f.file_id, 3, 3)
    for i, chunk in enumerate(chunks, start=3):
        manifest.verify_chunk(i, chunk)
        assert chunk == data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
    with pytest.raises(ChunkError):
        manifest.verify_chunk(5, chunks[0])  # a full chunk where the short last one belongs
    assert lib.make("track/2", 1000).file_id != f.file_id
    with pytest.raises(FileNotFound):
        storage.size("00" * 32)
    with pytest.raises(ValueError, match="not within"):
        storage.read_chunks(f.file_id, 5, 2)


def test_the_cache_refuses_wrong_data_and_evicts_least_recently_used_never_pinned() -> None:
    lib = library()
    files = [lib.make(f"t/{i}", 3 * CHUNK_SIZE) for i in range(4)]
    one = files[0].size + len(files[0].manifest)
    cache = SimCache(lib, capacity=3 * one)
    with pytest.raises(RefusedFile):
        cache.put(files[0].file_id, files[0].manifest, b"x" * files[0].size)
    for i in (0, CHUNK_SIZE + 5, files[0].size - 1):  # one byte off, in any chunk
        bad = bytearray(files[0].data())
        bad[i] ^= 1
        with pytest.raises(RefusedFile):
            cache.put(files[0].file_id, files[0].manifest, bytes(bad))
    for wrong in (files[0].data()[:-1], files[0].data() + b"x", files[1].data()):
        with pytest.raises(RefusedFile):
            cache.put(files[0].file_id, files[0].manifest, wrong)
    for f in files[:3]:
        assert cache.put(f.file_id, f.manifest, f.data())
    cache.open(files[0].file_id)  # a use: file 1 is now the least recently used
    cache.pin(files[1].file_id)  # ... but pinned, so file 2 goes
    assert cache.put(files[3].file_id, files[3].manifest, files[3].data())
    assert cache.file_ids() == [files[1].file_id, files[0].file_id, files[3].file_id]
    assert cache.evictions == 1
    with pytest.raises(NotCached):
        cache.read_chunks(files[2].file_id, 0, 1)
    assert cache.read_chunks(files[3].file_id, 2, 1) == [files[3].data()[2 * CHUNK_SIZE :]]


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[float, Any]] = []

    def __call__(self, event: Any) -> None:
        self.seen.append((trio.current_time(), event))

    def of(self, kind: type) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.seen if isinstance(e, kind)]


class Item:
    def __init__(self, key: str, buffer: ChunkBuffer) -> None:
        self.key = key
        self.buffer = buffer


def fill(buffer: ChunkBuffer, chunks: range) -> None:
    for i in chunks:
        n = min(CHUNK_SIZE, buffer.size - i * CHUNK_SIZE)
        buffer.write_chunk(i, b"\0" * n)


def test_a_simulated_file_is_recognised_in_any_buffer_and_a_view_is_not_copied() -> None:
    f = library().make("t/v", 3 * CHUNK_SIZE + 5)
    good = bytearray(f.data())
    for data in (bytes(good), good, memoryview(good), memoryview(good).toreadonly()):
        assert f.matches(data)
    # What counts is what the view shows, not the buffer behind it.
    twice = bytearray(good + good)
    assert f.matches(memoryview(twice)[: f.size]) and f.matches(memoryview(twice)[f.size :])
    assert not f.matches(memoryview(twice)[1 : f.size + 1])
    assert f.matches(memoryview(bytearray(good[::-1]))[::-1])
    assert not f.matches(memoryview(good)[::-1])
    bad = bytearray(good)
    bad[CHUNK_SIZE + 7] ^= 1
    assert not f.matches(memoryview(bad))


def test_whole_files_are_made_once_while_in_use_and_the_least_recently_used_dropped() -> None:
    lib = Library(ManifestSigner(KEY), whole_files_kept=2)
    a, b, c = (lib.make(f"t/w{i}", 2 * CHUNK_SIZE + i) for i in range(3))
    first = lib.whole(a)
    assert first == a.data() and lib.whole(a) is first
    b_first = lib.whole(b)
    lib.whole(a)  # a use: b is now the least recently used
    lib.whole(c)  # one too many: b goes
    assert lib.whole(a) is first
    b_again = lib.whole(b)
    assert b_again == b.data() and b_again is not b_first  # made anew
    cache = SimCache(lib, capacity=10 * a.size)
    cache.warm(a.file_id)
    assert cache.open(a.file_id) is lib.whole(a)


def test_the_sink_plays_at_the_byte_rate_stalls_on_a_missing_chunk_and_joins_gaplessly() -> None:
    bps = 16384.0  # a chunk a second
    events = Events()

    async def main() -> None:
        sink = SinkPlayer(bps)
        sink.on_event = events
        first, second = ChunkBuffer(10 * CHUNK_SIZE), ChunkBuffer(4 * CHUNK_SIZE)
        fill(first, range(5))
        fill(second, range(4))
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            sink.play(Item("a", first))
            sink.set_next(Item("b", second))
            await trio.sleep(3)
            assert sink.position_ms() == 3000
            await trio.sleep(4)  # ran dry at 5 s: two seconds stalled
            assert sink.underruns == 1 and sink.position_ms() == 5000
            assert first.wanted == 5  # the missing chunk was asked for, as a decoder would
            fill(first, range(5, 10))
            await trio.sleep(5.5)  # the rest of "a", then "b" starts without a gap
            assert sink._item is not None and sink._item.key == "b"
            sink.pause()
            paused_at = sink.position_ms()
            await trio.sleep(10)
            assert sink.position_ms() == paused_at
            sink.resume()
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
        (started_a, _), (started_b, _) = events.of(TrackStarted)
        assert started_a == 0
        # "a" is 10 s of audio and stalled about 2 s (until the chunk arrived, within a poll).
        assert 12 <= started_b <= 12.1
        assert [e.track_key for _, e in events.of(TrackEnded)] == ["a", "b"]
        assert [e.track_key for _, e in events.of(Buffering)] == ["a"]
        a, b = sink.finished
        assert a.underruns == 1 and 1.9 < a.stalled_s < 2.1 and a.end_byte == first.size
        assert b.underruns == 0 and b.end_byte == second.size

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_seldom_polls_skip_most_system_calls_and_still_hear_other_threads() -> None:
    """poll_io_seldom: a loop kept busy polls for I/O once in 64 turns, not every turn; a call
    from another thread still gets through while it is busy, and wakes it when it is idle."""
    import threading

    from trio._core._run import GLOBAL_RUN_CONTEXT

    from cadenza.sim.clock import _SeldomPolls, poll_io_seldom

    polls: list[float] = []
    heard: list[str] = []

    async def main() -> None:
        poll_io_seldom()

        manager = GLOBAL_RUN_CONTEXT.runner.io_manager
        assert isinstance(manager, _SeldomPolls)
        real = manager._poll
        manager._poll = lambda timeout: polls.append(timeout) or real(timeout)
        token = trio.lowlevel.current_trio_token()
        for _ in range(6400):  # busy: a turn that must not wait, each time
            await trio.lowlevel.checkpoint()
        assert 90 <= len(polls) <= 110, len(polls)
        # From a thread while busy: heard within a few turns.
        done = threading.Event()
        threading.Thread(
            target=lambda: (token.run_sync_soon(heard.append, "busy"), done.set())
        ).start()
        await trio.to_thread.run_sync(done.wait)
        turns = 0
        while not heard:
            await trio.lowlevel.checkpoint()
            turns += 1
        assert turns <= 64
        # Idle (nothing to run, no deadline): the loop waits for I/O and a thread wakes it.
        woken = trio.Event()

        def from_thread() -> None:
            token.run_sync_soon(heard.append, "idle")
            token.run_sync_soon(woken.set)

        threading.Timer(0.2, from_thread).start()
        await woken.wait()
        assert heard == ["busy", "idle"]

    trio.run(main)
