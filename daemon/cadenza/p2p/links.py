"""The overlay's connection table: which peers we are connected to, and which may connect.

:class:`LinkTable` owns every decision about a connection to another speaker:

* who is admitted: every connection is Noise (XX, or IK when the peer's key is known from the
  tracker) with the membership certificate in the handshake, so a speaker without a valid one
  (missing, expired, wrong signer, key mismatch, banned) gets no connection;
* one connection per pair of speakers: when both dial at once, the one opened by the lower
  static key survives on both sides;
* how many: a bounded :class:`~cadenza.p2p.neighbours.NeighbourTable`, whose evicted
  neighbours are disconnected;
* dialling, rate-limited per endpoint, and idle links closed by the connection's own timers;
* dropping and banning peers, ours or the service's.

What a connected peer asks for is not its business: it hands each request to ``handler``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import net
from cadenza.protocol import api, budget
from cadenza.protocol.admission import Admitted, admit_peer, hello_payload
from cadenza.protocol.certificate import CertificateVerifier
from cadenza.protocol.errors import RemoteProtocolError
from cadenza.protocol.noise import KeyPair
from cadenza.session.client import Session

from .limits import DialLimiter
from .neighbours import DEFAULT_HARD_MAX, DEFAULT_SOFT_MAX, NeighbourTable, TableFull

log = logging.getLogger("cadenza.p2p")

# Dialing a peer: connect and handshake, each.
DIAL_TIMEOUT = 5.0
# Neighbour links are pinged less often than the access point's: a speaker keeps up to 30 of
# them, mostly idle, and one that died unnoticed only costs a request that times out (the
# stream then takes the chunks elsewhere). Ten minutes keeps NAT mappings (RFC 5382: at least
# 2 h for TCP) and costs a Raspberry Pi 3 wake-ups a minute at 30 neighbours.
PEER_KEEPALIVE = 600.0
PEER_IDLE_TIMEOUT = 1800.0
# What all peer connections together may make a speaker hold (budget.py): 60 neighbours at
# their budget's full 256 KiB is 15 MiB; a Pi's unit is capped at 256 MiB.
POOL_LIMIT = 16 * 1024 * 1024


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
    """Bytes on the wire to and from peers, and the music payload in them.

    One for the whole overlay: each part counts what it sends and receives into it."""

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


Handler = Callable[[net.PeerConnection, net.Channel], Awaitable[None]]
"""``handler(conn, channel)``: answers one request a peer opened a channel for."""


class LinkTable:
    """The connections to other speakers; the only code that opens, admits or drops one."""

    def __init__(
        self,
        *,
        session: Session,
        static: KeyPair,
        handler: Handler,
        traffic: Traffic | None = None,
        soft_max: int = DEFAULT_SOFT_MAX,
        hard_max: int = DEFAULT_HARD_MAX,
        host: str = "0.0.0.0",
        agent: str = "cadenzad",
        is_lan: Callable[[str], bool] = lambda address: False,
    ) -> None:
        self.session = session
        self.static = static
        self.handler = handler
        self.traffic = traffic if traffic is not None else Traffic()
        self.host = host
        self.agent = agent
        # Whether an address is a speaker found on the LAN (LAN links rank higher).
        self.is_lan = is_lan
        self.port = 0
        self.links: dict[bytes, PeerLink] = {}
        self.neighbours = NeighbourTable(soft_max, hard_max)
        self.dials = DialLimiter()
        self.pool = budget.MemoryPool(POOL_LIMIT)
        self.verifier: CertificateVerifier | None = None
        self.banned_ids: set[bytes] = set()
        # Set once the service's keys are known (trust()): until then nobody is admitted, and
        # dials wait.
        self.ready = trio.Event()
        self.nursery: trio.Nursery | None = None
        self._clock_offset = 0.0  # service time minus ours

    # --- listening -------------------------------------------------------------------------

    async def listen(self, nursery: trio.Nursery, port: int) -> int:
        """Accept peers on ``port`` (any free one if it is taken) in ``nursery``, which then
        also holds every link's task; the port we got."""
        self.nursery = nursery
        serve = partial(
            net.serve_connections,
            self.handler,
            identity=self.identity,
            host=self.host,
            verify=self.verify,
            on_connection=self._on_inbound,
            keepalive=PEER_KEEPALIVE,
            idle_timeout=PEER_IDLE_TIMEOUT,
            gate=net.PEER_GATE,
            budget=budget.PEER,
            pool=self.pool,
        )
        try:
            listeners = await nursery.start(partial(serve, port=port))
        except OSError as exc:
            if port == 0:
                raise
            # Another program holds the port: peers still find us (the tracker, our
            # certificate and mDNS carry the port we get), only a router mapping is lost.
            log.warning(
                "p2p port %d is not available (%s): using a free port instead",
                port,
                exc.strerror or exc,
            )
            listeners = await nursery.start(partial(serve, port=0))
        self.port = listeners[0].socket.getsockname()[1]
        return self.port

    # --- admission -------------------------------------------------------------------------

    def now(self) -> float:
        """The service's wall clock, which certificates are dated by."""
        return time.time() + self._clock_offset

    def trust(self, keys: list[Ed25519PublicKey], overlay_id: str, service_time: float) -> None:
        """Admit peers with certificates signed by ``keys`` (the service's, at each login)."""
        verifier = CertificateVerifier(keys, overlay_id)
        for banned in self.banned_ids:
            verifier.ban(banned)
        self.verifier = verifier
        self._clock_offset = service_time - time.time()
        self.ready.set()

    def identity(self) -> net.Identity:
        login = self.session.login
        cert = login.certificate if login is not None else None
        return net.Identity(self.static, hello_payload(self.agent, certificate=cert))

    def verify(self, remote_static: bytes, payload: bytes) -> Admitted:
        if self.verifier is None:
            raise RemoteProtocolError("not admitting peers yet (not logged in to the service)")
        if remote_static == self.static.public:
            raise RemoteProtocolError("that is us")
        admitted = admit_peer(payload, remote_static, self.verifier, now=self.now())
        assert admitted.certificate is not None
        if admitted.certificate.peer_id in self.banned_ids:
            raise RemoteProtocolError("banned peer")
        return admitted

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
        lan = self.is_lan(addr)
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
        assert self.nursery is not None
        self.nursery.start_soon(self._forget_when_closed, link)
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
        await self.ready.wait()
        endpoint = (host, port)
        wait = self.dials.wait_time(endpoint, trio.current_time())
        if wait > 0:
            return None
        self.dials.start(endpoint, trio.current_time())
        assert self.nursery is not None
        try:
            link: PeerLink | None = await self.nursery.start(
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
                    identity=self.identity(),
                    remote_static=noise_static,
                    verify=self.verify,
                    handler=self.handler,
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

    def link_of(self, conn: net.PeerConnection) -> PeerLink | None:
        """The link ``conn`` is, if it is still in the table: a request on a connection that
        was replaced or evicted is not a neighbour's."""
        info = conn.peer_info
        cert = getattr(info, "certificate", None)
        if cert is None:
            return None
        link = self.links.get(cert.peer_id)
        return link if link is not None and link.conn is conn else None

    # --- misbehaviour and bans -----------------------------------------------------------------

    def report(self, link: PeerLink, reason: str, file_id: str = "") -> None:
        """A peer misbehaved: drop it, never use it again, and tell the service."""
        self.ban(link.peer_id)
        log.warning(
            "peer %s misbehaved (%s): disconnected and reported",
            link.name,
            reason,
            extra={"PEER_ID": link.peer_id.hex(), "FILE_ID": file_id},
        )
        assert self.nursery is not None
        self.nursery.start_soon(self._send_report, link.peer_id, reason, file_id)

    async def _send_report(self, peer_id: bytes, reason: str, file_id: str) -> None:
        try:
            await self.session.request(api.ReportPeer(peer_id, reason[:200], file_id), timeout=30)
        except (net.NetError, trio.TooSlowError) as exc:
            log.warning("could not report peer %s: %s", peer_id.hex()[:12], exc)

    def ban(self, peer_id: bytes) -> None:
        """Drop the peer and refuse it from now on (here only: the service is not told)."""
        self.banned_ids.add(peer_id)
        if self.verifier is not None:
            with contextlib.suppress(Exception):
                self.verifier.ban(peer_id)
        link = self.links.pop(peer_id, None)
        self.neighbours.remove(peer_id)
        if link is not None:
            link.conn.abort("banned")

    def banned(self, peer_id: bytes) -> bool:
        return peer_id in self.banned_ids
