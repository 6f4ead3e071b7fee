"""The overlay: this speaker's connections to other speakers, serving them and finding them.

:class:`Overlay` is a trio service (``await nursery.start(overlay.run)``) that

* listens for peers on the configured port and dials them; every connection is Noise (XX, or
  IK when the peer's key is known from the tracker) with the membership certificate in the
  handshake, so a speaker without a valid one (missing, expired, wrong signer, key mismatch,
  banned) gets no connection; one connection per pair of speakers (when both dial at once, the
  one opened by the lower static key survives on both sides);
* keeps a bounded :class:`~cadenza.p2p.neighbours.NeighbourTable` and closes the neighbours it
  evicts;
* serves files it holds whole in the cache (manifest and chunks), most urgent requests first,
  at most ``max_uploads`` at once, within ``upload_rate``, and not while our own playback
  buffer is critically low;
* finds peers for a file by every mechanism at once (:meth:`Overlay.find`): the tracker
  (through the access point), a search flooded 2 hops through the overlay, and the LAN
  neighbours found with zeroconf (``_cadenza-peer._tcp.local.``);
* announces the files it holds to the tracker at each login and as the cache changes;
* drops, refuses and reports peers that misbehave, and those the service bans.

It never dials an address a peer merely claims: only endpoints from the tracker, from a
membership certificate the service signed, or from LAN discovery. Dials are rate-limited.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import blocking, net
from cadenza.cache.store import Cache, CacheError
from cadenza.net import mdns
from cadenza.protocol import api, budget
from cadenza.protocol.admission import Admitted, admit_peer, hello_payload
from cadenza.protocol.certificate import (
    CertificateError,
    CertificateVerifier,
    MembershipCertificate,
)
from cadenza.protocol.errors import RemoteProtocolError
from cadenza.protocol.frames import FRAME_HEADER
from cadenza.protocol.manifest import ManifestVerifier, chunk_count
from cadenza.protocol.messages import BulkKind, Message, encode
from cadenza.protocol.noise import KeyPair
from cadenza.protocol.peer import SearchHit, SearchQuery
from cadenza.session.client import Session

from .limits import DialLimiter, TokenBucket, UploadQueue
from .neighbours import DEFAULT_HARD_MAX, DEFAULT_SOFT_MAX, NeighbourTable, TableFull
from .search import SearchRouter

log = logging.getLogger("cadenza.p2p")

PEER_SERVICE_TYPE = "_cadenza-peer._tcp.local."
# A hop waits this long for the answers of the next hop: a LAN or metro round trip is well
# under it, and a search that takes longer is no help to a track that is starting.
HOP_TIMEOUT = 1.0
# The whole search (2 hops) is over after this.
SEARCH_TIMEOUT = 2.5
# Chunks read from the cache per batch when serving (128 KiB).
READ_BATCH = 8
# While our own playback buffer is this low, uploads pause (checked between chunks).
PAUSE_POLL = 0.2
# A request that waits longer than this for an upload slot is told "busy" (it goes elsewhere).
SLOT_WAIT = 3.0
# Dialing a peer: connect and handshake, each.
DIAL_TIMEOUT = 5.0
# Utility credited to a neighbour whose search answer named a valid holder: a few seconds of
# music, as if it had served them (the holder is credited with what it actually serves).
SEARCH_HIT_CREDIT = 256 * 1024
# Peers dialled at once for one file.
MAX_DIALS_PER_FIND = 6
# Neighbour links are pinged less often than the access point's: a speaker keeps up to 30 of
# them, mostly idle, and one that died unnoticed only costs a request that times out (the
# stream then takes the chunks elsewhere). Ten minutes keeps NAT mappings (RFC 5382: at least
# 2 h for TCP) and costs a Raspberry Pi 3 wake-ups a minute at 30 neighbours.
PEER_KEEPALIVE = 600.0
PEER_IDLE_TIMEOUT = 1800.0
# What all peer connections together may make a speaker hold (budget.py): 60 neighbours at
# their budget's full 256 KiB is 15 MiB; a Pi's unit is capped at 256 MiB.
POOL_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class OverlayConfig:
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 0
    soft_max: int = DEFAULT_SOFT_MAX
    hard_max: int = DEFAULT_HARD_MAX
    max_uploads: int = 4
    upload_rate: int = 0  # bytes/s, 0: unlimited
    lan: bool = True  # advertise and browse _cadenza-peer._tcp.local.


@dataclass(eq=False)
class PeerLink:
    """A live connection to an admitted peer."""

    conn: net.PeerConnection
    peer_id: bytes
    certificate: bytes
    endpoint: tuple[str, int] | None
    lan: bool
    outbound: bool
    initiator_static: bytes
    uploaded: int = 0
    downloaded: int = 0

    @property
    def usable(self) -> bool:
        return not self.conn.closed

    @property
    def name(self) -> str:
        return self.peer_id.hex()[:12]


@dataclass
class Traffic:
    """Bytes on the wire to and from peers, and the music payload in them."""

    wire_in: int = 0
    wire_out: int = 0
    uploaded: int = 0  # chunk payload we served
    upload_requests: int = 0
    refused_busy: int = 0
    # Search messages (queries and hits, sent and received, relayed included): encoded bytes
    # plus the frame header each travels in.
    search_in: int = 0
    search_out: int = 0
    finds: int = 0  # look-ups of a file's holders (tracker, search and LAN at once)


@dataclass
class _LanPeer:
    name: str
    addresses: tuple[str, ...]
    port: int


Found = Callable[[PeerLink, str], None]
"""``found(link, mechanism)``: a connected peer holds the file; mechanism is tracker|search|lan."""


class Overlay:
    def __init__(
        self,
        *,
        session: Session,
        cache: Cache,
        static: KeyPair,
        config: OverlayConfig = OverlayConfig(),
        buffer_low: Callable[[], bool] = lambda: False,
        agent: str = "cadenzad",
    ) -> None:
        self.session = session
        self.cache = cache
        self.static = static
        self.config = config
        self.buffer_low = buffer_low
        self.agent = agent
        self.port = 0
        self.links: dict[bytes, PeerLink] = {}
        self.neighbours = NeighbourTable(config.soft_max, config.hard_max)
        self.router = SearchRouter()
        self.uploads: UploadQueue[object] = UploadQueue(config.max_uploads)
        self.bucket = TokenBucket(float(config.upload_rate), max(256 * 1024, config.upload_rate))
        self.dials = DialLimiter()
        self.pool = budget.MemoryPool(POOL_LIMIT)
        self.traffic = Traffic()
        self.lan_peers: dict[str, _LanPeer] = {}
        self.lan_name = secrets.token_hex(6)  # a pseudonym on the LAN, new at each start
        self._verifier: CertificateVerifier | None = None
        self._clock_offset = 0.0  # service time minus ours
        self._banned: set[bytes] = set()
        self._slot_events: dict[object, trio.Event] = {}
        self._announced: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            serve = partial(
                net.serve_connections,
                self._handle,
                identity=self._identity,
                host=self.config.host,
                verify=self._verify,
                on_connection=self._on_inbound,
                keepalive=PEER_KEEPALIVE,
                idle_timeout=PEER_IDLE_TIMEOUT,
                gate=net.PEER_GATE,
                budget=budget.PEER,
                pool=self.pool,
            )
            try:
                listeners = await nursery.start(partial(serve, port=self.config.port))
            except OSError as exc:
                if self.config.port == 0:
                    raise
                # Another program holds the port: peers still find us (the tracker, our
                # certificate and mDNS carry the port we get), only a router mapping is lost.
                log.warning(
                    "p2p port %d is not available (%s): using a free port instead",
                    self.config.port,
                    exc.strerror or exc,
                )
                listeners = await nursery.start(partial(serve, port=0))
            self.port = listeners[0].socket.getsockname()[1]
            self.session.p2p_port = self.port
            log.info("accepting peers on port %d", self.port)
            nursery.start_soon(self._follow_session)
            if self.config.lan:
                nursery.start_soon(self._lan)
            task_status.started(self)

    # --- admission -------------------------------------------------------------------------

    def _now(self) -> float:
        return time.time() + self._clock_offset

    def _identity(self) -> net.Identity:
        login = self.session.login
        cert = login.certificate if login is not None else None
        return net.Identity(self.static, hello_payload(self.agent, certificate=cert))

    def _verify(self, remote_static: bytes, payload: bytes) -> Admitted:
        if self._verifier is None:
            raise RemoteProtocolError("not admitting peers yet (not logged in to the service)")
        if remote_static == self.static.public:
            raise RemoteProtocolError("that is us")
        admitted = admit_peer(payload, remote_static, self._verifier, now=self._now())
        assert admitted.certificate is not None
        if admitted.certificate.peer_id in self._banned:
            raise RemoteProtocolError("banned peer")
        return admitted

    async def _follow_session(self) -> None:
        """At each login: trust the service's keys, and announce what we hold."""
        peer_id = ""
        while True:
            status = self.session.status
            login = self.session.login
            if login is not None and status.peer_id and status.peer_id != peer_id:
                peer_id = status.peer_id
                keys = [Ed25519PublicKey.from_public_bytes(k) for k in login.signing_keys]
                verifier = CertificateVerifier(keys, login.overlay_id)
                self.cache.set_verifier(ManifestVerifier(keys))
                for banned in self._banned:
                    verifier.ban(banned)
                self._verifier = verifier
                self._clock_offset = login.service_time - time.time()
                self._announced = set()
                self._ready.set()
                await self.holdings_changed()
            await self.session.wait_changed()

    # --- connections -----------------------------------------------------------------------

    async def _on_inbound(
        self, conn: net.PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        link = self._link_for(conn, outbound=False)
        if link is None:
            conn.abort("refused")
            return
        conn.admit()
        task_status.started()  # the peer's requests are served from now on, as a neighbour's
        await conn.wait_closed()

    def _link_for(self, conn: net.PeerConnection, *, outbound: bool) -> PeerLink | None:
        admitted: Admitted = conn.peer_info
        cert = admitted.certificate
        assert cert is not None and admitted.hello.certificate is not None
        addr = conn.remote_address[0] if conn.remote_address else ""
        lan = any(addr in p.addresses for p in self.lan_peers.values())
        link = PeerLink(
            conn,
            cert.peer_id,
            admitted.hello.certificate,
            cert.endpoint,
            lan,
            outbound,
            self.static.public if outbound else conn.remote_static,
        )
        old = self.links.get(cert.peer_id)
        if old is not None and old.usable:
            # Both sides dialled: keep the connection opened by the lower static key.
            if old.initiator_static <= link.initiator_static:
                return None
            old.conn.abort("replaced by the other direction")
        try:
            evicted = self.neighbours.add(cert.peer_id, trio.current_time(), lan)
        except TableFull as exc:
            log.info("refused peer %s: %s", link.name, exc)
            return None
        for peer_id in evicted:
            gone = self.links.pop(peer_id, None)
            if gone is not None:
                log.info("evicted neighbour %s (least useful)", gone.name)
                gone.conn.abort("evicted")
        self.links[cert.peer_id] = link
        assert self._nursery is not None
        self._nursery.start_soon(self._forget_when_closed, link)
        log.info(
            "peer %s connected (%s%s)",
            link.name,
            "dialled" if outbound else "accepted",
            ", LAN" if lan else "",
            extra={"PEER_ID": link.peer_id.hex()},
        )
        return link

    async def _forget_when_closed(self, link: PeerLink) -> None:
        await link.conn.wait_closed()
        self.traffic.wire_in += link.conn.bytes_received
        self.traffic.wire_out += link.conn.bytes_sent
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            self.neighbours.remove(link.peer_id)

    async def dial(
        self, host: str, port: int, noise_static: bytes | None = None, *, lan: bool = False
    ) -> PeerLink | None:
        """Connect to a peer at an endpoint from the tracker, a certificate or the LAN."""
        await self._ready.wait()
        endpoint = (host, port)
        wait = self.dials.wait_time(endpoint, trio.current_time())
        if wait > 0:
            return None
        self.dials.start(endpoint, trio.current_time())
        assert self._nursery is not None
        try:
            link: PeerLink | None = await self._nursery.start(
                self._run_outbound, host, port, noise_static, lan
            )
        except (net.NetError, OSError) as exc:
            self.dials.failed(endpoint, trio.current_time())
            log.info("cannot connect to peer at %s:%d: %s", host, port, exc)
            return None
        self.dials.succeeded(endpoint, trio.current_time())
        return link

    async def _run_outbound(
        self,
        host: str,
        port: int,
        noise_static: bytes | None,
        lan: bool,
        task_status: trio.TaskStatus[PeerLink | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        try:
            async with net.single_errors(), trio.open_nursery() as nursery:
                conn = await net.connect(
                    nursery,
                    host,
                    port,
                    identity=self._identity(),
                    remote_static=noise_static,
                    verify=self._verify,
                    handler=self._handle,
                    connect_timeout=DIAL_TIMEOUT,
                    handshake_timeout=DIAL_TIMEOUT,
                    keepalive=PEER_KEEPALIVE,
                    idle_timeout=PEER_IDLE_TIMEOUT,
                    budget=budget.PEER,
                    pool=self.pool,
                )
                link = self._link_for(conn, outbound=True)
                if link is None:
                    existing = self.links.get(conn.peer_info.certificate.peer_id)
                    conn.abort("duplicate or refused")
                    task_status.started(existing)
                    started = True
                    return
                task_status.started(link)
                started = True
                await conn.wait_closed()
        except net.ConnectionLost:
            # Lost before the link was up (during or just after the handshake): the dial
            # failed, and dial() says so; lost later: the link's life is over, quietly.
            if not started:
                raise

    def link(self, peer_id: bytes) -> PeerLink | None:
        link = self.links.get(peer_id)
        return link if link is not None and link.usable else None

    # --- misbehaviour and bans -----------------------------------------------------------------

    def report(self, link: PeerLink, reason: str, file_id: str = "") -> None:
        """A peer misbehaved: drop it, never use it again, and tell the service."""
        self._ban_locally(link.peer_id)
        log.warning(
            "peer %s misbehaved (%s): disconnected and reported",
            link.name,
            reason,
            extra={"PEER_ID": link.peer_id.hex(), "FILE_ID": file_id},
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._send_report, link.peer_id, reason, file_id)

    async def _send_report(self, peer_id: bytes, reason: str, file_id: str) -> None:
        try:
            await self.session.request(api.ReportPeer(peer_id, reason[:200], file_id), timeout=30)
        except (net.NetError, trio.TooSlowError) as exc:
            log.warning("could not report peer %s: %s", peer_id.hex()[:12], exc)

    def _ban_locally(self, peer_id: bytes) -> None:
        self._banned.add(peer_id)
        if self._verifier is not None:
            with contextlib.suppress(Exception):
                self._verifier.ban(peer_id)
        link = self.links.pop(peer_id, None)
        self.neighbours.remove(peer_id)
        if link is not None:
            link.conn.abort("banned")

    async def on_push(self, msg: Message) -> None:
        """Pushes from the access point that concern the overlay."""
        if isinstance(msg, api.PeerBanned):
            log.warning("the service banned peer %s: %s", msg.peer_id.hex()[:12], msg.reason)
            self._ban_locally(msg.peer_id)

    def banned(self, peer_id: bytes) -> bool:
        return peer_id in self._banned

    # --- serving ---------------------------------------------------------------------------

    async def _handle(self, conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        link = self._link_of(conn)
        if link is None:
            raise net.RequestError("unauthenticated", "not a neighbour")
        if isinstance(msg, api.GetChunks):
            await self._serve_chunks(link, ch, msg)
        elif isinstance(msg, api.GetManifest):
            try:
                data = await blocking.run_sync(self.cache.manifest, msg.file_id)
            except CacheError:
                raise net.RequestError("not-found", f"not holding {msg.file_id}") from None
            await ch.send(api.ManifestReply(data), end=True)
        elif isinstance(msg, SearchQuery):
            await self._on_search(link, ch, msg)
        else:
            raise net.RequestError("unsupported", f"{type(msg).__name__} is not served by peers")

    def _link_of(self, conn: net.PeerConnection) -> PeerLink | None:
        info = conn.peer_info
        cert = getattr(info, "certificate", None)
        if cert is None:
            return None
        link = self.links.get(cert.peer_id)
        return link if link is not None and link.conn is conn else None

    async def _serve_chunks(self, link: PeerLink, ch: net.Channel, req: api.GetChunks) -> None:
        self.traffic.upload_requests += 1
        if self.uploads.max_active == 0:
            raise net.RequestError("busy", "this speaker does not upload")
        if not await blocking.run_sync(self.cache.has, req.file_id):
            raise net.RequestError("not-found", f"not holding {req.file_id}")
        size = await blocking.run_sync(self.cache.size, req.file_id)
        total = chunk_count(size)
        if not 0 < req.count <= api.MAX_CHUNKS_PER_REQUEST or not 0 <= req.first < total:
            raise net.RequestError("bad-request", f"chunks {req.first}+{req.count} of {total}")
        if self.buffer_low():
            self.traffic.refused_busy += 1
            raise net.RequestError("busy", "our own playback buffer is low")
        key = object()
        if not self.uploads.request(key, int(ch.priority)):
            event = self._slot_events[key] = trio.Event()
            with trio.move_on_after(SLOT_WAIT) as waited:
                await event.wait()
            self._slot_events.pop(key, None)
            if waited.cancelled_caught:
                self._release(key)
                self.traffic.refused_busy += 1
                raise net.RequestError("busy", "all upload slots are taken")
        self.neighbours.set_busy(link.peer_id, True)
        try:
            end = min(total, req.first + req.count)
            index = req.first
            while index < end:
                n = min(READ_BATCH, end - index)
                try:
                    batch = await blocking.run_sync(self.cache.read_chunks, req.file_id, index, n)
                except CacheError as exc:
                    raise net.RequestError("not-found", str(exc)) from None
                await self._while_buffer_low()  # per batch: 128 KiB, a fraction of a second
                for chunk in batch:
                    delay = self.bucket.reserve(len(chunk), trio.current_time())
                    if delay > 0:
                        await trio.sleep(delay)
                    await ch.send_bulk(BulkKind.CHUNK, index, chunk)
                    index += 1
                    link.uploaded += len(chunk)
                    self.traffic.uploaded += len(chunk)
                    self.neighbours.record_upload(link.peer_id, len(chunk), trio.current_time())
        finally:
            self.neighbours.set_busy(link.peer_id, False)
            self._release(key)

    async def _while_buffer_low(self) -> None:
        """Pause while our own playback buffer is critically low (playback comes first)."""
        if not self.buffer_low():
            return
        with trio.move_on_after(60):
            while self.buffer_low():  # noqa: ASYNC110 - the buffer level is polled, not evented
                await trio.sleep(PAUSE_POLL)

    def _release(self, key: object) -> None:
        self._wake_granted(self.uploads.release(key))

    def set_max_uploads(self, n: int) -> None:
        """Change the number of upload slots (a reload); waiting requests may start now."""
        self._wake_granted(self.uploads.set_max(n))

    def _wake_granted(self, granted: list[object]) -> None:
        for key in granted:
            event = self._slot_events.get(key)
            if event is not None:
                event.set()

    # --- search ----------------------------------------------------------------------------

    def _ranked_neighbours(self, exclude: bytes | None = None) -> list[bytes]:
        now = trio.current_time()
        ids = [p for p, link in self.links.items() if link.usable and p != exclude]
        return sorted(ids, key=lambda p: -self._score(p, now))

    def _score(self, peer_id: bytes, now: float) -> float:
        try:
            return self.neighbours.score(peer_id, now)
        except KeyError:
            return 0.0

    async def _holds(self, file_id: str) -> bool:
        try:
            return await blocking.run_sync(self.cache.has, file_id)
        except (CacheError, ValueError):
            return False

    async def _on_search(self, link: PeerLink, ch: net.Channel, q: SearchQuery) -> None:
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
                    target = self.link(peer_id)
                    if target is not None:
                        nursery.start_soon(self._relay, target, forward, ch)

    async def _relay(self, target: PeerLink, q: SearchQuery, back: net.Channel) -> None:
        with contextlib.suppress(net.NetError):
            async for hit in self._ask(target, q):
                self.router.record_answer(q.query_id, target.peer_id, trio.current_time())
                self.traffic.search_out += _wire_size(hit)
                await back.send(hit)

    async def _ask(self, target: PeerLink, q: SearchQuery) -> Any:
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
        await self._ready.wait()
        self.traffic.finds += 1
        with trio.move_on_after(SEARCH_TIMEOUT + DIAL_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._find_tracker, file_id, found)
                nursery.start_soon(self._find_search, file_id, found)
                nursery.start_soon(self._find_lan, file_id, found)

    async def _find_tracker(self, file_id: str, found: Found) -> None:
        try:
            reply = await self.session.request(api.FindPeers(file_id), timeout=SEARCH_TIMEOUT)
        except (net.NetError, trio.TooSlowError) as exc:
            log.debug("tracker: %s", exc)
            return
        if not isinstance(reply, api.PeersReply):
            return
        infos = [p for p in reply.peers if p.peer_id not in self._banned][:MAX_DIALS_PER_FIND]
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
        link = self.link(peer_id)
        if link is None:
            link = await self.dial(host, port, noise_static)
        if link is not None and link.peer_id == peer_id:
            found(link, mechanism)

    async def _find_search(self, file_id: str, found: Found) -> None:
        query = self.router.new_query(file_id, trio.current_time(), self._ranked_neighbours())
        q = SearchQuery(query.id, file_id, query.ttl)
        async with trio.open_nursery() as nursery:
            for peer_id in query.send_to:
                target = self.link(peer_id)
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
                            self.neighbours.record_search_hit(
                                target.peer_id, SEARCH_HIT_CREDIT, trio.current_time()
                            )
                            nursery.start_soon(self._connect_hit, cert, found)
            except* net.NetError as group:
                log.debug("search via %s: %s", target.name, group.exceptions[0])

    def _check_hit(self, via: PeerLink, hit: SearchHit) -> MembershipCertificate | None:
        """The holder's certificate if it is valid and names an endpoint we may dial."""
        if self._verifier is None:
            return None
        try:
            cert = self._verifier.verify(hit.certificate, noise_static=None, now=self._now())
        except CertificateError as exc:
            log.warning(
                "ignored a search answer relayed by %s: %s (nothing dialled)", via.name, exc
            )
            return None
        if cert.peer_id == self._own_peer_id() or cert.peer_id in self._banned:
            return None
        return cert

    async def _connect_hit(self, cert: MembershipCertificate, found: Found) -> None:
        link = self.link(cert.peer_id)
        if link is None and cert.endpoint is not None:
            # The endpoint the service signed, and the key it bound: nothing the peer claims.
            link = await self.dial(cert.endpoint[0], cert.endpoint[1], cert.noise_static)
        if link is not None and link.peer_id == cert.peer_id:
            found(link, "search")

    async def _find_lan(self, file_id: str, found: Found) -> None:
        lan = [link for link in self.links.values() if link.lan and link.usable]
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

    def _own_peer_id(self) -> bytes:
        login = self.session.login
        return login.peer_id if login is not None else b""

    # --- the tracker -------------------------------------------------------------------------

    async def holdings_changed(self) -> None:
        """Announce files newly held whole, withdraw those evicted."""
        if self.session.login is None or not self.config.enabled:
            return
        try:
            held = set(await blocking.run_sync(self.cache.file_ids))
        except CacheError:
            return
        new = sorted(held - self._announced)
        gone = sorted(self._announced - held)
        try:
            for batch in _batches(new, api.MAX_ANNOUNCE):
                await self.session.request(api.Announce(tuple(batch)), timeout=15)
                self._announced.update(batch)
            for batch in _batches(gone, api.MAX_ANNOUNCE):
                await self.session.request(api.Withdraw(tuple(batch)), timeout=15)
                self._announced.difference_update(batch)
        except (net.NetError, trio.TooSlowError) as exc:
            log.info("announcing to the tracker failed: %s", exc)
            return
        if new or gone:
            log.info("tracker: announced %d files, withdrew %d", len(new), len(gone))

    # --- LAN discovery -------------------------------------------------------------------------

    async def _lan(self) -> None:
        await self._ready.wait()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(mdns.advertise, PEER_SERVICE_TYPE, self.lan_name, self.port, {"v": "1"})
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
                        peer = _LanPeer(info.name, info.addresses, info.port)
                        self.lan_peers[info.name] = peer
                        log.info("LAN peer %s at %s:%d", info.name, info.addresses[0], info.port)
                        nursery.start_soon(self._dial_lan, peer)

    async def _dial_lan(self, peer: _LanPeer) -> None:
        connected = False
        for link in self.links.values():
            address = link.conn.remote_address[0] if link.conn.remote_address else None
            if link.usable and address in peer.addresses:
                # It dialled us before we saw it on the LAN: it is a LAN neighbour.
                link.lan = connected = True
                self.neighbours.add(link.peer_id, trio.current_time(), True)
        if connected:
            return
        if len(self.links) >= self.neighbours.soft_max:
            return
        await self.dial(peer.addresses[0], peer.port, lan=True)

    # --- figures -------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        live_in = sum(link.conn.bytes_received for link in self.links.values())
        live_out = sum(link.conn.bytes_sent for link in self.links.values())
        return {
            "port": self.port,
            "neighbours": [
                {
                    "peer": link.name,
                    "lan": link.lan,
                    "outbound": link.outbound,
                    "uploaded": link.uploaded,
                    "downloaded": link.downloaded,
                    "rtt_ms": round(link.conn.rtt * 1000, 1) if link.conn.rtt else None,
                }
                for link in self.links.values()
                if link.usable
            ],
            "lan_peers": len(self.lan_peers),
            "wire_in": self.traffic.wire_in + live_in,
            "wire_out": self.traffic.wire_out + live_out,
            "uploaded": self.traffic.uploaded,
            "upload_requests": self.traffic.upload_requests,
            "refused_busy": self.traffic.refused_busy,
            "finds": self.traffic.finds,
            "active_uploads": self.uploads.active,
            "banned": len(self._banned),
        }


def _wire_size(msg: Message) -> int:
    """A message's bytes on the wire, Noise's tag aside: encoding and frame header."""
    return len(encode(msg)) + FRAME_HEADER.size


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
