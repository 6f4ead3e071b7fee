"""The overlay over loopback: real service, real sessions, real peer connections.

Speakers here are the session + cache + overlay + streaming engine of ``cadenzad`` without
the player (the network-namespace tests run whole daemons with ALSA)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza import net
from cadenza.cache.store import Cache
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.certificate import CertificateIssuer
from cadenza.protocol.noise import KeyPair
from cadenza.protocol.peer import SearchHit, SearchQuery
from cadenza.session.client import State
from cadenza.stream.buffer import CHUNK_SIZE
from overlayworld import SIZE, Node, World, open_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as made:
        yield made


async def eventually(condition: Any, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - state polled from outside the code under test
            await trio.sleep(0.01)


def playback(speed: float) -> Any:
    """A playhead moving ``speed`` times faster than real time from now on."""
    start = trio.current_time()
    return lambda: int((trio.current_time() - start) * 1000 * speed)


async def wait_announced(node: Node, file_id: str) -> None:
    await eventually(lambda: file_id in node.overlay._announced)


async def test_b_streams_what_a_holds_and_the_service_serves_only_the_first_piece(
    world: World,
) -> None:
    a = await world.node("a", holds=True)
    await wait_announced(a, world.file_id)
    b = await world.node("b")
    stream = world.stream(b)
    buffer = await world.nursery.start(stream.run)
    with trio.fail_after(30):
        await stream.done.wait()
    assert buffer.getvalue() == world.payload
    by = stream.stats.bytes_by_source
    # The first piece (2 s: 3 chunks) and the tail (2 chunks) at most from the service.
    assert by.get("service", 0) <= 5 * CHUNK_SIZE, by
    assert by["peer"] + by.get("service", 0) == SIZE
    assert by["peer"] >= SIZE - 5 * CHUNK_SIZE
    assert "tracker" in stream.stats.found_by
    # B now holds it whole too, and serves it: announced to the tracker.
    assert b.cache.has(world.file_id)
    await wait_announced(b, world.file_id)
    assert a.overlay.traffic.uploaded == by["peer"]


async def test_without_peers_the_service_serves_it_all(world: World) -> None:
    b = await world.node("b")
    stream = world.stream(b, ahead_s=1000)
    buffer = await world.nursery.start(stream.run)
    with trio.fail_after(30):
        await stream.done.wait()
    assert buffer.getvalue() == world.payload
    assert stream.stats.bytes_by_source == {"service": SIZE}


class CorruptCache(Cache):
    """A modified speaker: serves every chunk with one bit flipped."""

    def read_chunks(self, file_id: str, first: int, count: int) -> list[bytes]:
        out = []
        for chunk in super().read_chunks(file_id, first, count):
            bad = bytearray(chunk)
            bad[0] ^= 1
            out.append(bytes(bad))
        return out


async def test_a_peer_serving_corrupt_chunks_is_dropped_reported_and_banned(world: World) -> None:
    evil = await world.node("evil", holds=True, cache_cls=CorruptCache, user="mallory")
    await wait_announced(evil, world.file_id)
    evil_id = evil.overlay._own_peer_id()
    b = await world.node("b")
    stream = world.stream(b, position_ms=playback(speed=20))
    buffer = await world.nursery.start(stream.run)
    with trio.fail_after(30):
        await stream.done.wait()
    # Not one bad byte written: the file is whole and right, from the service in the end.
    assert buffer.getvalue() == world.payload
    assert stream.stats.bad_chunks >= 1
    assert "peer" not in stream.stats.bytes_by_source
    assert b.overlay.banned(evil_id)
    # The service banned it: its session was ended and it cannot log in again.
    await eventually(lambda: evil.session.status.state is not State.ONLINE)
    assert "banned" in evil.session.status.error


async def test_a_speaker_without_a_valid_certificate_cannot_connect(world: World) -> None:
    b = await world.node("b")
    port = b.overlay.port
    # No certificate at all.
    stranger = net.Identity(KeyPair.generate(), hello_payload("stranger"))
    with pytest.raises(net.HandshakeFailed, match="no membership certificate"):
        async with net.open_connection("127.0.0.1", port, identity=stranger):
            pass
    # A certificate from a key the overlay does not trust (a forged service).
    key = KeyPair.generate()
    forged = CertificateIssuer(Ed25519PrivateKey.generate(), "cadenza").issue(
        peer_id=os.urandom(16), noise_static=key.public, endpoint=None, now=trio_time()
    )
    with pytest.raises(net.HandshakeFailed, match="unknown key"):
        async with net.open_connection(
            "127.0.0.1", port, identity=net.Identity(key, hello_payload("x", certificate=forged))
        ):
            pass
    # A real certificate, presented with another Noise key.
    login = b.session.login
    assert login is not None
    thief = net.Identity(KeyPair.generate(), hello_payload("x", certificate=login.certificate))
    with pytest.raises(net.HandshakeFailed, match="different Noise static key"):
        async with net.open_connection("127.0.0.1", port, identity=thief):
            pass
    assert not b.overlay.links


def trio_time() -> float:
    import time

    return time.time()


async def test_two_hop_search_finds_a_holder_through_a_neighbour(world: World) -> None:
    a = await world.node("a", holds=True)
    c = await world.node("c")
    b = await world.node("b")
    # B - C - A: B knows only C; C knows A.
    assert await c.overlay.dial("127.0.0.1", a.overlay.port) is not None
    assert await b.overlay.dial("127.0.0.1", c.overlay.port) is not None
    found: list[tuple[bytes, str]] = []
    await b.overlay._find_search(world.file_id, lambda link, how: found.append((link.peer_id, how)))
    assert (a.overlay._own_peer_id(), "search") in found
    # The same query arriving again at C is dropped (duplicate suppression).
    assert len(c.overlay.router) >= 1


async def test_a_search_answer_naming_an_arbitrary_endpoint_is_never_dialled(
    world: World,
) -> None:
    # A trap: whoever connects here was dialled on a peer's word alone.
    accepted: list[Any] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    trap_port = listeners[0].socket.getsockname()[1]

    async def on_accept(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await stream.aclose()

    world.nursery.start_soon(partial(trio.serve_listeners, on_accept, listeners))
    liar = await world.node("liar")
    b = await world.node("b")
    assert await b.overlay.dial("127.0.0.1", liar.overlay.port) is not None
    key = KeyPair.generate()
    forged = CertificateIssuer(Ed25519PrivateKey.generate(), "cadenza").issue(
        peer_id=os.urandom(16),
        noise_static=key.public,
        endpoint=("127.0.0.1", trap_port),
        now=trio_time(),
    )

    async def lying_search(link: Any, ch: net.Channel, q: SearchQuery) -> None:
        await ch.send(SearchHit(q.query_id, q.file_id, forged))

    liar.overlay._on_search = lying_search  # type: ignore[method-assign]
    found: list[Any] = []
    await b.overlay.find(world.file_id, lambda link, how: found.append(how))
    await trio.sleep(0.5)
    assert accepted == []
    assert found == []


async def test_more_upload_slots_on_reload_start_waiting_requests(world: World) -> None:
    a = await world.node("a", holds=True, max_uploads=1)
    await wait_announced(a, world.file_id)
    hog = object()
    assert a.overlay.uploads.request(hog, 0)  # the only slot is taken
    b = await world.node("b")
    stream = world.stream(b, position_ms=playback(speed=20))
    buffer = await world.nursery.start(stream.run)
    await eventually(lambda: a.overlay.uploads.waiting >= 1)
    a.overlay.set_max_uploads(2)  # what a SIGHUP with p2p.max_uploads = 2 does
    with trio.fail_after(30):
        await stream.done.wait()
    assert buffer.getvalue() == world.payload
    assert stream.stats.bytes_by_source.get("peer", 0) > 0
    assert a.overlay.traffic.refused_busy == 0  # served, not timed out into "busy"


async def test_a_peer_that_resets_the_connection_mid_handshake_is_a_failed_dial(
    world: World,
) -> None:
    """Found by the swarm (a neighbour switched off while we dialled it): the connection lost
    during the handshake was swallowed inside the dial's task, which then never reported
    started, and the RuntimeError took the speaker down. Now it is a failed dial."""

    async def reset_after_first_message(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the dialler's first handshake message
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()  # with linger 0: a RST, not a FIN

    listeners = await world.nursery.start(
        partial(trio.serve_tcp, reset_after_first_message, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    b = await world.node("b")
    with trio.fail_after(30):
        assert await b.overlay.dial("127.0.0.1", port) is None
    # The speaker's overlay is still up: it dials a real peer next.
    a = await world.node("a", holds=True)
    assert await b.overlay.dial("127.0.0.1", a.overlay.port) is not None
