"""The service over real loopback TCP (access point) and HTTP (metadata API)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import net
from cadenza.protocol import api
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.certificate import CertificateError, CertificateVerifier, Reason
from cadenza.protocol.errors import ErrorCode
from cadenza.protocol.manifest import ChunkError, ManifestVerifier
from cadenza.protocol.messages import ErrorReply, Message
from cadenza.protocol.noise import KeyPair
from cadenza.service.catalog import FileRef
from cadenza.service.serve import Roles, ServeConfig, run_service

PASSWORD = "correct horse battery"


@dataclass
class Library:
    track_ids: dict[str, str]  # title -> id
    file_ids: dict[str, str]  # title -> file id (160 kbps)


@dataclass
class Service:
    port: int
    http: str
    data: Path
    library: Library
    running: Any


def populate(data: Path) -> Library:
    roles = Roles(data)
    try:
        roles.accounts.add_user("alice", PASSWORD)
        roles.accounts.add_user("bob", PASSWORD)
        tracks: dict[str, str] = {}
        files: dict[str, str] = {}
        titles = ["Love", "Love Song", "Lovely Day", "Endless Love Theme", "Quiet Night"]
        for n, title in enumerate(titles, 1):
            refs = []
            for kbps, size in ((96, 60_000), (160, 100_000), (320, 200_000)):
                manifest = roles.storage.put(os.urandom(size))
                refs.append(FileRef(kbps, manifest.file_id, manifest.size))
                if kbps == 160:
                    files[title] = manifest.file_id
            track = roles.catalog.add_track(
                title=title,
                artists=["The Testers"],
                album="Test Album",
                year=2024,
                disc=1,
                number=n,
                duration_ms=180_000,
                sample_rate=44100,
                channels=2,
                loudness_lufs=-14.0,
                peak_dbfs=-1.0,
                files=refs,
                source_hash=f"src-{n}",
            )
            tracks[title] = track.id
        return Library(tracks, files)
    finally:
        roles.close()


@asynccontextmanager
async def service(tmp_path: Path, **kw: Any) -> AsyncIterator[Service]:
    data = tmp_path / "data"
    library = populate(data)
    config = ServeConfig(data=data, listen=("127.0.0.1", 0), http=("127.0.0.1", 0), advertise=False)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config, **kw))
        host, port = running.http_address
        yield Service(running.ap_address[1], f"http://{host}:{port}", data, library, running)
        nursery.cancel_scope.cancel()


@dataclass
class Speaker:
    conn: net.PeerConnection
    static: KeyPair
    login: Message
    pushes: list[Message]
    pushed: trio.Event

    async def wait_push(self) -> None:
        await self.pushed.wait()


@asynccontextmanager
async def speaker(svc: Service, **login: Any) -> AsyncIterator[Speaker]:
    static = KeyPair.generate()
    pushes: list[Message] = []
    pushed = trio.Event()

    async def on_push(conn: net.PeerConnection, ch: net.Channel) -> None:
        item = await ch.receive()
        assert isinstance(item, Message)
        pushes.append(item)
        pushed.set()

    identity = net.Identity(static, hello_payload("test-speaker"))
    async with net.open_connection(
        "127.0.0.1", svc.port, identity=identity, handler=on_push
    ) as conn:
        reply = await login_request(conn, **login) if login else ErrorReply("none")
        yield Speaker(conn, static, reply, pushes, pushed)


async def login_request(conn: net.PeerConnection, **login: Any) -> Message:
    try:
        return await conn.request(api.Login(**login))
    except net.RequestFailed as exc:
        return ErrorReply(exc.code, exc.message)


@asynccontextmanager
async def logged_in(svc: Service, **extra: Any) -> AsyncIterator[Speaker]:
    async with speaker(svc, username="alice", password=PASSWORD, **extra) as s:
        assert isinstance(s.login, api.LoginOk), s.login
        yield s


# --- login ---------------------------------------------------------------------------------------


async def test_login_password_then_device_credential_then_revoked(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        async with speaker(svc, username="alice", password=PASSWORD, device_name="kitchen") as s:
            ok = s.login
            assert isinstance(ok, api.LoginOk)
            assert ok.user == "alice" and ok.device_credential and len(ok.peer_id) == 16
            credential = ok.device_credential
        async with speaker(svc, device_credential=credential) as s:
            assert isinstance(s.login, api.LoginOk)
            assert s.login.device_credential is None and s.login.device_id == ok.device_id
            # Pseudonyms: a new peer id every session.
            assert s.login.peer_id != ok.peer_id
        async with speaker(svc, username="alice", password="not the password") as s:
            assert s.login == ErrorReply("auth-failed", "wrong user name or password")
        roles = Roles(svc.data)
        roles.accounts.revoke_device(ok.device_id)
        roles.close()
        async with speaker(svc, device_credential=credential) as s:
            assert isinstance(s.login, ErrorReply) and s.login.code == "revoked"


async def test_requests_before_login_are_refused(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, speaker(svc) as s:
        with pytest.raises(net.RequestFailed) as info:
            await s.conn.request(api.Search("track", "love"))
        assert info.value.code == "unauthenticated"


async def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        codes = []
        for _ in range(8):
            async with speaker(svc, username="bob", password="guess guess") as s:
                assert isinstance(s.login, ErrorReply)
                codes.append(s.login.code)
        assert codes[:5] == ["auth-failed"] * 5
        assert "throttled" in codes[5:]
        # Even the right password waits while throttled.
        async with speaker(svc, username="bob", password=PASSWORD) as s:
            assert isinstance(s.login, ErrorReply) and s.login.code == "throttled"
            assert "retry in" in s.login.message


async def test_a_connection_gets_two_tries_and_is_hung_up_on_when_throttled(
    tmp_path: Path,
) -> None:
    """A stranger's every further guess costs it a new handshake (which the listener's gate
    bounds per address): after two failures, or one throttled answer, the service hangs up,
    saying why. Two, because a speaker tries its device credential, then the password."""
    async with service(tmp_path) as svc, speaker(svc) as s:
        stale = await login_request(s.conn, device_credential=bytes(32))
        assert isinstance(stale, ErrorReply) and stale.code == "auth-failed"
        ok = await login_request(s.conn, username="alice", password=PASSWORD)
        assert isinstance(ok, api.LoginOk)
    async with service(tmp_path / "2") as svc, speaker(svc) as s:
        for _ in range(2):
            reply = await login_request(s.conn, username="alice", password="guess guess")
            assert isinstance(reply, ErrorReply) and reply.code == "auth-failed"
        await s.conn.wait_closed()
        assert s.conn.goaway is not None
        assert s.conn.goaway.code is ErrorCode.AUTHENTICATION_FAILED


# --- catalog -------------------------------------------------------------------------------------


async def test_lookup_and_search_over_the_access_point(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        async with logged_in(svc) as s:
            tid = svc.library.track_ids["Love"]
            reply = await s.conn.request(api.Lookup(f"cadenza:track:{tid}"))
            assert isinstance(reply, api.LookupReply) and reply.kind == "track"
            assert reply.record["title"] == "Love"
            assert {f["bitrate"] for f in reply.record["files"]} == {96, 160, 320}
            found = await s.conn.request(api.Search("track", "love"))
            assert isinstance(found, api.SearchReply)
            titles = [t["title"] for t in found.items]
            assert titles[0] == "Love"  # the exact title beats partial matches
            assert set(titles) >= {"Love", "Love Song", "Endless Love Theme"}
            assert "Quiet Night" not in titles
            with pytest.raises(net.RequestFailed) as info:
                await s.conn.request(api.Lookup("cadenza:track:" + "0" * 22))
            assert info.value.code == "not-found" and "0" * 22 in info.value.message
            with pytest.raises(net.RequestFailed) as info:
                await s.conn.request(api.Lookup("spotify:track:xyz"))
            assert info.value.code == "bad-request"


async def test_lookup_and_search_over_http(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, httpx.AsyncClient(base_url=svc.http) as http:
        tid = svc.library.track_ids["Love Song"]
        r = await http.get("/lookup/1/", params={"uri": f"cadenza:track:{tid}"})
        assert r.status_code == 200 and r.json()["track"]["title"] == "Love Song"
        r = await http.get("/search/1/track", params={"q": "love"})
        assert r.status_code == 200
        body = r.json()
        assert body["tracks"][0]["title"] == "Love"
        assert body["info"]["num_results"] == 4
        r = await http.get("/lookup/1/", params={"uri": "cadenza:track:nope"})
        assert r.status_code == 400 and "cadenza:track:nope" in r.json()["error"]["message"]


# --- storage -------------------------------------------------------------------------------------


async def test_every_chunk_verifies_against_the_signed_manifest(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        async with logged_in(svc) as s:
            ok = s.login
            assert isinstance(ok, api.LoginOk)
            verifier = ManifestVerifier([Ed25519PublicKey.from_public_bytes(ok.signing_keys[0])])
            file_id = svc.library.file_ids["Love"]
            reply = await s.conn.request(api.GetManifest(file_id))
            assert isinstance(reply, api.ManifestReply)
            manifest = verifier.verify(reply.manifest, file_id=file_id)
            assert manifest.size == 100_000
            got: dict[int, bytes] = {}
            async with s.conn.open_channel() as ch:
                await ch.send(api.GetChunks(file_id, 0, manifest.num_chunks), end=True)
                async for item in ch:
                    assert isinstance(item, net.Bulk)
                    manifest.verify_chunk(item.index, item.data)
                    got[item.index] = bytes(item.data)
            assert sorted(got) == list(range(manifest.num_chunks))
            assert sum(map(len, got.values())) == manifest.size
            # A tampered chunk fails verification.
            bad = bytearray(got[3])
            bad[100] ^= 0x01
            with pytest.raises(ChunkError):
                manifest.verify_chunk(3, bytes(bad))
            # A range past the end, and an unknown file, are clear errors.
            with pytest.raises(net.RequestFailed, match="past the end"):
                async with s.conn.open_channel() as ch:
                    await ch.send(api.GetChunks(file_id, 999, 1), end=True)
                    reply = await ch.receive()
                    assert isinstance(reply, ErrorReply)
                    raise net.RequestFailed(reply.code, reply.message)
            with pytest.raises(net.RequestFailed) as info:
                await s.conn.request(api.GetManifest("f" * 64))
            assert info.value.code == "not-found"


# --- tracker -------------------------------------------------------------------------------------


async def test_tracker_over_the_access_point(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        file_id = svc.library.file_ids["Love"]
        async with trio.open_nursery() as nursery:
            stops: list[trio.Event] = []
            peer_ids: list[bytes] = []

            async def one(i: int, ready: trio.Event, stop: trio.Event) -> None:
                async with logged_in(svc, p2p_port=5000 + i) as s:
                    assert isinstance(s.login, api.LoginOk)
                    peer_ids.append(s.login.peer_id)
                    assert await s.conn.request(api.Announce((file_id,))) == api.Ack()
                    ready.set()
                    await stop.wait()

            for i in range(25):  # one after another, so the order of announcements is known
                ready, stop = trio.Event(), trio.Event()
                stops.append(stop)
                nursery.start_soon(one, i, ready, stop)
                await ready.wait()

            async with logged_in(svc, p2p_port=6000) as asker:
                reply = await asker.conn.request(api.FindPeers(file_id, limit=50))
                assert isinstance(reply, api.PeersReply)
                ports = [p.port for p in reply.peers]
                assert ports == [5000 + i for i in range(24, 14, -1)]  # 10 newest first
                assert all(p.host == "127.0.0.1" for p in reply.peers)
                # The asker, announcing too, never gets itself back.
                await asker.conn.request(api.Announce((file_id,)))
                reply = await asker.conn.request(api.FindPeers(file_id))
                assert isinstance(reply, api.PeersReply)
                assert 6000 not in [p.port for p in reply.peers]
                # Sessions that end leave the tracker. Only the last 20 announcers (5..24 and
                # the asker) were remembered, so 0..5, online all along, are never returned.
                for i in range(15, 25):
                    stops[i].set()
                await trio.sleep(0.2)
                reply = await asker.conn.request(api.FindPeers(file_id, limit=50))
                assert isinstance(reply, api.PeersReply)
                assert [p.port for p in reply.peers] == [5000 + i for i in range(14, 5, -1)]
            for stop in stops:
                stop.set()


# --- certificates and bans ----------------------------------------------------------------------


async def test_certificate_verified_by_a_second_party(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        async with logged_in(svc, p2p_port=4100) as s:
            ok = s.login
            assert isinstance(ok, api.LoginOk)
            verifier = CertificateVerifier(
                [Ed25519PublicKey.from_public_bytes(ok.signing_keys[0])], ok.overlay_id
            )
            cert = verifier.verify(ok.certificate, noise_static=s.static.public, now=time.time())
            assert cert.peer_id == ok.peer_id and cert.endpoint == ("127.0.0.1", 4100)
            assert cert.expires_at == ok.certificate_expires
            with pytest.raises(CertificateError) as info:
                verifier.verify(
                    ok.certificate, noise_static=s.static.public, now=time.time() + 7200
                )
            assert info.value.reason is Reason.EXPIRED
            with pytest.raises(CertificateError) as info:
                verifier.verify(
                    ok.certificate, noise_static=KeyPair.generate().public, now=time.time()
                )
            assert info.value.reason is Reason.KEY_MISMATCH
            renewed = await s.conn.request(api.RenewCertificate())
            assert isinstance(renewed, api.CertificateReply)
            assert verifier.verify(
                renewed.certificate, noise_static=s.static.public, now=time.time()
            )


async def test_reported_peer_is_banned(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        async with logged_in(svc, device_name="modified") as bad:
            assert isinstance(bad.login, api.LoginOk)
            credential = bad.login.device_credential
            bad_peer = bad.login.peer_id
            async with logged_in(svc, device_name="honest") as good:
                reply = await good.conn.request(
                    api.ReportPeer(bad_peer, "chunk 3 failed verification", "f" * 64)
                )
                assert reply == api.Ack()
                with trio.fail_after(5):
                    await bad.conn.wait_closed()
                    await good.wait_push()
                assert good.pushes == [
                    api.PeerBanned(bad_peer, "reported: chunk 3 failed verification")
                ]
            assert any(isinstance(p, api.SessionEnded) and p.code == "banned" for p in bad.pushes)
        # The device behind the banned pseudonym gets no new session (and so no certificate).
        async with speaker(svc, device_credential=credential) as again:
            assert isinstance(again.login, ErrorReply) and again.login.code == "banned"
