"""The overlay: this speaker's connections to other speakers, serving them and finding them.

:class:`Overlay` is a trio service (``await nursery.start(overlay.run)``) made of three parts,
each the one owner of its decisions:

* :class:`~cadenza.p2p.links.LinkTable`, the connections: it listens for peers on the
  configured port and dials them; every connection is Noise with the membership certificate in
  the handshake, so a speaker without a valid one gets no connection; one connection per pair
  of speakers; a bounded :class:`~cadenza.p2p.neighbours.NeighbourTable` whose evicted
  neighbours are closed; it drops, refuses and reports peers that misbehave, and those the
  service bans;
* :class:`~cadenza.p2p.serving.Server`, serving: files held whole in the cache (manifest and
  chunks), most urgent requests first, at most ``max_uploads`` at once, within
  ``upload_rate``, and not while our own playback buffer is critically low;
* :class:`~cadenza.p2p.finding.Finder`, finding: peers for a file by every mechanism at once
  (:meth:`Overlay.find`): the tracker (through the access point), a search flooded 2 hops
  through the overlay, and the LAN neighbours found with zeroconf
  (``_cadenza-peer._tcp.local.``); it announces the files we hold to the tracker at each login
  and as the cache changes.

The overlay itself only wires them together: it starts them, trusts the service's keys at
each login, hands each peer's request to the part that answers it, and adds up their figures.

It never dials an address a peer merely claims: only endpoints from the tracker, from a
membership certificate the service signed, or from LAN discovery. Dials are rate-limited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import net
from cadenza.cache.store import Cache
from cadenza.protocol import api, budget
from cadenza.protocol.manifest import ManifestVerifier
from cadenza.protocol.messages import Message
from cadenza.protocol.noise import KeyPair
from cadenza.protocol.peer import SearchQuery
from cadenza.session.client import Session

from .finding import Finder, Found, LanPeer
from .limits import DialLimiter, TokenBucket, UploadQueue
from .links import LinkTable, PeerLink, Traffic
from .neighbours import DEFAULT_HARD_MAX, DEFAULT_SOFT_MAX, NeighbourTable
from .search import SearchRouter
from .serving import Server

__all__ = ["Found", "Overlay", "OverlayConfig", "PeerLink", "Traffic"]

log = logging.getLogger("cadenza.p2p")


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


class Overlay:
    """The peer service as the daemon, the stream engine and the simulator see it: its
    parts are :attr:`table`, :attr:`server` and :attr:`finder`; its own code only wires them."""

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
        self.agent = agent
        self.traffic = Traffic()
        self.table = LinkTable(
            session=session,
            static=static,
            handler=self._handle,
            traffic=self.traffic,
            soft_max=config.soft_max,
            hard_max=config.hard_max,
            host=config.host,
            agent=agent,
            is_lan=self._is_lan,
        )
        self.server = Server(
            cache=cache,
            neighbours=self.table.neighbours,
            traffic=self.traffic,
            max_uploads=config.max_uploads,
            upload_rate=config.upload_rate,
            buffer_low=buffer_low,
        )
        self.finder = Finder(session=session, cache=cache, table=self.table, enabled=config.enabled)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            port = await self.table.listen(nursery, self.config.port)
            self.session.p2p_port = port
            log.info("accepting peers on port %d", port)
            nursery.start_soon(self._follow_session)
            if self.config.lan:
                nursery.start_soon(self.finder.run_lan)
            task_status.started(self)

    async def _follow_session(self) -> None:
        """At each login: trust the service's keys, and announce what we hold."""
        peer_id = ""
        while True:
            status = self.session.status
            login = self.session.login
            if login is not None and status.peer_id and status.peer_id != peer_id:
                peer_id = status.peer_id
                keys = [Ed25519PublicKey.from_public_bytes(k) for k in login.signing_keys]
                self.cache.set_verifier(ManifestVerifier(keys))
                self.finder.announced = set()
                self.table.trust(keys, login.overlay_id, login.service_time)
                await self.holdings_changed()
            await self.session.wait_changed()

    # --- peers' requests -------------------------------------------------------------------

    async def _handle(self, conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        link = self.table.link_of(conn)
        if link is None:
            raise net.RequestError("unauthenticated", "not a neighbour")
        if isinstance(msg, api.GetChunks):
            await self.server.serve_chunks(link, ch, msg)
        elif isinstance(msg, api.GetManifest):
            await self.server.serve_manifest(ch, msg)
        elif isinstance(msg, SearchQuery):
            await self._on_search(link, ch, msg)
        else:
            raise net.RequestError("unsupported", f"{type(msg).__name__} is not served by peers")

    async def _on_search(self, link: PeerLink, ch: net.Channel, q: SearchQuery) -> None:
        # A method of the overlay's own, so that a test (or a lying peer in a lab) can replace
        # how this speaker answers searches.
        await self.finder.on_search(link, ch, q)

    def _is_lan(self, address: str) -> bool:
        return self.finder.is_lan(address)

    async def on_push(self, msg: Message) -> None:
        """Pushes from the access point that concern the overlay."""
        if isinstance(msg, api.PeerBanned):
            log.warning("the service banned peer %s: %s", msg.peer_id.hex()[:12], msg.reason)
            self.table.ban(msg.peer_id)

    # --- the parts' own API, as the overlay's ----------------------------------------------

    async def dial(
        self, host: str, port: int, noise_static: bytes | None = None, *, lan: bool = False
    ) -> PeerLink | None:
        """Connect to a peer at an endpoint from the tracker, a certificate or the LAN."""
        return await self.table.dial(host, port, noise_static, lan=lan)

    def link(self, peer_id: bytes) -> PeerLink | None:
        return self.table.link(peer_id)

    def report(self, link: PeerLink, reason: str, file_id: str = "") -> None:
        """A peer misbehaved: drop it, never use it again, and tell the service."""
        self.table.report(link, reason, file_id)

    def banned(self, peer_id: bytes) -> bool:
        return self.table.banned(peer_id)

    def set_max_uploads(self, n: int) -> None:
        """Change the number of upload slots (a reload); waiting requests may start now."""
        self.server.set_max_uploads(n)

    async def find(self, file_id: str, found: Found) -> None:
        """Look for peers holding ``file_id`` by every mechanism at once; ``found`` is called
        for each connected holder (possibly more than once, once per mechanism)."""
        await self.finder.find(file_id, found)

    async def _find_search(self, file_id: str, found: Found) -> None:
        await self.finder.find_search(file_id, found)

    async def holdings_changed(self) -> None:
        """Announce files newly held whole, withdraw those evicted."""
        await self.finder.holdings_changed()

    def _own_peer_id(self) -> bytes:
        return self.finder.own_peer_id()

    @property
    def port(self) -> int:
        return self.table.port

    @property
    def links(self) -> dict[bytes, PeerLink]:
        return self.table.links

    @property
    def neighbours(self) -> NeighbourTable:
        return self.table.neighbours

    @property
    def dials(self) -> DialLimiter:
        return self.table.dials

    @property
    def pool(self) -> budget.MemoryPool:
        return self.table.pool

    @property
    def _ready(self) -> trio.Event:
        return self.table.ready

    @property
    def uploads(self) -> UploadQueue[object]:
        return self.server.uploads

    @property
    def bucket(self) -> TokenBucket:
        return self.server.bucket

    @property
    def buffer_low(self) -> Callable[[], bool]:
        return self.server.buffer_low

    @buffer_low.setter
    def buffer_low(self, value: Callable[[], bool]) -> None:
        self.server.buffer_low = value

    @property
    def router(self) -> SearchRouter:
        return self.finder.router

    @property
    def lan_peers(self) -> dict[str, LanPeer]:
        return self.finder.lan_peers

    @property
    def lan_name(self) -> str:
        return self.finder.lan_name

    @property
    def _announced(self) -> set[str]:
        return self.finder.announced

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
            "banned": len(self.table.banned_ids),
        }
