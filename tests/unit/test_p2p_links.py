"""The connection table on its own (cadenza.p2p.links): admission, one link per pair, the
neighbour limit, bans and reports, over real loopback connections."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from cadenza import net
from cadenza.p2p.links import LinkTable, PeerLink, Traffic
from cadenza.protocol import api
from cadenza.protocol.noise import KeyPair
from p2pparts import FakeSession, Peer, Signer, eventually, peer, trust


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


@pytest.fixture
def signer() -> Signer:
    return Signer()


async def manifest_echo(conn: net.PeerConnection, ch: net.Channel) -> None:
    """Answers GetManifest with the file id's bytes (so a test sees its request arrive)."""
    msg = await ch.receive()
    assert isinstance(msg, api.GetManifest)
    await ch.send(api.ManifestReply(msg.file_id.encode()), end=True)


async def test_a_dial_makes_one_link_on_each_side_that_carries_requests(
    nursery: trio.Nursery, signer: Signer
) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer, manifest_echo)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None and link.usable and link.outbound
    assert link.peer_id == b.peer_id and a.table.link(b.peer_id) is link
    await eventually(lambda: a.peer_id in b.table.links)
    theirs = b.table.links[a.peer_id]
    assert not theirs.outbound
    assert theirs.initiator_static == link.initiator_static == a.static.public
    assert b.table.link_of(theirs.conn) is theirs
    assert a.peer_id in b.table.neighbours and b.peer_id in a.table.neighbours
    reply = await link.conn.request(api.GetManifest("f" * 64))
    assert reply == api.ManifestReply(b"f" * 64)


async def test_nobody_is_admitted_before_the_service_keys_are_trusted(
    nursery: trio.Nursery, signer: Signer
) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer, trusted=False)
    assert not b.table.ready.is_set()
    assert await a.table.dial("127.0.0.1", b.port, b.static.public) is None
    assert not b.table.links and not a.table.links
    # A certificate from another service is no better once b trusts its own.
    assert b.session.login is not None
    trust(b.table, signer, b.session.login)
    assert b.table.ready.is_set()
    stranger = await peer(nursery, Signer())
    assert await stranger.table.dial("127.0.0.1", b.port, b.static.public) is None
    assert not b.table.links
    # The genuine peer gets in now (its earlier failure only backs off that endpoint).
    c = await peer(nursery, signer)
    assert await c.table.dial("127.0.0.1", b.port, b.static.public) is not None


async def test_a_dial_waits_until_the_table_is_ready(nursery: trio.Nursery, signer: Signer) -> None:
    a = await peer(nursery, signer, trusted=False)
    b = await peer(nursery, signer)
    got: list[PeerLink | None] = []

    async def dial() -> None:
        got.append(await a.table.dial("127.0.0.1", b.port, b.static.public))

    nursery.start_soon(dial)
    await trio.sleep(0.1)
    assert got == []
    assert a.session.login is not None
    trust(a.table, signer, a.session.login)
    await eventually(lambda: got)
    assert got[0] is not None and got[0].peer_id == b.peer_id


async def test_when_both_dial_at_once_the_lower_static_key_keeps_its_connection(
    nursery: trio.Nursery, signer: Signer
) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer)
    results: dict[str, PeerLink | None] = {}

    async def dial(name: str, src: Peer, dst: Peer) -> None:
        results[name] = await src.table.dial("127.0.0.1", dst.port, dst.static.public)

    async with trio.open_nursery() as both:
        both.start_soon(dial, "a", a, b)
        both.start_soon(dial, "b", b, a)
    winner = min(a.static.public, b.static.public)

    def settled() -> bool:
        la, lb = a.table.link(b.peer_id), b.table.link(a.peer_id)
        return (
            la is not None
            and lb is not None
            and la.initiator_static == winner == lb.initiator_static
        )

    await eventually(settled)
    assert a.table.links.keys() == {b.peer_id} and b.table.links.keys() == {a.peer_id}
    assert len(a.table.neighbours) == len(b.table.neighbours) == 1


async def test_a_full_table_refuses_a_newcomer_while_its_neighbours_are_new(
    nursery: trio.Nursery, signer: Signer
) -> None:
    b = await peer(nursery, signer, soft_max=1, hard_max=1)
    a = await peer(nursery, signer)
    c = await peer(nursery, signer)
    assert await a.table.dial("127.0.0.1", b.port, b.static.public) is not None
    await eventually(lambda: a.peer_id in b.table.links)
    await c.table.dial("127.0.0.1", b.port, b.static.public)
    # b turned c away (its one neighbour is within its grace period): c's link does not last.
    await eventually(lambda: b.peer_id not in c.table.links)
    assert b.table.links.keys() == {a.peer_id}
    assert b.table.neighbours.peers() == [a.peer_id]


async def test_a_closed_link_is_forgotten_and_its_bytes_counted(
    nursery: trio.Nursery, signer: Signer
) -> None:
    traffic = Traffic()
    a = await peer(nursery, signer, traffic=traffic)
    b = await peer(nursery, signer, manifest_echo)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None
    await link.conn.request(api.GetManifest("e" * 64))
    link.conn.abort("test")
    await eventually(lambda: b.peer_id not in a.table.links)
    assert b.peer_id not in a.table.neighbours
    assert a.table.link(b.peer_id) is None
    assert traffic.wire_in > 0 and traffic.wire_out > 0
    assert (traffic.wire_in, traffic.wire_out) == (link.conn.bytes_received, link.conn.bytes_sent)
    await eventually(lambda: a.peer_id not in b.table.links)


async def test_a_ban_drops_the_peer_and_refuses_it_from_then_on(
    nursery: trio.Nursery, signer: Signer
) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None
    await eventually(lambda: a.peer_id in b.table.links)
    b.table.ban(a.peer_id)
    assert b.table.banned(a.peer_id) and not b.table.banned(b.peer_id)
    assert a.peer_id not in b.table.links and a.peer_id not in b.table.neighbours
    await eventually(lambda: not link.usable)
    # Back with another key and a certificate for it: the peer id is what is banned.
    c_static = KeyPair.generate()
    session = FakeSession(signer.login(c_static, None, peer_id=a.peer_id))
    again = LinkTable(session=session, static=c_static, handler=manifest_echo)
    assert session.login is not None
    trust(again, signer, session.login)
    again.nursery = nursery
    assert await again.dial("127.0.0.1", b.port, b.static.public) is None
    assert a.peer_id not in b.table.links


async def test_a_ban_before_login_holds_after_it(nursery: trio.Nursery, signer: Signer) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer, trusted=False)
    b.table.ban(a.peer_id)
    assert b.session.login is not None
    trust(b.table, signer, b.session.login)  # a new verifier: the ban is carried over
    assert await a.table.dial("127.0.0.1", b.port, b.static.public) is None
    assert not b.table.links


async def test_a_report_drops_bans_and_tells_the_service(
    nursery: trio.Nursery, signer: Signer
) -> None:
    a = await peer(nursery, signer)
    b = await peer(nursery, signer)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None
    a.table.report(link, "bad chunk 3: " + "x" * 300, "f" * 64)
    assert a.table.banned(b.peer_id) and b.peer_id not in a.table.links
    await eventually(lambda: a.session.requests)
    (sent,) = a.session.requests
    assert isinstance(sent, api.ReportPeer)
    assert sent.peer_id == b.peer_id and sent.file_id == "f" * 64
    assert sent.reason.startswith("bad chunk 3") and len(sent.reason) == 200


async def test_a_failed_report_is_only_logged(nursery: trio.Nursery, signer: Signer) -> None:
    a = await peer(nursery, signer)
    a.session.answer = lambda msg: net.NetError("offline")
    b = await peer(nursery, signer)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None
    a.table.report(link, "bad chunk")
    await eventually(lambda: a.session.requests)
    await trio.sleep(0.05)  # the table's nursery is still up: nothing was raised into it
    assert a.table.banned(b.peer_id)


async def test_a_link_is_marked_lan_when_its_address_is_a_lan_speaker(
    nursery: trio.Nursery, signer: Signer
) -> None:
    asked: list[str] = []

    def is_lan(address: str) -> bool:
        asked.append(address)
        return True

    a = await peer(nursery, signer, is_lan=is_lan)
    b = await peer(nursery, signer)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)
    assert link is not None and link.lan and asked == ["127.0.0.1"]
    await eventually(lambda: a.peer_id in b.table.links)
    assert not b.table.links[a.peer_id].lan


async def test_our_own_certificate_is_not_admitted(nursery: trio.Nursery, signer: Signer) -> None:
    a = await peer(nursery, signer)
    assert await a.table.dial("127.0.0.1", a.port, a.static.public) is None
    assert not a.table.links


async def test_a_taken_port_falls_back_to_a_free_one(nursery: trio.Nursery) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        table = LinkTable(
            session=FakeSession(),
            static=KeyPair.generate(),
            handler=manifest_echo,
            host="127.0.0.1",
        )
        got = await table.listen(nursery, port)
        assert got == table.port and got not in (0, port)
        # Asked for any free port, a failure is not hidden.
        with pytest.raises(OSError):
            await LinkTable(
                session=FakeSession(),
                static=KeyPair.generate(),
                handler=manifest_echo,
                host="256.0.0.1",
            ).listen(nursery, 0)
