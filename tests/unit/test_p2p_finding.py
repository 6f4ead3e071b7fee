"""Finding on its own (cadenza.p2p.finding): the tracker, the 2-hop search and the LAN
neighbours, over real loopback links; and announcing what we hold."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from cadenza import net
from cadenza.cache.store import Cache
from cadenza.p2p.finding import Finder, LanPeer
from cadenza.p2p.links import PeerLink
from cadenza.protocol import api
from cadenza.protocol.messages import Message
from cadenza.protocol.peer import SearchHit, SearchQuery
from cadenza.stream.buffer import CHUNK_SIZE
from p2pparts import Peer, Signer, eventually, peer


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


@pytest.fixture
def signer() -> Signer:
    return Signer()


class Node:
    def __init__(self, peer: Peer, finder: Finder, cache: Cache) -> None:
        self.peer = peer
        self.finder = finder
        self.cache = cache
        self.table = peer.table

    async def dial(self, other: Node) -> PeerLink:
        link = await self.table.dial("127.0.0.1", other.peer.port, other.peer.static.public)
        assert link is not None
        await eventually(lambda: self.peer.peer_id in other.table.links)
        return link


class World:
    def __init__(self, nursery: trio.Nursery, signer: Signer, tmp: Path) -> None:
        self.nursery = nursery
        self.signer = signer
        self.tmp = tmp
        self.payload = os.urandom(3 * CHUNK_SIZE)
        self.manifest = signer.sign(self.payload)
        self.file_id = self.manifest.file_id

    async def node(self, name: str, *, holds: bool = False, enabled: bool = True) -> Node:
        finders: list[Finder] = []

        async def handle(conn: net.PeerConnection, ch: net.Channel) -> None:
            msg = await ch.receive()
            link = p.table.link_of(conn)
            assert link is not None and isinstance(msg, SearchQuery)
            await finders[0].on_search(link, ch, msg)

        cache = Cache(self.tmp / name, capacity=10 << 20)
        if holds:
            assert cache.put(self.file_id, self.manifest, self.payload)
        p = await peer(self.nursery, self.signer, handle, is_lan=lambda a: finders[0].is_lan(a))
        finder = Finder(session=p.session, cache=cache, table=p.table, enabled=enabled)  # type: ignore[arg-type]
        finders.append(finder)
        return Node(p, finder, cache)


@pytest.fixture
def world(nursery: trio.Nursery, signer: Signer, tmp_path: Path) -> World:
    return World(nursery, signer, tmp_path)


Founds = list[tuple[bytes, str]]


def collector() -> tuple[Founds, object]:
    found: Founds = []
    return found, lambda link, how: found.append((link.peer_id, how))


async def test_a_holder_answers_a_direct_question_once(world: World) -> None:
    a = await world.node("a", holds=True)
    b = await world.node("b")
    link = await b.dial(a)
    q = SearchQuery(os.urandom(16), world.file_id, 1)

    async def ask() -> list[object]:
        async with link.conn.open_channel() as ch:
            await ch.send(q, end=True)
            return [item async for item in ch]

    assert await ask() == [SearchHit(q.query_id, world.file_id, a.peer.session.login.certificate)]  # type: ignore[union-attr]
    assert await ask() == []  # the same query again: a duplicate, dropped
    assert a.finder.traffic.search_in > 0 and a.finder.traffic.search_out > 0


async def test_a_two_hop_search_finds_a_holder_through_a_neighbour(world: World) -> None:
    a = await world.node("a", holds=True)
    c = await world.node("c")
    b = await world.node("b")
    await c.dial(a)  # B - C - A: B knows only C, C knows A
    await b.dial(c)
    found, on_found = collector()
    await b.finder.find_search(world.file_id, on_found)  # type: ignore[arg-type]
    assert found == [(a.peer.peer_id, "search")]
    assert a.peer.peer_id in b.table.links  # dialled at the endpoint in A's certificate
    assert len(c.finder.router) >= 1
    # C answered for A: B credits it as a useful neighbour for searching.
    assert b.table.neighbours.score(c.peer.peer_id, trio.current_time()) > 0
    assert b.finder.traffic.search_out > 0 and b.finder.traffic.search_in > 0


async def test_a_search_answer_the_service_did_not_sign_is_never_dialled(
    world: World, nursery: trio.Nursery
) -> None:
    forger = Signer()
    trap = await peer(nursery, forger)  # what the forged certificate points at
    forged = forger.login(trap.static, ("127.0.0.1", trap.port)).certificate

    async def lie(conn: net.PeerConnection, ch: net.Channel) -> None:
        q = await ch.receive()
        assert isinstance(q, SearchQuery)
        await ch.send(SearchHit(q.query_id, q.file_id, forged), end=True)

    liar = await peer(nursery, world.signer, lie)
    b = await world.node("b")
    assert await b.table.dial("127.0.0.1", liar.port, liar.static.public) is not None
    found, on_found = collector()
    await b.finder.find_search(world.file_id, on_found)  # type: ignore[arg-type]
    assert found == []
    assert b.table.links.keys() == {liar.peer_id} and not trap.table.links


async def test_find_dials_the_holders_the_tracker_names_except_banned_ones(world: World) -> None:
    a = await world.node("a", holds=True)
    x = await world.node("x", holds=True)
    b = await world.node("b")
    b.table.ban(x.peer.peer_id)

    def info(n: Node) -> api.PeerInfo:
        return api.PeerInfo(n.peer.peer_id, "127.0.0.1", n.peer.port, n.peer.static.public)

    def tracker(msg: Message) -> object:
        assert isinstance(msg, api.FindPeers) and msg.file_id == world.file_id
        return api.PeersReply((info(x), info(a)))

    b.peer.session.answer = tracker
    found, on_found = collector()
    await b.finder.find(world.file_id, on_found)  # type: ignore[arg-type]
    assert found == [(a.peer.peer_id, "tracker")]  # no neighbours: nothing from search or LAN
    assert b.table.links.keys() == {a.peer.peer_id}
    assert b.finder.traffic.finds == 1


async def test_find_waits_for_the_login(
    world: World, signer: Signer, nursery: trio.Nursery
) -> None:
    lonely = await peer(nursery, signer, trusted=False)
    finder = Finder(session=lonely.session, cache=Cache(world.tmp / "l"), table=lonely.table)  # type: ignore[arg-type]
    _, on_found = collector()
    with trio.move_on_after(0.2) as waited:
        await finder.find(world.file_id, on_found)  # type: ignore[arg-type]
    assert waited.cancelled_caught and finder.traffic.finds == 0 and lonely.session.requests == []


async def test_find_asks_the_lan_neighbours_directly(world: World) -> None:
    a = await world.node("a", holds=True)
    b = await world.node("b")
    c = await world.node("c")  # a LAN neighbour too, but holds nothing
    b.finder.lan_peers["a"] = LanPeer("a", ("127.0.0.1",), a.peer.port)
    await b.dial(a)
    await b.dial(c)
    assert b.table.links[a.peer.peer_id].lan
    found, on_found = collector()
    await b.finder.find(world.file_id, on_found)  # type: ignore[arg-type]
    # A answers both the LAN question and the search (to which C forwards nothing new).
    assert sorted(found) == [(a.peer.peer_id, "lan"), (a.peer.peer_id, "search")]


async def test_a_lan_speaker_that_dialled_us_first_becomes_a_lan_neighbour(world: World) -> None:
    a = await world.node("a")
    b = await world.node("b")
    await a.dial(b)
    link = b.table.links[a.peer.peer_id]
    assert not link.lan
    await b.finder._dial_lan(LanPeer("a", ("127.0.0.1",), a.peer.port))
    assert link.lan and b.table.links.keys() == {a.peer.peer_id}
    # One we have no link from is dialled.
    c = await world.node("c")
    d = await world.node("d")
    seen = d.finder.lan_peers["c"] = LanPeer("c", ("127.0.0.1",), c.peer.port)  # as browsed
    await d.finder._dial_lan(seen)
    assert d.table.links.keys() == {c.peer.peer_id} and d.table.links[c.peer.peer_id].lan


async def test_holdings_are_announced_once_and_withdrawn_when_evicted(world: World) -> None:
    a = await world.node("a", holds=True)
    await a.finder.holdings_changed()
    await a.finder.holdings_changed()  # nothing new
    assert a.peer.session.requests == [api.Announce((world.file_id,))]
    assert a.finder.announced == {world.file_id}
    a.cache.remove(world.file_id)
    await a.finder.holdings_changed()
    assert a.peer.session.requests[1:] == [api.Withdraw((world.file_id,))]
    assert a.finder.announced == set()


async def test_a_failed_announcement_is_tried_again_next_time(world: World) -> None:
    a = await world.node("a", holds=True)
    a.peer.session.answer = lambda msg: trio.TooSlowError()
    await a.finder.holdings_changed()
    assert a.finder.announced == set()
    a.peer.session.answer = lambda msg: None
    await a.finder.holdings_changed()
    assert a.finder.announced == {world.file_id}


async def test_nothing_is_announced_without_a_login_or_when_switched_off(world: World) -> None:
    off = await world.node("off", holds=True, enabled=False)
    await off.finder.holdings_changed()
    a = await world.node("a", holds=True)
    a.peer.session.login = None
    await a.finder.holdings_changed()
    assert off.peer.session.requests == [] == a.peer.session.requests
