"""An overlay world on loopback for tests: a real service (in this process) holding one
shared file, and speakers made of the session, cache and overlay of ``cadenzad`` without the
player (the network-namespace tests run whole daemons with ALSA).

    async with open_world(tmp_path) as world:
        a = await world.node("a", holds=True)
        b = await world.node("b")
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza.cache.store import Cache
from cadenza.p2p.overlay import Overlay, OverlayConfig
from cadenza.protocol.manifest import ManifestVerifier
from cadenza.protocol.noise import KeyPair
from cadenza.service.catalog import FileRef
from cadenza.service.keys import load_or_create_signing_key
from cadenza.service.serve import Roles, ServeConfig, run_service
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.stream.buffer import CHUNK_SIZE
from cadenza.stream.engine import FileChoice, FileStream, ServiceSource

PASSWORD = "p2p test password"
SIZE = 40 * CHUNK_SIZE + 1234  # 41 chunks
DURATION_MS = 60_000  # so 1 s of audio is about 11 KB: the first piece is a few chunks


@dataclass
class Node:
    session: Session
    cache: Cache
    overlay: Overlay
    static: KeyPair


@dataclass
class World:
    nursery: trio.Nursery
    ap_port: int
    file_id: str
    payload: bytes
    manifest_bytes: bytes
    tmp: Path
    data_dir: Path

    async def node(
        self,
        name: str,
        *,
        holds: bool = False,
        cache_cls: type[Cache] = Cache,
        user: str = "alice",
        **cfg: Any,
    ) -> Node:
        endpoint = Endpoint("127.0.0.1", self.ap_port)

        async def candidates() -> list[Endpoint]:
            return [endpoint]

        static = KeyPair.generate()
        session = Session(
            static=static,
            state_dir=self.tmp / name / "state",
            candidates=candidates,
            credentials=Credentials(user, PASSWORD, name),
        )
        cache = cache_cls(self.tmp / name / "cache", capacity=50 << 20)
        if holds:
            key = ed25519_from_service(self.data_dir)
            cache.set_verifier(ManifestVerifier([key]))
            assert cache.put(self.file_id, self.manifest_bytes, self.payload)
        overlay = Overlay(
            session=session,
            cache=cache,
            static=static,
            config=OverlayConfig(host="127.0.0.1", lan=False, **cfg),
        )
        session._on_push = overlay.on_push
        await self.nursery.start(overlay.run)
        await self.nursery.start(session.run)
        await session.wait_online(10)
        with trio.fail_after(10):
            await overlay._ready.wait()
        return Node(session, cache, overlay, static)

    def stream(self, node: Node, **kw: Any) -> FileStream:
        login = node.session.login
        assert login is not None

        def verifier() -> ManifestVerifier:
            return ManifestVerifier([Ed25519PublicKey.from_public_bytes(login.signing_keys[0])])

        return FileStream(
            FileChoice(self.file_id, SIZE, 160, DURATION_MS),
            session=node.session,
            cache=node.cache,
            verifier=verifier,
            sources=[ServiceSource(node.session)],
            first_piece_s=kw.pop("first_piece_s", 2.0),
            ahead_s=kw.pop("ahead_s", 2.0),
            overlay=node.overlay,
            **kw,
        )


def ed25519_from_service(data_dir: Path) -> Ed25519PublicKey:
    return load_or_create_signing_key(data_dir / "keys" / "signing.key").public_key()


@asynccontextmanager
async def open_world(tmp_path: Path) -> AsyncIterator[World]:
    """A service with users alice and mallory (password PASSWORD) and one shared file."""
    data_dir = tmp_path / "service"
    roles = Roles(data_dir)
    payload = os.urandom(SIZE)
    try:
        roles.accounts.add_user("alice", PASSWORD)
        roles.accounts.add_user("mallory", PASSWORD)
        manifest = roles.storage.put(payload)
        roles.catalog.add_track(
            title="Shared",
            artists=["Peers"],
            album="Overlay",
            year=None,
            disc=None,
            number=1,
            duration_ms=DURATION_MS,
            sample_rate=44100,
            channels=2,
            loudness_lufs=None,
            peak_dbfs=None,
            files=[FileRef(160, manifest.file_id, manifest.size)],
            source_hash="shared",
        )
        manifest_bytes = roles.storage.manifest_bytes(manifest.file_id)
    finally:
        roles.close()
    config = ServeConfig(data=data_dir, listen=("127.0.0.1", 0), http=None, advertise=False)
    async with trio.open_nursery() as nursery:
        svc = await nursery.start(partial(run_service, config))
        yield World(
            nursery,
            svc.ap_address[1],
            manifest.file_id,
            payload,
            manifest_bytes,
            tmp_path,
            data_dir,
        )
        nursery.cancel_scope.cancel()
