"""The hostile wire client (wire.py) speaks the real protocol: against an access point run
in this process on loopback, it does what a speaker does (XX and IK handshakes, password and
device logins, a refused login), and its attack primitives produce frames the access point
parses (it answers a PING sent after them, or hangs up with a GOAWAY on a broken one).

If these fail, a hostile test that "passes" because the service refused it proves nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
import wire
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadenza.service.serve import Roles, ServeConfig, run_service

PASSWORD = "correct horse battery"


@dataclass
class AccessPoint:
    port: int
    static_public: bytes  # from the key file, as a client given it out of band would have it


@asynccontextmanager
async def access_point(tmp_path: Path) -> AsyncIterator[AccessPoint]:
    data = tmp_path / "data"
    roles = Roles(data)
    try:
        roles.accounts.add_user("alice", PASSWORD)
    finally:
        roles.close()
    raw = (data / "keys" / "static.key").read_bytes()
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    config = ServeConfig(data=data, listen=("127.0.0.1", 0), http=None, advertise=False)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config))
        yield AccessPoint(
            running.ap_address[1], public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def admitted(ap: AccessPoint, **connect: str) -> AsyncIterator[wire.RawPeer]:
    async with await wire.RawPeer.connect("127.0.0.1", ap.port, **connect) as peer:
        await peer.handshake_xx(wire.hello("hostile-test"))
        await peer.wait_admitted()
        yield peer


async def test_xx_logins_with_a_password_then_the_device_credential(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with access_point(tmp_path) as ap:
            async with await wire.RawPeer.connect("127.0.0.1", ap.port) as peer:
                remote_static, payload = await peer.handshake_xx(wire.hello("hostile-test"))
                assert remote_static == ap.static_public
                kind, fields = wire.decode_message(payload)
                assert kind == "Hello" and fields["protocol"] == 1
                ping = await peer.wait_admitted()
                assert len(ping.payload) == 8
                kind, ok = await peer.request(wire.login_password("alice", PASSWORD, "kitchen"))
                assert kind == "LoginOk", ok
                assert ok["user"] == "alice" and len(ok["peer_id"]) == 16
                assert ok["observed_host"] == "127.0.0.1"
                credential = ok["device_credential"]
                assert isinstance(credential, bytes) and credential

            async with admitted(ap) as peer:
                kind, again = await peer.request(wire.login_device(credential))
                assert kind == "LoginOk", again
                assert again["device_id"] == ok["device_id"]
                assert again["device_credential"] is None

            async with admitted(ap) as peer:
                reply = await peer.request(wire.login_password("alice", "not the password"))
                assert reply == (
                    "ErrorReply",
                    {"code": "auth-failed", "message": "wrong user name or password"},
                )


async def test_ik_with_the_key_from_the_key_file_gets_the_responders_ping(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with access_point(tmp_path) as ap:
            peer = await wire.RawPeer.connect("127.0.0.1", ap.port, source="127.0.0.9")
            async with peer:
                assert peer.local_address[0] == "127.0.0.9"
                remote_static, payload = await peer.handshake_ik(
                    ap.static_public, wire.hello("hostile-test")
                )
                assert remote_static == ap.static_public
                assert wire.decode_message(payload)[0] == "Hello"
                assert peer.ik_first_flight[:5] == b"CDZ\x01\x02"
                ping = await peer.wait_admitted()
                assert not ping.ack
                # The transport works both ways: our PONG went out, a login comes back.
                kind, _ = await peer.request(wire.login_password("alice", PASSWORD))
                assert kind == "LoginOk"
                first_flight = peer.ik_first_flight

            # The recorded first flight, replayed byte for byte on a new socket, is a valid
            # first message: the responder answers it with a handshake message.
            async with await wire.RawPeer.connect("127.0.0.1", ap.port) as replay:
                await replay.send_raw(first_flight)
                head = b""
                while len(head) < 2:
                    more = await replay.receive_raw(2 - len(head))
                    assert more, "closed without answering the replay"
                    head += more
                # e (32 bytes), then the encrypted Hello and its tag.
                assert int.from_bytes(head, "big") > 32 + 16


async def test_attack_primitives_produce_frames_the_service_parses(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with access_point(tmp_path) as ap:
            async with admitted(ap) as peer:
                channels = await peer.open_channels_with_fragments(2, 1000, fragment_size=300)
                assert channels == [1, 3]
                # Byte by byte, with the fragments still pending: the service reads both and
                # answers our PING with its PONG.
                took = await peer.trickle(wire.ping_frame(b"trickle!"), 0.001)
                assert took > 0.001
                while True:
                    ev = await peer.receive_event()
                    if isinstance(ev, wire.Ping) and ev.ack:
                        assert ev.payload == b"trickle!"
                        break

            async with admitted(ap) as peer:
                await peer.send_frames([wire.frame(9, 0, 0)])  # no such frame type
                with trio.fail_after(5):
                    closed = await peer.hold()
                assert closed.goaway is not None
                assert closed.goaway.code_name == "PROTOCOL_ERROR"
                assert "unknown frame type" in closed.goaway.reason
                assert closed.reason in ("eof", "reset")
