"""End to end with real processes: `cadenza serve` and `cadenzad` over loopback, the speaker
playing into an ALSA `file` capture that must equal the reference decode sample for sample."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from alsa import AlsaSandbox, assert_same_pcm, requires_alsa, requires_pv
from cadenza.service.serve import Roles
from rig import free_port
from rig import read_until as _read_until

BIN = Path(sys.executable).parent
PASSWORD = "end to end secret"

pytestmark = requires_alsa

TRACKS = (
    # name, sample rate, seconds, frequency
    ("first", 44100, 5.0, 440.0),
    ("second", 44100, 4.0, 660.0),
    ("third", 48000, 3.0, 550.0),
    ("long", 44100, 12.0, 330.0),
)


@dataclass
class Track:
    uri: str
    rate: int
    ogg: bytes  # the 160 kbps encoding the speaker plays


@dataclass
class System:
    tracks: dict[str, Track]
    url: str
    alsa: AlsaSandbox
    speaker: subprocess.Popen[str]
    service: subprocess.Popen[str]
    data: Path
    port: int


def reference_decode(ogg: bytes, tmp: Path) -> bytes:
    path = tmp / "ref.ogg"
    path.write_bytes(ogg)
    return subprocess.run(
        ["oggdec", "-Q", "-R", "-b", "16", "-e", "0", "-s", "1", "-o", "-", str(path)],
        capture_output=True,
        check=True,
    ).stdout


NO_EXTRAS = ("--no-http", "--no-mdns")


def start_service(data: Path, port: int) -> subprocess.Popen[str]:
    service = subprocess.Popen(
        [BIN / "cadenza", "serve", "--data", data, "--listen", f"127.0.0.1:{port}", *NO_EXTRAS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _read_until(service, r"listening on .*:(\d+)$")
    return service


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    param = getattr(request, "param", "default")
    late = param == "late-service"  # the speaker starts while the service is down
    full = param == "full-disk"  # the cache directory is a 64 KiB file system
    device = "default" if late or full else param
    cache_dir = tmp_path / "cache"
    if full:
        cache_dir.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cache_dir)],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(cache_dir)]))
    data = tmp_path / "service"
    music = tmp_path / "music"
    music.mkdir()
    for n, (name, rate, seconds, freq) in enumerate(TRACKS, 1):
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
        if name == "long":  # noise makes a big file: many chunks, so streaming really paces
            wave = wave + 0.2 * np.random.default_rng(n).standard_normal(len(t))
        soundfile.write(music / f"{n} {name}.flac", np.stack([wave, wave[::-1]], 1), rate)
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    subprocess.run(
        [BIN / "cadenza", "user", "add", "demo", "--data", data, "--password-file", pw], check=True
    )
    subprocess.run([BIN / "cadenza", "ingest", "--data", data, music], check=True)
    roles = Roles(data)
    tracks = {}
    try:
        for name, rate, _, _ in TRACKS:
            [found], _ = roles.catalog.search("track", name)
            ref = next(f for f in found.files if f.bitrate == 160)
            tracks[name] = Track(found.uri, rate, roles.storage.read_all(ref.file_id))
    finally:
        roles.close()

    port = free_port()
    service = subprocess.Popen(["true"], text=True) if late else start_service(data, port)
    alsa = AlsaSandbox(tmp_path / "alsa")
    config = tmp_path / "cadenzad.toml"
    config.write_text(
        f"""
[speaker]
name = "E2E"
state_dir = "{tmp_path / "state"}"
cache_dir = "{cache_dir}"
[service]
address = "127.0.0.1:{port}"
mdns = false
username = "demo"
password_file = "{pw}"
[audio]
device = "{device}"
volume = 100
normalisation = false
[control]
listen = "127.0.0.1:0"
advertise = false
[cache]
max_size = "{"10M" if full else "auto"}"
[p2p]
port = 0
[streaming]
first_piece_seconds = {3 if device == "paced" else 15}
ahead_seconds = {3 if device == "paced" else 15}
"""
    )
    speaker = subprocess.Popen(
        [BIN / "cadenzad", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=alsa.env(),
    )
    try:
        url = _read_until(speaker, r"control API on (http://\S+)").group(1)
        system = System(tracks, url, alsa, speaker, service, data, port)
        yield system
    finally:
        for proc in (speaker, system.service if "system" in locals() else service):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def play_and_wait(system: System, uris: list[str]) -> dict:
    with httpx.Client(base_url=system.url, timeout=30) as http:
        r = http.post("/api/v1/play", json={"uris": uris})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = http.get("/api/v1/state").json()
            if state["status"] == "stopped" and state["index"] == len(uris) - 1:
                return state
            time.sleep(0.1)
    raise AssertionError(f"playback did not finish: {state}")


def stop_speaker(system: System) -> None:
    system.speaker.send_signal(signal.SIGTERM)
    assert system.speaker.wait(timeout=20) == 0


def test_one_track_plays_sample_exact(system: System, tmp_path: Path) -> None:
    track = system.tracks["first"]
    state = play_and_wait(system, [track.uri])
    assert state["bytes_by_source"].get("service", 0) > 0
    stop_speaker(system)
    assert_same_pcm(system.alsa.capture(44100), reference_decode(track.ogg, tmp_path))


def test_two_tracks_are_gapless(system: System, tmp_path: Path) -> None:
    a, b = system.tracks["first"], system.tracks["second"]
    play_and_wait(system, [a.uri, b.uri])
    stop_speaker(system)
    expected = reference_decode(a.ogg, tmp_path) + reference_decode(b.ogg, tmp_path)
    assert_same_pcm(system.alsa.capture(44100), expected)


def test_48k_track_plays_at_48k(system: System, tmp_path: Path) -> None:
    track = system.tracks["third"]
    play_and_wait(system, [track.uri])
    stop_speaker(system)
    assert system.alsa.capture(44100) == b""
    assert_same_pcm(system.alsa.capture(48000), reference_decode(track.ogg, tmp_path))


def test_unknown_uri_is_a_404_that_names_it(system: System) -> None:
    missing = "cadenza:track:" + "0" * 22
    with httpx.Client(base_url=system.url, timeout=30) as http:
        r = http.post("/api/v1/play", json={"uri": missing})
        assert r.status_code == 404 and missing in r.json()["error"]["message"]
        r = http.post("/api/v1/play", json={"uri": "spotify:track:1"})
        assert r.status_code == 400 and "spotify:track:1" in r.json()["error"]["message"]
        r = http.put("/api/v1/volume", json={"volume": 150})
        assert r.status_code == 400 and "volume" in r.json()["error"]["message"]


def test_cached_track_plays_with_the_service_gone(system: System, tmp_path: Path) -> None:
    track = system.tracks["second"]
    first = play_and_wait(system, [track.uri])
    assert first["bytes_by_source"].get("service", 0) > 0
    system.service.send_signal(signal.SIGKILL)
    system.service.wait()
    second = play_and_wait(system, [track.uri])
    assert second["bytes_by_source"].get("cache", 0) > 0
    assert second["session"]["state"] != "online"
    stop_speaker(system)
    # The PCM stays open between plays, so the capture holds both, back to back.
    reference = reference_decode(track.ogg, tmp_path)
    assert_same_pcm(system.alsa.capture(44100), reference + reference)


@requires_pv
@pytest.mark.parametrize("system", ["paced"], indirect=True)
def test_service_killed_mid_track_and_back(system: System, tmp_path: Path) -> None:
    """On a device that plays in real time: the buffered part plays on, the rest comes when
    the service is back, and what reaches ALSA is still exactly the track."""
    track = system.tracks["long"]
    with httpx.Client(base_url=system.url, timeout=30) as http:
        # The paced PCM consumes in real time, like a sound card.
        r = http.post("/api/v1/play", json={"uri": track.uri})
        assert r.status_code == 200
        state = wait_for(http, lambda s: s["position_ms"] > 1500)
        system.service.send_signal(signal.SIGKILL)
        system.service.wait()
        state = wait_for(http, lambda s: s["session"]["state"] != "online")
        # With the service gone, what is buffered (~3 s ahead) plays on.
        killed_at = state["position_ms"]
        state = wait_for(http, lambda s: s["position_ms"] > killed_at + 1000)
        assert state["session"]["state"] != "online" and state["status"] == "playing"
        assert state["bytes_by_source"]["service"] < len(track.ogg)  # not all of it yet
        system.service = start_service(system.data, system.port)
        state = wait_for(http, lambda s: s["status"] == "stopped", timeout=60)
    assert state["session"]["state"] == "online"
    reference = reference_decode(track.ogg, tmp_path)
    # The paced PCM's pipe (pv) holds ~0.4 s beyond what ALSA accounts for: let it drain.
    deadline = time.monotonic() + 10
    while len(system.alsa.capture(44100, "paced")) < len(reference) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_speaker(system)
    assert_same_pcm(system.alsa.capture(44100, "paced"), reference)


def wait_for(http: httpx.Client, cond: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = http.get("/api/v1/state").json()
        if cond(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"condition not met: {state}")


@pytest.mark.parametrize("system", ["late-service"], indirect=True)
def test_service_down_at_start_then_back(system: System, tmp_path: Path) -> None:
    track = system.tracks["first"]
    with httpx.Client(base_url=system.url, timeout=30) as http:
        # The daemon is up and says why it cannot stream yet.
        state = http.get("/api/v1/state").json()
        assert state["session"]["state"] in ("offline", "connecting")
        assert "127.0.0.1" in state["session"]["error"] or state["session"]["state"] == "connecting"
        r = http.post("/api/v1/play", json={"uri": track.uri})
        assert r.status_code == 503 and "not reachable" in r.json()["error"]["message"]
        system.service = start_service(system.data, system.port)
        wait_for(http, lambda s: s["session"]["state"] == "online", timeout=60)
    play_and_wait(system, [track.uri])
    stop_speaker(system)
    assert_same_pcm(system.alsa.capture(44100), reference_decode(track.ogg, tmp_path))


def test_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[audio]\nperiod_frames = "lots"\n[streaming]\nbitrate = 200\n')
    out = subprocess.run(
        [BIN / "cadenzad", "--config", config, "--check-config"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "audio.period_frames" in out.stderr and "streaming.bitrate" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text('[service]\naddress = "127.0.0.1:4070"\n')
    out = subprocess.run(
        [BIN / "cadenzad", "--config", good, "--check-config"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


@requires_pv
@pytest.mark.parametrize("system", ["paced"], indirect=True)
def test_pause_resume_seek_next_previous(system: System) -> None:
    long, first = system.tracks["long"], system.tracks["first"]
    with httpx.Client(base_url=system.url, timeout=30) as http:
        # A #m:ss fragment starts there.
        r = http.post("/api/v1/play", json={"uris": [long.uri + "#0:05", first.uri]})
        assert r.status_code == 200
        state = wait_for(http, lambda s: s["status"] == "playing" and s["position_ms"] >= 5000)
        assert state["index"] == 0 and len(state["queue"]) == 2
        http.post("/api/v1/pause")
        paused = wait_for(http, lambda s: s["status"] == "paused")
        time.sleep(0.5)
        still = http.get("/api/v1/state").json()
        assert (
            still["status"] == "paused" and abs(still["position_ms"] - paused["position_ms"]) < 200
        )
        http.post("/api/v1/resume")
        wait_for(
            http,
            lambda s: s["status"] == "playing" and s["position_ms"] > still["position_ms"] + 300,
        )
        r = http.post("/api/v1/seek", json={"position_ms": 9000})
        assert r.status_code == 200
        wait_for(http, lambda s: s["position_ms"] >= 9000)
        r = http.post("/api/v1/seek", json={"position_ms": -5})
        assert r.status_code == 400 and "position_ms" in r.json()["error"]["message"]
        http.post("/api/v1/next")
        state = wait_for(
            http, lambda s: s["index"] == 1 and s["status"] == "playing" and s["position_ms"] < 2000
        )
        assert state["track"]["uri"] == first.uri
        http.post("/api/v1/previous")  # at the very start of a track: back to the previous one
        state = wait_for(http, lambda s: s["index"] == 0 and s["status"] == "playing")
        assert state["track"]["uri"] == long.uri and state["position_ms"] < 3000
        r = http.put("/api/v1/volume", json={"volume": 30})
        assert r.status_code == 200 and r.json()["volume"] == 30


@pytest.mark.parametrize("system", ["full-disk"], indirect=True)
def test_full_disk_cache_does_not_stop_playback(system: System, tmp_path: Path) -> None:
    track = system.tracks["long"]  # ~400 KB: cannot fit in the 64 KiB cache file system
    state = play_and_wait(system, [track.uri])
    assert state["bytes_by_source"]["service"] >= len(track.ogg)
    stop_speaker(system)
    assert_same_pcm(system.alsa.capture(44100), reference_decode(track.ogg, tmp_path))
    assert system.speaker.stdout is not None
    log = system.speaker.stdout.read()
    assert "disk is full" in log or "could not cache" in log, log
