"""The streaming engine against a real service over loopback: chunks verified, bad ones
refetched and never written, the finished file cached."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza.cache.store import Cache
from cadenza.protocol.manifest import ManifestVerifier
from cadenza.protocol.noise import KeyPair
from cadenza.service.catalog import FileRef
from cadenza.service.serve import Roles, ServeConfig, run_service
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.stream.engine import FileChoice, FileStream, ServiceSource

PASSWORD = "stream test password"
SIZE = 300_000  # 19 chunks


class CorruptingSource:
    """Wraps a real source; the first delivery of each chunk in ``corrupt`` has a bit flipped
    (what a broken disk, a bad peer or a flaky link would do)."""

    def __init__(self, inner: ServiceSource, corrupt: set[int]) -> None:
        self.inner = inner
        self.name = inner.name
        self.corrupt = set(corrupt)
        self.delivered: list[int] = []

    async def fetch(
        self, file_id: str, first: int, count: int, priority: int
    ) -> AsyncIterator[tuple[int, memoryview | bytes]]:
        async for index, data in self.inner.fetch(file_id, first, count, priority):
            self.delivered.append(index)
            if index in self.corrupt:
                self.corrupt.discard(index)
                bad = bytearray(data)
                bad[len(bad) // 2] ^= 0x40
                yield index, bytes(bad)
            else:
                yield index, data


async def test_bad_chunks_are_detected_refetched_and_never_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "service"
    roles = Roles(data_dir)
    payload = os.urandom(SIZE)
    try:
        roles.accounts.add_user("alice", PASSWORD)
        manifest = roles.storage.put(payload)
        track = roles.catalog.add_track(
            title="Noise",
            artists=["Tester"],
            album="Tests",
            year=None,
            disc=None,
            number=1,
            duration_ms=10_000,
            sample_rate=44100,
            channels=2,
            loudness_lufs=None,
            peak_dbfs=None,
            files=[FileRef(160, manifest.file_id, manifest.size)],
            source_hash="noise",
        )
    finally:
        roles.close()
    config = ServeConfig(data=data_dir, listen=("127.0.0.1", 0), http=None, advertise=False)
    async with trio.open_nursery() as nursery:
        svc = await nursery.start(partial(run_service, config))
        endpoint = Endpoint("127.0.0.1", svc.ap_address[1])

        async def candidates() -> list[Endpoint]:
            return [endpoint]

        session = Session(
            static=KeyPair.generate(),
            state_dir=tmp_path / "state",
            candidates=candidates,
            credentials=Credentials("alice", PASSWORD, "test"),
        )
        await nursery.start(session.run)
        await session.wait_online(10)
        login = session.login
        assert login is not None

        def verifier() -> ManifestVerifier:
            return ManifestVerifier([Ed25519PublicKey.from_public_bytes(login.signing_keys[0])])

        source = CorruptingSource(ServiceSource(session), corrupt={0, 7, 18})
        cache = Cache(tmp_path / "cache", capacity=10 << 20)
        reported: list[int] = []
        stream = FileStream(
            FileChoice(manifest.file_id, manifest.size, 160, track.duration_ms),
            session=session,
            cache=cache,
            verifier=verifier,
            sources=[source],
            first_piece_s=100,  # everything at once: this test is about integrity
            on_bad_chunk=lambda: reported.append(1),
        )
        buffer = await nursery.start(stream.run)
        with trio.fail_after(30):
            await stream.done.wait()
        assert stream.stats.bad_chunks == 3 == len(reported)  # what the speaker's state shows
        # Each bad chunk was asked for again and the good copy taken.
        assert sorted(i for i in source.delivered if i in (0, 7, 18)) == [0, 0, 7, 7, 18, 18]
        assert buffer.complete and buffer.getvalue() == payload
        assert stream.stats.bytes_by_source == {"service": SIZE}
        # The finished file went into the cache, whole and verified.
        assert cache.has(manifest.file_id) and cache.open(manifest.file_id) == payload
        cache.close()
        nursery.cancel_scope.cancel()
