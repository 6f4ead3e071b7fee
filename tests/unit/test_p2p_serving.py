"""Serving on its own (cadenza.p2p.serving): chunks and manifests from the cache to a
neighbour over a real loopback link, upload slots, and our own playback first."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from cadenza import net
from cadenza.cache.store import Cache
from cadenza.p2p import serving
from cadenza.p2p.links import PeerLink
from cadenza.p2p.serving import READ_BATCH, Server
from cadenza.protocol import api
from cadenza.protocol.messages import Priority
from cadenza.stream.buffer import CHUNK_SIZE
from p2pparts import Peer, Signer, eventually, peer

SIZE = 20 * CHUNK_SIZE + 1234  # 21 chunks: three batches


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def payload() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def cache(tmp_path: Path, signer: Signer, payload: bytes) -> Cache:
    cache = Cache(tmp_path / "cache", capacity=10 << 20)
    manifest = signer.sign(payload)
    assert cache.put(manifest.file_id, manifest, payload)
    return cache


class Served:
    """A peer whose requests a :class:`Server` answers, and a neighbour linked to it."""

    def __init__(self, holder: Peer, server: Server, link: PeerLink, file_id: str) -> None:
        self.holder = holder
        self.server = server
        self.link = link  # the neighbour's link to the holder
        self.file_id = file_id

    @property
    def neighbour_id(self) -> bytes:
        return next(iter(self.holder.table.links))


async def served(
    nursery: trio.Nursery,
    signer: Signer,
    cache: Cache,
    buffer_low: Callable[[], bool] = lambda: False,
    max_uploads: int = 4,
) -> Served:
    servers: list[Server] = []

    async def handle(conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        link = holder.table.link_of(conn)
        assert link is not None
        if isinstance(msg, api.GetChunks):
            await servers[0].serve_chunks(link, ch, msg)
        else:
            assert isinstance(msg, api.GetManifest)
            await servers[0].serve_manifest(ch, msg)

    holder = await peer(nursery, signer, handle)
    server = Server(
        cache=cache,
        neighbours=holder.table.neighbours,
        traffic=holder.table.traffic,
        max_uploads=max_uploads,
        buffer_low=buffer_low,
    )
    servers.append(server)
    neighbour = await peer(nursery, signer)
    link = await neighbour.table.dial("127.0.0.1", holder.port, holder.static.public)
    assert link is not None
    await eventually(lambda: holder.table.links)
    (file_id,) = cache.file_ids()
    return Served(holder, server, link, file_id)


async def fetch(
    link: PeerLink, file_id: str, first: int, count: int, got: list[tuple[int, bytes]] | None = None
) -> list[tuple[int, bytes]]:
    """What the stream engine's PeerSource does: GetChunks, then the chunks as they come."""
    got = [] if got is None else got
    async with link.conn.open_channel(Priority.PLAYING) as ch:
        await ch.send(api.GetChunks(file_id, first, count), end=True)
        async for item in ch:
            if isinstance(item, net.Bulk):
                got.append((item.index, bytes(item.data)))
            else:
                raise net.RequestFailed(getattr(item, "code", "error"), "")
    return got


def chunks(payload: bytes, first: int, count: int) -> list[tuple[int, bytes]]:
    return [
        (i, payload[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]) for i in range(first, first + count)
    ]


async def test_chunks_are_served_in_order_and_counted(
    nursery: trio.Nursery, signer: Signer, cache: Cache, payload: bytes
) -> None:
    s = await served(nursery, signer, cache)
    got = await fetch(s.link, s.file_id, 3, 1000)  # past the end: up to the last chunk
    assert got == chunks(payload, 3, 18)
    sent = SIZE - 3 * CHUNK_SIZE
    traffic = s.holder.table.traffic
    assert (traffic.upload_requests, traffic.uploaded, traffic.refused_busy) == (1, sent, 0)
    assert s.holder.table.links[s.neighbour_id].uploaded == sent
    # Serving a neighbour makes it more useful to keep.
    assert s.holder.table.neighbours.score(s.neighbour_id, trio.current_time()) > 0
    assert s.server.uploads.active == 0


async def test_the_manifest_is_served_as_the_cache_holds_it(
    nursery: trio.Nursery, signer: Signer, cache: Cache
) -> None:
    s = await served(nursery, signer, cache)
    reply = await s.link.conn.request(api.GetManifest(s.file_id))
    assert reply == api.ManifestReply(cache.manifest(s.file_id))
    with pytest.raises(net.RequestFailed) as failed:
        await s.link.conn.request(api.GetManifest("0" * 64))
    assert failed.value.code == "not-found"


@pytest.mark.parametrize(
    ("file_id", "first", "count", "code"),
    [
        ("0" * 64, 0, 1, "not-found"),
        (None, 21, 1, "bad-request"),  # past the last chunk
        (None, 0, 0, "bad-request"),
        (None, 0, api.MAX_CHUNKS_PER_REQUEST + 1, "bad-request"),
    ],
)
async def test_requests_it_cannot_serve_are_refused(
    nursery: trio.Nursery,
    signer: Signer,
    cache: Cache,
    file_id: str | None,
    first: int,
    count: int,
    code: str,
) -> None:
    s = await served(nursery, signer, cache)
    with pytest.raises(net.RequestFailed) as failed:
        await fetch(s.link, file_id or s.file_id, first, count)
    assert failed.value.code == code
    assert s.holder.table.traffic.uploaded == 0


async def test_a_speaker_with_no_upload_slots_is_busy(
    nursery: trio.Nursery, signer: Signer, cache: Cache
) -> None:
    s = await served(nursery, signer, cache, max_uploads=0)
    with pytest.raises(net.RequestFailed) as failed:
        await fetch(s.link, s.file_id, 0, 1)
    assert failed.value.code == "busy"


async def test_a_low_playback_buffer_refuses_new_requests(
    nursery: trio.Nursery, signer: Signer, cache: Cache
) -> None:
    s = await served(nursery, signer, cache, buffer_low=lambda: True)
    with pytest.raises(net.RequestFailed) as failed:
        await fetch(s.link, s.file_id, 0, 4)
    assert failed.value.code == "busy"
    assert s.holder.table.traffic.refused_busy == 1


async def test_a_low_playback_buffer_pauses_an_upload_between_batches(
    nursery: trio.Nursery, signer: Signer, cache: Cache, payload: bytes
) -> None:
    low = True
    looks = 0

    def buffer_low() -> bool:
        nonlocal looks
        looks += 1
        return low and looks > 1  # the first look, at the request, sees it high

    s = await served(nursery, signer, cache, buffer_low=buffer_low)
    got: list[tuple[int, bytes]] = []
    done = trio.Event()

    async def download() -> None:
        await fetch(s.link, s.file_id, 0, 2 * READ_BATCH, got)
        done.set()

    nursery.start_soon(download)
    await eventually(lambda: looks >= 4)  # polled while paused
    assert got == [] and not done.is_set()
    assert s.server.uploads.active == 1
    low = False
    with trio.fail_after(10):
        await done.wait()
    assert got == chunks(payload, 0, 2 * READ_BATCH)


async def test_a_request_waits_for_a_slot_and_more_slots_start_it(
    nursery: trio.Nursery, signer: Signer, cache: Cache, payload: bytes
) -> None:
    s = await served(nursery, signer, cache, max_uploads=1)
    hog = object()
    assert s.server.uploads.request(hog, 0)  # the only slot is taken
    got: list[tuple[int, bytes]] = []
    done = trio.Event()

    async def download() -> None:
        await fetch(s.link, s.file_id, 0, 2, got)
        done.set()

    nursery.start_soon(download)
    await eventually(lambda: s.server.uploads.waiting == 1)
    assert got == []
    s.server.set_max_uploads(2)  # a reload
    with trio.fail_after(10):
        await done.wait()
    assert got == chunks(payload, 0, 2)
    assert s.holder.table.traffic.refused_busy == 0
    assert s.server.uploads.active == 1  # the hog's


async def test_a_request_that_waits_too_long_for_a_slot_is_told_busy(
    nursery: trio.Nursery, signer: Signer, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "SLOT_WAIT", 0.05)
    s = await served(nursery, signer, cache, max_uploads=1)
    hog = object()
    assert s.server.uploads.request(hog, 0)
    with pytest.raises(net.RequestFailed) as failed:
        await fetch(s.link, s.file_id, 0, 1)
    assert failed.value.code == "busy"
    assert s.holder.table.traffic.refused_busy == 1
    assert s.server.uploads.waiting == 0  # it gave up its place in the queue
    # The slot freed, the next request is served at once.
    s.server.uploads.release(hog)
    assert len(await fetch(s.link, s.file_id, 0, 1)) == 1
