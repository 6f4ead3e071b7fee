"""Membership certificates in the Noise handshake, over real TCP."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza import net
from cadenza.protocol.admission import Admitted, admit_peer, hello_payload
from cadenza.protocol.certificate import CertificateIssuer, CertificateVerifier
from cadenza.protocol.messages import Echo
from cadenza.protocol.noise import KeyPair

OVERLAY = "cadenza-test"
SERVICE_KEY = Ed25519PrivateKey.generate()
ISSUER = CertificateIssuer(SERVICE_KEY, OVERLAY)
STRANGER = CertificateIssuer(Ed25519PrivateKey.generate(), OVERLAY)


def peer(
    *, issuer: CertificateIssuer = ISSUER, age: float = 0, for_key: bytes | None = None
) -> net.Identity:
    static = KeyPair.generate()
    cert = issuer.issue(
        peer_id=os.urandom(16),
        noise_static=for_key or static.public,
        endpoint=("127.0.0.1", 4000),
        now=time.time() - age,
    )
    return net.Identity(static, hello_payload("test-peer", certificate=cert))


@asynccontextmanager
async def admitting_peer() -> AsyncIterator[tuple[int, list[Admitted]]]:
    verifier = CertificateVerifier([ISSUER.public_key], OVERLAY)
    admitted: list[Admitted] = []

    def verify(remote_static: bytes, payload: bytes) -> Admitted:
        result = admit_peer(payload, remote_static, verifier, now=time.time())
        admitted.append(result)
        return result

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        await ch.send(await ch.receive(), end=True)  # type: ignore[arg-type]

    me = peer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(net.serve_connections, handler, identity=me, verify=verify)
        )
        yield listeners[0].socket.getsockname()[1], admitted
        nursery.cancel_scope.cancel()


async def test_valid_certificate_is_admitted() -> None:
    async with admitting_peer() as (port, admitted):
        me = peer()
        async with net.open_connection("127.0.0.1", port, identity=me) as conn:
            assert await conn.request(Echo(b"hi")) == Echo(b"hi")
        [entry] = admitted
        assert entry.certificate is not None
        assert entry.certificate.endpoint == ("127.0.0.1", 4000)
        assert entry.hello.agent == "test-peer"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: peer(age=3 * 3600), "expired"),
        (lambda: peer(issuer=STRANGER), "unknown key"),
        (lambda: peer(for_key=KeyPair.generate().public), "key"),
        (lambda: net.Identity(KeyPair.generate(), hello_payload("no-cert")), "no membership"),
        (lambda: net.Identity(KeyPair.generate(), b""), "no Hello"),
    ],
    ids=["expired", "unknown-signer", "key-mismatch", "no-certificate", "no-hello"],
)
async def test_invalid_certificates_are_refused_with_a_reason(make: object, reason: str) -> None:
    async with admitting_peer() as (port, admitted):
        with pytest.raises(net.HandshakeFailed, match=reason):
            async with net.open_connection("127.0.0.1", port, identity=make()):  # type: ignore[operator]
                pass
        assert admitted == []
