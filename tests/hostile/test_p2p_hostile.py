"""Hostile peers at a speaker's overlay: a replayed IK initiation, and admitted peers that
try to make a speaker hold memory (in this process, on loopback, with the real service,
sessions and overlays of tests/overlayworld.py; the attacker is tests/hostile/wire.py).
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from pathlib import Path

import pytest
import trio
import wire

from cadenza.protocol.budget import PEER
from overlayworld import Node, World, open_world


async def eventually(condition: object, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await trio.sleep(0.01)


async def recording_relay(nursery: trio.Nursery, target_port: int, recorded: bytearray) -> int:
    """A TCP relay to ``target_port`` that keeps what the dialler sends (a wiretap)."""

    async def relay(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", target_port) as server:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, keep: bool) -> None:
                try:
                    async for data in src:
                        if keep:
                            recorded.extend(data)
                        await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery_inner.cancel_scope.cancel()

            async with trio.open_nursery() as nursery_inner:
                nursery_inner.start_soon(pump, client, server, True)
                nursery_inner.start_soon(pump, server, client, False)

    listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def first_message(recorded: bytes) -> bytes:
    """The preamble and first Noise message of a recorded flight."""
    n = int.from_bytes(recorded[5:7], "big")
    return recorded[: 7 + n]


async def test_a_replayed_ik_initiation_is_never_admitted_and_never_costs_the_genuine_peer(
    tmp_path: Path,
) -> None:
    async with open_world(tmp_path) as world:
        await _replay_attack(world)


async def _replay_attack(world: World) -> None:
    a = await world.node("a")
    b = await world.node("b")
    a_id = a.overlay._own_peer_id()
    # A dials B with IK through a wiretap: the attacker records A's first flight.
    recorded = bytearray()
    tap = await recording_relay(world.nursery, b.overlay.port, recorded)
    link = await a.overlay.dial("127.0.0.1", tap, b.static.public)
    assert link is not None
    await eventually(lambda: a_id in b.overlay.links)
    flight = first_message(bytes(recorded))
    assert flight[:5] == b"CDZ\x01\x02"  # IK
    # The genuine link goes (A moved on); the attacker replays the recording from sockets
    # that hold no key, three times, and holds each open.
    link.conn.abort("test: A leaves")
    await eventually(lambda: a_id not in b.overlay.links)
    held: list[wire.Closed] = []

    async def replay(source: str) -> None:
        async with await wire.RawPeer.connect("127.0.0.1", b.overlay.port, source=source) as peer:
            await peer.send_raw(flight)
            held.append(await peer.hold())

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(replay, f"127.0.0.{30 + i}")
        # The responder answered the first message (the replayer cannot read it); it has
        # not taken the replayer in: the peer's pseudonym is nowhere in its table.
        await trio.sleep(1.0)
        assert a_id not in b.overlay.links
        assert a_id not in b.overlay.neighbours
        # The genuine peer comes back meanwhile: it connects, and stays connected.
        again = await a.overlay.dial("127.0.0.1", b.overlay.port, b.static.public)
        assert again is not None and again.usable
        await eventually(lambda: a_id in b.overlay.links)
        genuine = b.overlay.links[a_id]
        assert genuine.conn.remote_address[0] == "127.0.0.1"
        # The replays end at the handshake deadline, never admitted.
    assert len(held) == 3
    assert b.overlay.links.get(a_id) is genuine and genuine.usable and again.usable
    assert b.overlay.links.keys() == {a_id}


async def test_an_admitted_peer_cannot_make_a_speaker_hold_more_than_its_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ordinary account's speakers (valid certificates) flood unfinished messages, each
    just under the size limit, on 128 channels over two connections, three times each:
    each is cut off at its budget, and what the speaker holds for peers never passes two
    connections' budgets (on the old code each could park 128 x 512 KiB = 64 MiB)."""
    caplog.set_level(logging.WARNING, logger="cadenza.net")
    async with open_world(tmp_path) as world:
        b = await world.node("b")
        # Two devices of one account: two certificates (one is one connection: a second
        # with the same pseudonym is refused as a duplicate).
        evil = [await world.node(f"evil{i}", user="mallory") for i in range(2)]
        peak = 0
        sent: list[int] = []

        async def flood(source: str, node: Node) -> None:
            nonlocal peak
            login = node.session.login
            assert login is not None
            for _ in range(3):
                peer = await wire.RawPeer.connect("127.0.0.1", b.overlay.port, source=source)
                async with peer:
                    await peer.handshake_xx(
                        wire.hello("evil", certificate=login.certificate),
                        static=node.static.private,
                    )
                    await peer.wait_admitted()
                    # Each message just under the size a peer's may have, so that it is the
                    # sum that must stop it (512 KiB each is cut at the first: too large).
                    with contextlib.suppress(wire.PeerClosed):
                        await peer.open_channels_with_fragments(128, PEER.message - 1024)
                    peak = max(peak, b.overlay.pool.total)
                    await peer.hold()
                    sent.append(peer.bytes_sent)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, "127.0.0.40", evil[0])
                nursery.start_soon(flood, "127.0.0.41", evil[1])
        assert len(sent) == 6
        assert peak <= 2 * PEER.held
        await eventually(lambda: b.overlay.pool.total == 0)
        # Each was cut off for its budget, long before its 64 MiB were in.
        cut = [r for r in caplog.records if "budget" in r.getMessage()]
        assert len(cut) == 6
        assert max(sent) < 32 * 1024 * 1024
