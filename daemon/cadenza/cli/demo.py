"""The protocol demo: a service admits a speaker and streams it a file over loopback."""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadenza import net
from cadenza.protocol.admission import Admitted, admit_peer, hello_payload
from cadenza.protocol.certificate import CertificateIssuer, CertificateVerifier, fingerprint
from cadenza.protocol.messages import BulkKind, Echo, Priority
from cadenza.protocol.noise import KeyPair

CHUNK = 16 * 1024
OVERLAY = "cadenza-demo"


def run(args: argparse.Namespace) -> int:
    trio.run(_demo, args.mb)
    return 0


async def _demo(mb: int) -> None:
    service_key = Ed25519PrivateKey.generate()
    issuer = CertificateIssuer(service_key, OVERLAY)
    verifier = CertificateVerifier([issuer.public_key], OVERLAY)
    service = net.Identity(KeyPair.generate(), hello_payload("cadenza-demo-service"))
    speaker_static = KeyPair.generate()
    cert = issuer.issue(
        peer_id=os.urandom(16), noise_static=speaker_static.public, endpoint=None, now=time.time()
    )
    speaker = net.Identity(speaker_static, hello_payload("cadenza-demo-speaker", certificate=cert))

    def admit(remote_static: bytes, payload: bytes) -> Admitted:
        return admit_peer(payload, remote_static, verifier, now=time.time())

    data = os.urandom(CHUNK)

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        assert isinstance(msg, Echo)
        for i in range(int(msg.payload)):
            await ch.send_bulk(BulkKind.CHUNK, i, data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(net.serve_connections, handler, identity=service, verify=admit)
        )
        port = listeners[0].socket.getsockname()[1]
        print(f"service listening on 127.0.0.1:{port}")
        print(f"  static key {fingerprint(service.static.public)}")
        signing = issuer.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        print(f"  signing key {fingerprint(signing)}")
        async with net.open_connection("127.0.0.1", port, identity=speaker) as conn:
            print(
                f"speaker connected (Noise XX), admitted with its membership certificate; "
                f"rtt {await conn.ping() * 1e3:.2f} ms"
            )
            count = mb * 1024 * 1024 // CHUNK
            t0 = time.perf_counter()
            got = 0
            async with conn.open_channel(Priority.PLAYING) as ch:
                await ch.send(Echo(str(count).encode()))
                async for item in ch:
                    assert isinstance(item, net.Bulk)
                    got += len(item.data)
            dt = time.perf_counter() - t0
            print(
                f"streamed {got / 1e6:.1f} MB in {count} chunks of 16 KiB: "
                f"{got / dt / 1e6:.0f} MB/s, encrypted"
            )
        nursery.cancel_scope.cancel()
    print("The speaker and the player arrive in the next milestones; see README.md.")
