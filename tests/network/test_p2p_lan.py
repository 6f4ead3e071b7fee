"""Peer-assisted streaming between real `cadenzad` processes, each in its own namespace.

The service runs in host 0; speakers in hosts 1..; every speaker plays into its own ALSA
capture, which must equal the reference decode sample for sample (so not one bad sample
reached the output), and `paced` PCMs play in real time so underruns are real.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa import assert_same_pcm, requires_alsa, requires_pv
from netns import NETNS_MARKS, Lan
from p2plab import P2P_PORT, P2PLab, make_music

pytestmark = [*NETNS_MARKS, requires_alsa, requires_pv, pytest.mark.slow]

CHUNK = 16 * 1024
# (name, seconds, tone): noise in them makes ~300 KB files at 160 kbps, ~20 chunks.
SPECS = [("alpha", 14.0, 440.0), ("beta", 14.0, 550.0), ("gamma", 14.0, 660.0)]


def reference(ogg: bytes, tmp: Path) -> bytes:
    path = tmp / "ref.ogg"
    path.write_bytes(ogg)
    return subprocess.run(
        ["oggdec", "-Q", "-R", "-b", "16", "-e", "0", "-s", "1", "-o", "-", str(path)],
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[P2PLab]:
    with Lan(5) as lan:
        made = P2PLab(lan, tmp_path, make_music(tmp_path / "music", SPECS))
        made.prepare()
        made.start_service()
        try:
            yield made
        finally:
            made.close()


def first_piece_limit(lab: P2PLab, name: str, seconds: float = 3.0) -> int:
    """Bytes of the first piece (``seconds`` of audio) plus the tail, rounded up to chunks."""
    t = lab.tracks[name]
    bps = len(t.ogg) / (t.duration_ms / 1000)
    return (int(seconds * bps) // CHUNK + 1 + 2) * CHUNK


def test_speakers_find_each_other_and_b_plays_what_a_holds(lab: P2PLab, tmp_path: Path) -> None:
    a = lab.start_speaker(1, holds=["alpha"])
    b = lab.start_speaker(2, device="paced")
    # Zeroconf: each sees the other on the LAN and they connect as LAN neighbours.
    for me in (a, b):
        me.wait_until(
            lambda s: s["p2p"]["lan_peers"] >= 1 and any(n["lan"] for n in s["p2p"]["neighbours"]),
            30,
            "found a LAN peer by zeroconf",
        )
    track = lab.tracks["alpha"]
    b.play([track.uri])
    state = b.wait_finished()
    streamed = state["tracks_streamed"][-1]
    by = streamed["bytes_by_source"]
    assert by.get("service", 0) <= first_piece_limit(lab, "alpha"), by
    assert by["peer"] + by.get("service", 0) == len(track.ogg)
    assert streamed["peers_found_by"].get("tracker", 0) >= 1
    assert streamed["peers_found_by"].get("lan", 0) >= 1
    assert state["underruns"] == 0
    assert state["traffic"]["overhead_in"] > 0
    assert b.stop() == 0
    expected = reference(track.ogg, tmp_path)
    assert_same_pcm(b.paced_capture(len(expected)), expected)
    # A served it, and says so.
    assert a.state()["p2p"]["uploaded"] == by["peer"]


def test_holder_killed_mid_transfer_and_playback_goes_on(lab: P2PLab, tmp_path: Path) -> None:
    # A uploads slowly (about twice the bitrate), so the transfer lasts a while.
    a = lab.start_speaker(1, holds=["beta"], p2p='upload_rate = "40K"')
    b = lab.start_speaker(2, device="paced", lan_discovery=False)
    track = lab.tracks["beta"]
    b.play([track.uri])
    b.wait_until(
        lambda s: s["status"] == "playing" and s["bytes_by_source"].get("peer", 0) >= 2 * CHUNK,
        30,
        "received from the peer",
    )
    a.kill()  # kill -9, mid-transfer
    state = b.wait_finished()
    by = state["tracks_streamed"][-1]["bytes_by_source"]
    assert 0 < by["peer"] < len(track.ogg)
    assert by["peer"] + by["service"] == len(track.ogg)  # the service took over
    assert state["underruns"] == 0
    assert b.stop() == 0
    expected = reference(track.ogg, tmp_path)
    assert_same_pcm(b.paced_capture(len(expected)), expected)


CORRUPT = textwrap.dedent(
    """
    from cadenza.cache.store import Cache
    _read = Cache.read_chunks
    def _corrupt(self, *args):
        return [bytes([c[0] ^ 0x55]) + c[1:] for c in _read(self, *args)]
    Cache.read_chunks = _corrupt
    """
)


def test_a_speaker_serving_corrupt_chunks_is_reported_banned_and_never_heard(
    lab: P2PLab, tmp_path: Path
) -> None:
    evil = lab.start_speaker(1, holds=["gamma"], prelude=CORRUPT)
    b = lab.start_speaker(2, device="paced")
    c = lab.start_speaker(3)
    track = lab.tracks["gamma"]
    b.play([track.uri])
    state = b.wait_finished()
    assert state["bad_chunks"] >= 1
    assert "peer" not in state["tracks_streamed"][-1]["bytes_by_source"]
    assert b.stop() == 0
    # Not one bad sample reached B's ALSA output.
    expected = reference(track.ogg, tmp_path)
    assert_same_pcm(b.paced_capture(len(expected)), expected)
    # B reported it; the service banned it; it is out of the overlay for good.
    assert "misbehaved" in b.log() and "reported" in b.log()
    assert "reported by" in lab.service_log()
    evil_state = evil.wait_until(
        lambda s: s["session"]["state"] != "online", 20, "thrown out by the service"
    )
    assert "banned" in evil_state["session"]["error"]
    # The other speakers were told to drop it.
    assert "the service banned peer" in c.log()


LIAR = textwrap.dedent(
    """
    import os, time, logging
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cadenza.p2p import overlay as _ov
    from cadenza.protocol.certificate import CertificateIssuer
    from cadenza.protocol.noise import KeyPair
    from cadenza.protocol.peer import SearchHit
    TRAP = ("{trap_host}", {trap_port})

    async def _lie(self, link, ch, q):
        # Any file, any time: "the holder is at TRAP" (a certificate we signed ourselves).
        cert = CertificateIssuer(Ed25519PrivateKey.generate(), "cadenza").issue(
            peer_id=os.urandom(16), noise_static=KeyPair.generate().public,
            endpoint=TRAP, now=time.time())
        await ch.send(SearchHit(q.query_id, q.file_id, cert))
        logging.getLogger("liar").warning("lied about %s", q.file_id[:12])
    _ov.Overlay._on_search = _lie
    """
)

TRAP = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5999)); s.listen(); print("trap ready", flush=True)
    while True:
        c, addr = s.accept(); print("dialled by", addr[0], flush=True); c.close()
    """
)


def test_an_endpoint_a_peer_merely_claims_is_never_dialled(lab: P2PLab) -> None:
    trap_host = lab.lan.hosts[4]
    trap = trap_host.popen(
        [sys.executable, "-c", TRAP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert trap.stdout is not None and "trap ready" in trap.stdout.readline()
    liar = lab.start_speaker(1, prelude=LIAR.format(trap_host=trap_host.address, trap_port=5999))
    b = lab.start_speaker(2)
    b.wait_until(lambda s: len(s["p2p"]["neighbours"]) >= 1, 30, "connected to the liar")
    track = lab.tracks["alpha"]
    b.play([track.uri])
    b.wait_finished()
    assert "lied about" in liar.log()  # it did answer B's searches with the false endpoint
    assert "ignored a search answer" in b.log()
    trap.terminate()
    out, _ = trap.communicate(timeout=5)
    assert "dialled by" not in out


NO_CERT = textwrap.dedent(
    """
    import trio
    from cadenza import net
    from cadenza.protocol.admission import hello_payload
    from cadenza.protocol.noise import KeyPair

    async def main():
        me = net.Identity(KeyPair.generate(), hello_payload("stranger"))
        try:
            async with net.open_connection("{host}", {port}, identity=me) as conn:
                await conn.ping()
                print("CONNECTED")
        except net.HandshakeFailed as exc:
            print("REFUSED", exc)

    trio.run(main)
    """
)


def test_a_speaker_without_a_certificate_cannot_connect(lab: P2PLab) -> None:
    b = lab.start_speaker(2)
    stranger = lab.lan.hosts[3]
    out = stranger.run(
        [sys.executable, "-c", NO_CERT.format(host=b.host.address, port=P2P_PORT)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.startswith("REFUSED") and "no membership certificate" in out, out
    assert b.state()["p2p"]["neighbours"] == []
