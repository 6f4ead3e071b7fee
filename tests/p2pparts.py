"""The overlay's parts on their own, on loopback: for the unit tests of links, serving and
finding, which need real connections between admitted peers but not a whole service.

    service = Signer()
    a = await peer(nursery, service, handler)
    b = await peer(nursery, service, handler)
    link = await a.table.dial("127.0.0.1", b.port, b.static.public)

Certificates and manifests are signed by ``Signer`` as the service would sign them; a peer's
session is a :class:`FakeSession` whose requests to the service the test answers itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadenza import net
from cadenza.p2p.links import Handler, LinkTable
from cadenza.protocol import api
from cadenza.protocol.certificate import CertificateIssuer
from cadenza.protocol.manifest import Manifest, ManifestSigner
from cadenza.protocol.messages import Message
from cadenza.protocol.noise import KeyPair

OVERLAY_ID = "cadenza"


class Signer:
    """The service's keys: it signs membership certificates and manifests."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.issuer = CertificateIssuer(self.key, OVERLAY_ID)
        self.manifests = ManifestSigner(self.key)

    def login(
        self, static: KeyPair, endpoint: tuple[str, int] | None, peer_id: bytes | None = None
    ) -> api.LoginOk:
        peer_id = peer_id or os.urandom(16)
        now = time.time()
        cert = self.issuer.issue(
            peer_id=peer_id, noise_static=static.public, endpoint=endpoint, now=now
        )
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return api.LoginOk(
            user="alice",
            device_id="device",
            peer_id=peer_id,
            certificate=cert,
            certificate_expires=int(now) + 3600,
            service_time=now,
            observed_host="127.0.0.1",
            observed_port=0,
            overlay_id=OVERLAY_ID,
            signing_keys=(raw,),
        )

    def sign(self, data: bytes) -> Manifest:
        return self.manifests.sign(data)


@dataclass
class FakeSession:
    """What the parts use of a :class:`~cadenza.session.client.Session`: the login, and
    requests to the service, which ``answer`` replies to (``None``: no reply expected)."""

    login: api.LoginOk | None = None
    answer: Callable[[Message], Any] = lambda msg: None
    requests: list[Message] = field(default_factory=list)
    p2p_port: int = 0

    async def request(self, msg: Message, *, timeout: float | None = None) -> Any:
        await trio.lowlevel.checkpoint()
        self.requests.append(msg)
        reply = self.answer(msg)
        if isinstance(reply, BaseException):
            raise reply
        return reply


@dataclass
class Peer:
    table: LinkTable
    session: FakeSession
    static: KeyPair

    @property
    def port(self) -> int:
        return self.table.port

    @property
    def peer_id(self) -> bytes:
        assert self.session.login is not None
        return self.session.login.peer_id


async def refuse(conn: net.PeerConnection, ch: net.Channel) -> None:
    """A handler for a peer that answers nothing."""
    await ch.receive()
    raise net.RequestError("unsupported", "this test peer answers nothing")


async def peer(
    nursery: trio.Nursery,
    signer: Signer | None,
    handler: Handler = refuse,
    *,
    trusted: bool = True,
    **kw: Any,
) -> Peer:
    """A link table listening on loopback, logged in to ``signer`` (no login without one)
    and, if ``trusted``, admitting the peers it signed."""
    static = KeyPair.generate()
    session = FakeSession()
    table = LinkTable(
        session=session,  # type: ignore[arg-type]
        static=static,
        handler=handler,
        host="127.0.0.1",
        **kw,
    )
    port = await table.listen(nursery, 0)
    if signer is not None:
        session.login = signer.login(static, ("127.0.0.1", port))
        if trusted:
            trust(table, signer, session.login)
    return Peer(table, session, static)


def trust(table: LinkTable, signer: Signer, login: api.LoginOk) -> None:
    table.trust([signer.key.public_key()], login.overlay_id, login.service_time)


async def eventually(condition: Callable[[], object], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - state polled from outside the code under test
            await trio.sleep(0.01)
