"""The `cadenza` speaker commands (play, pause, resume, next, volume, status, queue) run as
real processes against a real `cadenzad` and `cadenza serve` over loopback; the choice of
speaker, the formatting and the HTTP error handling as plain functions."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from alsa import AlsaSandbox, requires_alsa
from cadenza.cli import control
from cadenza.cli.control import CliError, Target
from cadenza.net.mdns import ServiceInfo
from rig import free_port as _free_port
from rig import read_until as _read_until

BIN = Path(sys.executable).parent
PASSWORD = "cli control secret"
SPEAKER_NAME = "CLI Test"
ALBUM = "Control Sessions"
ARTIST = "The Remote Ensemble"
# title, frequency: long enough to be playing still when a test looks.
TRACKS = (("Copper Lantern", 440.0), ("Velvet Thunder", 550.0), ("Morning Harbour", 660.0))
SECONDS = 40.0
RATE = 44100
NO_EXTRAS = ("--no-http", "--no-mdns")


# --- a service and a speaker over loopback -----------------------------------------------------


@dataclass
class System:
    url: str  # the control API root, as cadenzad prints it (with a trailing slash)
    tracks: dict[str, str]  # title -> uri
    album: str


def _drain(proc: subprocess.Popen[str]) -> None:
    # Keep reading a child's output so it never blocks on a full pipe.
    assert proc.stdout is not None
    threading.Thread(target=proc.stdout.read, daemon=True).start()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    if not Path("/usr/share/alsa/alsa.conf").exists():
        pytest.skip("no ALSA configuration (libasound2-data)")
    from mutagen.flac import FLAC

    from cadenza.service.catalog import Track
    from cadenza.service.serve import Roles

    tmp = tmp_path_factory.mktemp("cli-control")
    data = tmp / "service"
    music = tmp / "music"
    music.mkdir()
    for n, (title, freq) in enumerate(TRACKS, 1):
        t = np.arange(int(RATE * SECONDS)) / RATE
        wave = 0.3 * np.sin(2 * np.pi * freq * t)
        path = music / f"{n:02d}.flac"
        soundfile.write(path, np.stack([wave, wave], 1), RATE)
        tags = FLAC(path)
        tags["title"] = title
        tags["artist"] = ARTIST
        tags["album"] = ALBUM
        tags["tracknumber"] = str(n)
        tags.save()
    pw = tmp / "password"
    pw.write_text(PASSWORD + "\n")
    subprocess.run(
        [BIN / "cadenza", "user", "add", "demo", "--data", data, "--password-file", pw], check=True
    )
    subprocess.run([BIN / "cadenza", "ingest", "--data", data, music], check=True)
    roles = Roles(data)
    try:
        tracks: dict[str, str] = {}
        album = ""
        for title, _ in TRACKS:
            [found], _total = roles.catalog.search("track", title)
            assert isinstance(found, Track) and found.title == title
            tracks[title] = found.uri
            album = found.album.uri
    finally:
        roles.close()

    procs: list[subprocess.Popen[str]] = []
    try:
        port = _free_port()
        service = subprocess.Popen(
            [BIN / "cadenza", "serve", "--data", data, "--listen", f"127.0.0.1:{port}", *NO_EXTRAS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(service)
        _read_until(service, r"listening on .*:(\d+)$")
        _drain(service)
        alsa = AlsaSandbox(tmp / "alsa")
        config = tmp / "cadenzad.toml"
        config.write_text(
            f"""
[speaker]
name = "{SPEAKER_NAME}"
state_dir = "{tmp / "state"}"
cache_dir = "{tmp / "cache"}"
[service]
address = "127.0.0.1:{port}"
mdns = false
username = "demo"
password_file = "{pw}"
[audio]
device = "null"
volume = 50
[control]
listen = "127.0.0.1:0"
advertise = false
"""
        )
        speaker = subprocess.Popen(
            [BIN / "cadenzad", "--config", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=alsa.env(),
        )
        procs.append(speaker)
        url = _read_until(speaker, r"control API on (http://\S+)").group(1)
        _drain(speaker)
        yield System(url, tracks, album)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def cadenza(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `cadenza` with ``args``; CADENZA_* come only from ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    return subprocess.run(
        [str(BIN / "cadenza"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=base | (env or {}),
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    done = cadenza(*args, env=env)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def state(system: System) -> dict[str, Any]:
    r = httpx.get(system.url + "api/v1/state", timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def wait_state(
    system: System, cond: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    st = state(system)
    while not cond(st):
        if time.monotonic() > deadline:
            raise AssertionError(f"the state never got there: {st}")
        time.sleep(0.1)
        st = state(system)
    return st


def playing(title: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st["status"] == "playing" and (st["track"] or {}).get("title") == title


requires_system = requires_alsa


# --- the commands against a real speaker --------------------------------------------------------


@requires_system
def test_play_by_search_words_plays_the_first_hit(system: System) -> None:
    out = ok("play", "velvet", "thunder", "--speaker", system.url)
    assert "Velvet Thunder" in out and ARTIST in out
    st = wait_state(system, playing("Velvet Thunder"))
    assert st["track"]["uri"] == system.tracks["Velvet Thunder"]
    # One quoted argument works the same.
    ok("play", "Copper Lantern", "--speaker", system.url)
    wait_state(system, playing("Copper Lantern"))


@requires_system
def test_play_by_uri_and_by_album(system: System) -> None:
    uri = system.tracks["Morning Harbour"]
    out = ok("play", uri, "--speaker", system.url)
    assert "Morning Harbour" in out
    st = wait_state(system, playing("Morning Harbour"))
    assert [t["uri"] for t in st["queue"]] == [uri]

    out = ok("play", system.album, "--speaker", system.url)
    st = wait_state(system, lambda st: st["status"] == "playing" and len(st["queue"]) == 3)
    assert [t["title"] for t in st["queue"]] == [title for title, _ in TRACKS]
    assert st["index"] == 0 and "3 tracks" in out


@requires_system
def test_pause_resume_and_next(system: System) -> None:
    ok("play", system.album, "--speaker", system.url)
    wait_state(system, playing("Copper Lantern"))
    out = ok("pause", "--speaker", system.url)
    assert "paused" in out and "Copper Lantern" in out
    assert state(system)["status"] == "paused"
    out = ok("status", "--speaker", system.url)
    assert "paused" in out and "Copper Lantern" in out
    out = ok("resume", "--speaker", system.url)
    assert "Copper Lantern" in out
    wait_state(system, playing("Copper Lantern"))
    out = ok("next", "--speaker", system.url, "--json")
    assert json.loads(out)["index"] == 1
    st = wait_state(system, playing("Velvet Thunder"))
    assert st["index"] == 1


@requires_system
def test_volume_sets_and_shows(system: System) -> None:
    out = ok("volume", "35", "--speaker", system.url)
    assert out.strip() == "volume 35"
    assert state(system)["volume"] == 35
    assert ok("volume", "--speaker", system.url).strip() == "volume 35"
    data = json.loads(ok("volume", "60", "--speaker", system.url, "--json"))
    assert data["volume"] == 60 == state(system)["volume"]


@requires_system
def test_bad_volume_is_a_usage_error(system: System) -> None:
    before = state(system)["volume"]
    done = cadenza("volume", "150", "--speaker", system.url)
    assert done.returncode == 2
    assert "0..100" in done.stderr and "150" in done.stderr
    done = cadenza("volume", "loud", "--speaker", system.url)
    assert done.returncode == 2 and "loud" in done.stderr
    assert state(system)["volume"] == before


@requires_system
def test_status_human_and_json(system: System) -> None:
    ok("play", "Morning Harbour", "--speaker", system.url)
    wait_state(system, playing("Morning Harbour"))
    ok("volume", "40", "--speaker", system.url)
    out = ok("status", "--speaker", system.url)
    first = out.splitlines()[0]
    assert first.startswith("▶ Morning Harbour — " + ARTIST), out
    assert re.search(r"\(\d+:\d\d / 0:40\)", first), out
    assert "volume 40" in first and f"speaker {SPEAKER_NAME}" in first
    assert "session" not in out  # online: nothing to say
    data = json.loads(ok("status", "--json", "--speaker", system.url))
    assert data["status"] == "playing"
    assert data["track"]["title"] == "Morning Harbour"
    assert data["track"]["uri"] == system.tracks["Morning Harbour"]
    assert data["volume"] == 40 and data["name"] == SPEAKER_NAME
    assert data["session"]["state"] == "online"


@requires_system
def test_queue_lists_tracks_and_marks_the_playing_one(system: System) -> None:
    ok("play", system.album, "--speaker", system.url)
    wait_state(system, playing("Copper Lantern"))
    ok("next", "--speaker", system.url)
    wait_state(system, playing("Velvet Thunder"))
    lines = ok("queue", "--speaker", system.url).splitlines()
    assert len(lines) == 3, lines
    for n, (line, (title, _)) in enumerate(zip(lines, TRACKS, strict=True), 1):
        assert f"{n}. {title} — {ARTIST}" in line and line.endswith("0:40")
        assert line.startswith("▶") == (n == 2), lines
    data = json.loads(ok("queue", "--json", "--speaker", system.url))
    assert [t["title"] for t in data["queue"]] == [title for title, _ in TRACKS]
    assert data["index"] == 1 and data["track"]["title"] == "Velvet Thunder"


@requires_system
def test_speaker_from_the_environment(system: System) -> None:
    root = system.url.rstrip("/")
    for form in (root, root + "/api/v1", root.removeprefix("http://")):
        out = ok("status", env={"CADENZA_SPEAKER": form})
        assert f"speaker {SPEAKER_NAME}" in out


@requires_system
def test_unknown_uri_is_the_apis_404(system: System) -> None:
    missing = "cadenza:track:" + "0" * 22
    done = cadenza("play", missing, "--speaker", system.url)
    assert done.returncode == 1, done
    assert done.stderr.startswith("cadenza: ") and f"unknown track: {missing}" in done.stderr
    assert done.stdout == ""


@requires_system
def test_no_search_hit_and_malformed_links(system: System) -> None:
    done = cadenza("play", "zzyzx qwertyuiop", "--speaker", system.url)
    assert done.returncode == 1
    assert "no track matches 'zzyzx qwertyuiop'" in done.stderr
    done = cadenza("play", "cadenza:track:short", "--speaker", system.url)
    assert done.returncode == 2 and "22-character" in done.stderr
    # A search link searches.
    ok("play", "cadenza:search:velvet+thunder", "--speaker", system.url)
    wait_state(system, playing("Velvet Thunder"))


def test_unreachable_speaker_is_named() -> None:
    done = cadenza("status", "--speaker", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.startswith("cadenza: ") and "http://127.0.0.1:9" in done.stderr


# --- HTTP errors, against a stand-in speaker ------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        body = b'{"error": {"status": 401, "message": "this needs a token: pair first"}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_speaker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_token_is_sent_and_401_explains_pairing(refusing_speaker: str) -> None:
    done = cadenza("status", "--speaker", refusing_speaker, env={"CADENZA_TOKEN": "t0ken"})
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "cadenza: this needs a token: pair first"
    assert "pair" in done.stderr and "--token" in done.stderr and "127.0.0.1" in done.stderr
    assert _Recorder.seen[-1]["Authorization"] == "Bearer t0ken"
    cadenza("status", "--speaker", refusing_speaker, "--token", "other")
    assert _Recorder.seen[-1]["Authorization"] == "Bearer other"
    cadenza("status", "--speaker", refusing_speaker)
    assert "Authorization" not in _Recorder.seen[-1]


def test_a_silent_speaker_times_out_naming_its_url() -> None:
    with socket.socket() as listener:  # accepts (in the kernel), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with control.Api(Target(url), None, timeout=0.5) as api:
            with pytest.raises(CliError) as caught:
                api.call("GET", "/state")
    assert caught.value.message == f"the speaker at {url} did not answer within 0.5 s"
    assert caught.value.code == 1
    assert control.REQUEST_TIMEOUT == 10


# --- choosing a speaker (pure) ----------------------------------------------------------------


def _info(instance: str, address: str, port: int = 4080, **txt: str) -> ServiceInfo:
    props = {"id": f"id-{instance.lower()}", "name": instance, "api": "1", "path": "/api/v1"}
    props |= {"pairing": "token", "model": "cadenza"} | txt
    return ServiceInfo(
        type="_cadenza._tcp.local.",
        name=instance,
        host="box.local.",
        addresses=(address,),
        port=port,
        properties=props,
    )


KITCHEN = control.from_service(_info("Kitchen", "192.168.1.10"))
KIDS = control.from_service(_info("Kids Room", "192.168.1.11", 4081, pairing="open"))
LIVING = control.from_service(_info("Living Room", "192.168.1.12"))
LOCAL = Target("http://127.0.0.1:4080", name="Here", id="id-here")


def test_from_service_reads_the_txt_record() -> None:
    assert KITCHEN.url == "http://192.168.1.10:4080"
    assert KITCHEN.api_url == "http://192.168.1.10:4080/api/v1"
    assert (KITCHEN.name, KITCHEN.id, KITCHEN.pairing) == ("Kitchen", "id-kitchen", "token")
    assert KIDS.url == "http://192.168.1.11:4081" and KIDS.pairing == "open"
    renamed = control.from_service(_info("Kitchen-2", "10.0.0.1", name="Kitchen"))
    assert renamed.name == "Kitchen" and renamed.instance == "Kitchen-2"
    v6 = control.from_service(
        ServiceInfo("_cadenza._tcp.local.", "V6", None, ("fe80::1", "fd00::5"), 4080, {})
    )
    assert v6.url == "http://[fd00::5]:4080" and v6.name == "V6" and v6.api_path == "/api/v1"


def test_speaker_url_forms() -> None:
    url = control.speaker_url
    assert url("http://10.0.0.5:4080") == "http://10.0.0.5:4080"
    assert url("http://10.0.0.5:4080/") == "http://10.0.0.5:4080"
    assert url("http://10.0.0.5:4080/api/v1/") == "http://10.0.0.5:4080"
    assert url("HTTP://Speaker.local:4080") == "http://Speaker.local:4080"
    assert url("https://proxy.example/kitchen/api/v1") == "https://proxy.example/kitchen"
    assert url("10.0.0.5:4080") == "http://10.0.0.5:4080"
    assert url("[fd00::5]:4080") == "http://[fd00::5]:4080"
    assert url("kitchen.local:4080") == "http://kitchen.local:4080"
    for name in ("Kitchen", "Living Room", "kids", "http://", "http://host:99999"):
        assert url(name) is None, name


def test_match_speaker_by_name_instance_id_or_prefix() -> None:
    found = [KITCHEN, KIDS, LIVING]
    match = control.match_speaker
    assert match("kitchen", found) is KITCHEN
    assert match("  LIVING ROOM ", found) is LIVING
    assert match("id-kids room", found) is KIDS
    assert match("liv", found) is LIVING
    with pytest.raises(CliError) as caught:
        match("ki", found)  # Kitchen and Kids Room
    assert caught.value.code == 2 and len(caught.value.hints) == 2
    with pytest.raises(CliError) as caught:
        match("garage", found)
    assert caught.value.code == 1 and "garage" in caught.value.message
    assert any("Kitchen (http://192.168.1.10:4080)" in h for h in caught.value.hints)
    with pytest.raises(CliError) as caught:
        match("garage", [])
    assert caught.value.code == 1 and "--speaker http://" in caught.value.message
    twins = [KITCHEN, control.from_service(_info("Kitchen", "192.168.1.20", id="other"))]
    with pytest.raises(CliError) as caught:
        match("Kitchen", twins)
    assert caught.value.code == 2 and "2 speakers match" in caught.value.message


class _Calls:
    def __init__(self, found: list[Target], local: Target | None) -> None:
        self.found, self.local = found, local
        self.browsed = self.probed = 0
        self.stopped_early: bool | None = None

    def browse(self, done: Callable[[list[Target]], bool]) -> list[Target]:
        self.browsed += 1
        seen: list[Target] = []
        for target in self.found:  # as mDNS would find them, one by one
            seen.append(target)
            if done(seen):
                self.stopped_early = True
                return seen
        self.stopped_early = False
        return seen

    def probe(self) -> Target | None:
        self.probed += 1
        return self.local


def _choose(wanted: str | None, found: list[Target], local: Target | None) -> tuple[Any, _Calls]:
    calls = _Calls(found, local)
    try:
        return control.choose_speaker(wanted, calls.browse, calls.probe), calls
    except CliError as exc:
        return exc, calls


def test_choose_a_url_without_looking() -> None:
    chosen, calls = _choose("http://10.1.2.3:4080/", [KITCHEN], LOCAL)
    assert chosen == Target("http://10.1.2.3:4080") and calls.browsed == calls.probed == 0


def test_choose_by_name_stops_browsing_once_found() -> None:
    chosen, calls = _choose("Kids Room", [KITCHEN, KIDS, LIVING], LOCAL)
    assert chosen is KIDS and calls.stopped_early and calls.probed == 0
    chosen, calls = _choose("kid", [KITCHEN, KIDS, LIVING], LOCAL)  # prefix: browse it all
    assert chosen is KIDS and calls.stopped_early is False
    chosen, calls = _choose("Garage", [KITCHEN], LOCAL)  # a name never falls back to local
    assert isinstance(chosen, CliError) and chosen.code == 1 and calls.probed == 0


def test_choose_without_a_name() -> None:
    chosen, calls = _choose(None, [KITCHEN], LOCAL)  # the only one on the LAN
    assert chosen is KITCHEN and calls.probed == 0
    chosen, calls = _choose(None, [KITCHEN, LIVING], LOCAL)  # several: the local one
    assert chosen is LOCAL and calls.probed == 1
    chosen, calls = _choose(None, [], LOCAL)
    assert chosen is LOCAL
    chosen, _ = _choose(None, [KITCHEN, LIVING], None)
    assert isinstance(chosen, CliError) and chosen.code == 2
    assert "2 speakers on the LAN" in chosen.message and "--speaker" in chosen.message
    assert [h.strip() for h in chosen.hints] == [KITCHEN.label, LIVING.label]
    chosen, _ = _choose(None, [], None)
    assert isinstance(chosen, CliError) and chosen.code == 1
    assert "no speaker found" in chosen.message and control.LOCAL_URL in chosen.message
    chosen, _ = _choose("  ", [KITCHEN], LOCAL)
    assert isinstance(chosen, CliError) and chosen.code == 2


def test_a_speaker_on_this_host() -> None:
    assert control.is_on_this_host(KITCHEN, ["10.0.0.1", "192.168.1.10"])
    assert not control.is_on_this_host(KITCHEN, ["192.168.1.11"])
    assert not control.is_on_this_host(LOCAL, ["127.0.0.1"])  # not found over mDNS


# --- formatting (pure) --------------------------------------------------------------------------

TRACK = {
    "uri": "cadenza:track:" + "1" * 22,
    "title": "Song",
    "artists": ["A", "B"],
    "album": "Record",
    "duration_ms": 225_000,
}


def test_format_status() -> None:
    st: dict[str, Any] = {
        "status": "playing",
        "track": TRACK,
        "position_ms": 83_400,
        "volume": 40,
        "name": "Kitchen",
        "queue": [TRACK],
        "index": 0,
        "session": {"state": "online"},
        "error": None,
    }
    assert control.format_status(st) == "▶ Song — A, B (1:23 / 3:45) · volume 40 · speaker Kitchen"
    st |= {"status": "paused", "queue": [TRACK, TRACK, TRACK], "index": 1}
    st |= {"session": {"state": "offline", "error": "connection refused"}, "error": "underrun"}
    assert control.format_status(st).splitlines() == [
        "⏸ paused: Song — A, B (1:23 / 3:45) · volume 40 · speaker Kitchen",
        "track 2 of 3",
        "session offline: connection refused",
        "error: underrun",
    ]
    stopped = {"status": "stopped", "track": None, "volume": 5, "session": {"state": "online"}}
    assert control.format_status(stopped) == "■ stopped, nothing playing · volume 5"
    assert control.clock(3_725_000) == "1:02:05" and control.clock(None) == "0:00"


def test_format_queue() -> None:
    other = TRACK | {"title": "Other", "artists": [], "duration_ms": None}
    view = {"queue": [TRACK, other] * 5, "index": 9, "track": other, "repeat": "all"}
    lines = control.format_queue(view).splitlines()
    assert lines[0] == "   1. Song — A, B  3:45"
    assert lines[9] == "▶ 10. Other"
    assert lines[-1] == "repeat all"
    assert control.format_queue({"queue": [], "index": -1}) == "the queue is empty"
    # Stopped at the end: nothing is marked.
    assert "▶" not in control.format_queue({"queue": [TRACK], "index": 0, "track": None})


def test_format_speakers() -> None:
    assert control.format_speakers([KITCHEN, KIDS]).splitlines() == [
        "Kitchen    192.168.1.10:4080  id id-kitchen    pairing token",
        "Kids Room  192.168.1.11:4081  id id-kids room  pairing open",
    ]
    data = control.speaker_json(KITCHEN)
    assert data["address"] == "192.168.1.10" and data["port"] == 4080
    assert data["api_url"] == "http://192.168.1.10:4080/api/v1" and data["pairing"] == "token"
    json.dumps(data)
