"""Finding peers: who holds a file, and telling others what we hold.

:class:`Finder` looks for the holders of a file by every mechanism at once (:meth:`Finder.find`):
the tracker (through the access point), a search flooded 2 hops through the overlay, and the
LAN neighbours found with zeroconf (``_cadenza-peer._tcp.local.``); it answers and relays the
searches of its neighbours, and announces the files it holds to the tracker.

It never dials an address a peer merely claims: only endpoints from the tracker, from a
membership certificate the service signed, or from LAN discovery; the dialling itself (and its
rate limit) is the :class:`~cadenza.p2p.links.LinkTable`'s.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial

import trio

from cadenza import blocking, net
from cadenza.cache.store import Cache, CacheError
from cadenza.net import mdns
from cadenza.protocol import api
from cadenza.protocol.certificate import CertificateError, MembershipCertificate
from cadenza.protocol.frames import FRAME_HEADER
from cadenza.protocol.messages import Message, encode
from cadenza.protocol.peer import SearchHit, SearchQuery
from cadenza.session.client import Session

from .links import DIAL_TIMEOUT, LinkTable, PeerLink
from .search import SearchRouter

log = logging.getLogger("cadenza.p2p")

PEER_SERVICE_TYPE = "_cadenza-peer._tcp.local."
# A hop waits this long for the answers of the next hop: a LAN or metro round trip is well
# under it, and a search that takes longer is no help to a track that is starting.
HOP_TIMEOUT = 1.0
# The whole search (2 hops) is over after this.
SEARCH_TIMEOUT = 2.5
# Utility credited to a neighbour whose search answer named a valid holder: a few seconds of
# music, as if it had served them (the holder is credited with what it actually serves).
SEARCH_HIT_CREDIT = 256 * 1024
# Peers dialled at once for one file.
MAX_DIALS_PER_FIND = 6


@dataclass
class LanPeer:
    name: str
    addresses: tuple[str, ...]
    port: int


Found = Callable[[PeerLink, str], None]
"""``found(link, mechanism)``: a connected peer holds the file; mechanism is tracker|search|lan."""


class Finder:
    """Looks for holders and tells the tracker what we hold; connects only through the
    :class:`~cadenza.p2p.links.LinkTable`, so its rules (and rate limit) apply."""

    def __init__(
        self,
        *,
        session: Session,
        cache: Cache,
        table: LinkTable,
        enabled: bool = True,
    ) -> None:
        self.session = session
        self.cache = cache
        # Holders are dialled, and searches travel, through the table's links.
        self.table = table
        self.traffic = table.traffic
        self.enabled = enabled  # an overlay switched off announces nothing
        self.router = SearchRouter()
        self.lan_peers: dict[str, LanPeer] = {}
        self.lan_name = secrets.token_hex(6)  # a pseudonym on the LAN, new at each start
        self.announced: set[str] = set()

    def is_lan(self, address: str) -> bool:
        """Whether ``address`` is a speaker's found on the LAN."""
        return any(address in p.addresses for p in self.lan_peers.values())

    def own_peer_id(self) -> bytes:
        login = self.session.login
        return login.peer_id if login is not None else b""

    # --- answering and relaying searches ---------------------------------------------------

    def _ranked_neighbours(self, exclude: bytes | None = None) -> list[bytes]:
        now = trio.current_time()
        ids = [p for p, link in self.table.links.items() if link.usable and p != exclude]
        return sorted(ids, key=lambda p: -self._score(p, now))

    def _score(self, peer_id: bytes, now: float) -> float:
        try:
            return self.table.neighbours.score(peer_id, now)
        except KeyError:
            return 0.0

    async def _holds(self, file_id: str) -> bool:
        try:
            return await blocking.run_sync(self.cache.has, file_id)
        except (CacheError, ValueError):
            return False

    async def on_search(self, link: PeerLink, ch: net.Channel, q: SearchQuery) -> None:
        """A neighbour's search: answer it if we hold the file, relay it if it may go on."""
        self.traffic.search_in += _wire_size(q)
        now = trio.current_time()
        decision = self.router.on_query(
            q.query_id, q.file_id, q.ttl, link.peer_id, now, self._ranked_neighbours(link.peer_id)
        )
        if decision.drop_reason is not None:
            return
        login = self.session.login
        if decision.answer_locally and login is not None and await self._holds(q.file_id):
            hit = SearchHit(q.query_id, q.file_id, login.certificate)
            self.traffic.search_out += _wire_size(hit)
            await ch.send(hit)
        if not decision.forward_to:
            return
        forward = SearchQuery(q.query_id, q.file_id, decision.forward_ttl)
        with trio.move_on_after(HOP_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for peer_id in decision.forward_to:
                    target = self.table.link(peer_id)
                    if target is not None:
                        nursery.start_soon(self._relay, target, forward, ch)

    async def _relay(self, target: PeerLink, q: SearchQuery, back: net.Channel) -> None:
        with contextlib.suppress(net.NetError):
            async for hit in self._ask(target, q):
                self.router.record_answer(q.query_id, target.peer_id, trio.current_time())
                self.traffic.search_out += _wire_size(hit)
                await back.send(hit)

    async def _ask(self, target: PeerLink, q: SearchQuery) -> AsyncGenerator[SearchHit, None]:
        async with target.conn.open_channel() as ch:
            self.traffic.search_out += _wire_size(q)
            await ch.send(q, end=True)
            async for item in ch:
                if isinstance(item, SearchHit) and item.query_id == q.query_id:
                    self.traffic.search_in += _wire_size(item)
                    yield item

    # --- finding peers for a file ------------------------------------------------------------

    async def find(self, file_id: str, found: Found) -> None:
        """Look for peers holding ``file_id`` by every mechanism at once; ``found`` is called
        for each connected holder (possibly more than once, once per mechanism)."""
        await self.table.ready.wait()
        self.traffic.finds += 1
        with trio.move_on_after(SEARCH_TIMEOUT + DIAL_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._find_tracker, file_id, found)
                nursery.start_soon(self.find_search, file_id, found)
                nursery.start_soon(self._find_lan, file_id, found)

    async def _find_tracker(self, file_id: str, found: Found) -> None:
        try:
            reply = await self.session.request(api.FindPeers(file_id), timeout=SEARCH_TIMEOUT)
        except (net.NetError, trio.TooSlowError) as exc:
            log.debug("tracker: %s", exc)
            return
        if not isinstance(reply, api.PeersReply):
            return
        infos = [p for p in reply.peers if not self.table.banned(p.peer_id)][:MAX_DIALS_PER_FIND]
        async with trio.open_nursery() as nursery:
            for info in infos:
                nursery.start_soon(
                    self._connect_found,
                    info.peer_id,
                    info.host,
                    info.port,
                    info.noise_static,
                    "tracker",
                    found,
                )

    async def _connect_found(
        self,
        peer_id: bytes,
        host: str,
        port: int,
        noise_static: bytes | None,
        mechanism: str,
        found: Found,
    ) -> None:
        link = self.table.link(peer_id)
        if link is None:
            link = await self.table.dial(host, port, noise_static)
        if link is not None and link.peer_id == peer_id:
            found(link, mechanism)

    async def find_search(self, file_id: str, found: Found) -> None:
        """The 2-hop search alone (:meth:`find` runs it beside the others)."""
        query = self.router.new_query(file_id, trio.current_time(), self._ranked_neighbours())
        q = SearchQuery(query.id, file_id, query.ttl)
        async with trio.open_nursery() as nursery:
            for peer_id in query.send_to:
                target = self.table.link(peer_id)
                if target is not None:
                    nursery.start_soon(self._search_one, target, q, found)

    async def _search_one(self, target: PeerLink, q: SearchQuery, found: Found) -> None:
        # The neighbour's link may break mid-search: raised inside the nursery, that comes
        # as an ExceptionGroup, which contextlib.suppress does not look into on Python 3.11.
        with trio.move_on_after(SEARCH_TIMEOUT):
            try:
                async with aclosing(self._ask(target, q)) as hits, trio.open_nursery() as nursery:
                    async for hit in hits:
                        cert = self._check_hit(target, hit)
                        if cert is not None:
                            # The neighbour that answered (or relayed) was useful for searching.
                            self.table.neighbours.record_search_hit(
                                target.peer_id, SEARCH_HIT_CREDIT, trio.current_time()
                            )
                            nursery.start_soon(self._connect_hit, cert, found)
            except* net.NetError as group:
                log.debug("search via %s: %s", target.name, group.exceptions[0])

    def _check_hit(self, via: PeerLink, hit: SearchHit) -> MembershipCertificate | None:
        """The holder's certificate if it is valid and names an endpoint we may dial."""
        verifier = self.table.verifier
        if verifier is None:
            return None
        try:
            cert = verifier.verify(hit.certificate, noise_static=None, now=self.table.now())
        except CertificateError as exc:
            log.warning(
                "ignored a search answer relayed by %s: %s (nothing dialled)", via.name, exc
            )
            return None
        if cert.peer_id == self.own_peer_id() or self.table.banned(cert.peer_id):
            return None
        return cert

    async def _connect_hit(self, cert: MembershipCertificate, found: Found) -> None:
        link = self.table.link(cert.peer_id)
        if link is None and cert.endpoint is not None:
            # The endpoint the service signed, and the key it bound: nothing the peer claims.
            link = await self.table.dial(cert.endpoint[0], cert.endpoint[1], cert.noise_static)
        if link is not None and link.peer_id == cert.peer_id:
            found(link, "search")

    async def _find_lan(self, file_id: str, found: Found) -> None:
        lan = [link for link in self.table.links.values() if link.lan and link.usable]
        if not lan:
            return
        query = self.router.new_query(file_id, trio.current_time(), ())
        q = SearchQuery(query.id, file_id, 1)  # a direct question: not forwarded

        async def ask(link: PeerLink) -> None:
            with trio.move_on_after(HOP_TIMEOUT), contextlib.suppress(net.NetError):
                async with aclosing(self._ask(link, q)) as hits:
                    async for hit in hits:
                        cert = self._check_hit(link, hit)
                        if cert is not None and cert.peer_id == link.peer_id:
                            found(link, "lan")

        async with trio.open_nursery() as nursery:
            for link in lan:
                nursery.start_soon(ask, link)

    # --- the tracker -------------------------------------------------------------------------

    async def holdings_changed(self) -> None:
        """Announce files newly held whole, withdraw those evicted."""
        if self.session.login is None or not self.enabled:
            return
        try:
            held = set(await blocking.run_sync(self.cache.file_ids))
        except CacheError:
            return
        new = sorted(held - self.announced)
        gone = sorted(self.announced - held)
        try:
            for batch in _batches(new, api.MAX_ANNOUNCE):
                await self.session.request(api.Announce(tuple(batch)), timeout=15)
                self.announced.update(batch)
            for batch in _batches(gone, api.MAX_ANNOUNCE):
                await self.session.request(api.Withdraw(tuple(batch)), timeout=15)
                self.announced.difference_update(batch)
        except (net.NetError, trio.TooSlowError) as exc:
            log.info("announcing to the tracker failed: %s", exc)
            return
        if new or gone:
            log.info("tracker: announced %d files, withdrew %d", len(new), len(gone))

    # --- LAN discovery -------------------------------------------------------------------------

    async def run_lan(self) -> None:
        """Advertise us on the LAN, and dial the speakers that appear there."""
        await self.table.ready.wait()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    mdns.advertise, PEER_SERVICE_TYPE, self.lan_name, self.table.port, {"v": "1"}
                )
            )
            async with mdns.browse(PEER_SERVICE_TYPE) as browser:
                async with aclosing(browser.events()) as events:
                    async for event in events:
                        if isinstance(event, mdns.Removed):
                            self.lan_peers.pop(event.name, None)
                            continue
                        info = event.info
                        if info.name == self.lan_name or not info.addresses:
                            continue
                        peer = LanPeer(info.name, info.addresses, info.port)
                        self.lan_peers[info.name] = peer
                        log.info("LAN peer %s at %s:%d", info.name, info.addresses[0], info.port)
                        nursery.start_soon(self._dial_lan, peer)

    async def _dial_lan(self, peer: LanPeer) -> None:
        connected = False
        for link in self.table.links.values():
            address = link.conn.remote_address[0] if link.conn.remote_address else None
            if link.usable and address in peer.addresses:
                # It dialled us before we saw it on the LAN: it is a LAN neighbour.
                link.lan = connected = True
                self.table.neighbours.add(link.peer_id, trio.current_time(), True)
        if connected:
            return
        if len(self.table.links) >= self.table.neighbours.soft_max:
            return
        await self.table.dial(peer.addresses[0], peer.port, lan=True)


def _wire_size(msg: Message) -> int:
    """A message's bytes on the wire, Noise's tag aside: encoding and frame header."""
    return len(encode(msg)) + FRAME_HEADER.size


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
