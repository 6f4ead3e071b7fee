"""A service and several speakers, each in its own network namespace on one bridge.

    with Lan(4) as lan:
        lab = P2PLab(lan, tmp_path, tracks=make_tracks(tmp_path, [("a", 12.0, 440.0)]))
        lab.start_service()
        a = lab.start_speaker(1, holds=["a"])
        b = lab.start_speaker(2, device="paced")
        b.play([lab.tracks["a"].uri]); state = b.wait_finished()

Used by the namespace tests (tests/network/test_p2p_lan.py) and bench/p2p.py. Speakers are
real ``cadenzad`` processes (or a modified one: ``prelude`` is Python run before its main);
the test talks to their control API from a thread inside their namespace (Host.call).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alsa import AlsaSandbox
from netns import Host, Lan

BIN = Path(sys.executable).parent
PASSWORD = "p2p lab password"
AP_PORT = 4070
P2P_PORT = 4090
CONTROL_PORT = 4080


@dataclass
class LabTrack:
    name: str
    uri: str
    rate: int
    file_id: str  # the 160 kbps file
    ogg: bytes
    manifest: bytes
    duration_ms: int


def make_music(folder: Path, specs: Sequence[tuple[str, float, float]], rate: int = 44100) -> Path:
    """FLAC files with a tone and some noise (noise makes files big enough to stream)."""
    import numpy as np
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    for n, (name, seconds, freq) in enumerate(specs, 1):
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.random.default_rng(n).standard_normal(
            len(t)
        )
        soundfile.write(folder / f"{n:02d} {name}.flac", np.stack([wave, wave[::-1]], 1), rate)
    return folder


@dataclass
class Speaker:
    index: int
    host: Host
    process: subprocess.Popen[str]
    alsa: AlsaSandbox
    log_path: Path
    state_dir: Path
    cache_dir: Path

    @property
    def url(self) -> str:
        # Loopback inside the speaker's own namespace: the owner's side, trusted.
        return f"http://127.0.0.1:{CONTROL_PORT}"

    def http(self, method: str, path: str, **kw: Any) -> httpx.Response:
        def go() -> httpx.Response:
            with httpx.Client(base_url=self.url, timeout=30) as client:
                return client.request(method, path, **kw)

        response: httpx.Response = self.host.call(go)
        return response

    def state(self) -> dict[str, Any]:
        r = self.http("GET", "/api/v1/state")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def play(self, uris: list[str]) -> None:
        r = self.http("POST", "/api/v1/play", json={"uris": uris})
        assert r.status_code == 200, r.text

    def wait_finished(self, n_tracks: int = 1, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.state()
            if state["status"] == "stopped" and state["index"] == n_tracks - 1:
                return state
            time.sleep(0.2)
        raise AssertionError(f"playback did not finish: {state}\n{self.log()[-3000:]}")

    def wait_until(self, predicate: Any, timeout: float = 60, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.state()
            if predicate(state):
                return state
            time.sleep(0.1)
        raise AssertionError(f"never {what}: {state}\n{self.log()[-3000:]}")

    def paced_capture(self, expected_bytes: int, timeout: float = 5.0, rate: int = 44100) -> bytes:
        """What reached the ``paced`` PCM; its pipe (pv) holds ~0.4 s beyond what ALSA
        accounts for, so wait (briefly) for it to drain."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.alsa.capture(rate, "paced")
            if len(data) >= expected_bytes:
                return data
            time.sleep(0.1)
        return self.alsa.capture(rate, "paced")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@dataclass
class P2PLab:
    lan: Lan
    tmp: Path
    music: Path
    tracks: dict[str, LabTrack] = field(default_factory=dict)
    service: subprocess.Popen[str] | None = None
    speakers: dict[int, Speaker] = field(default_factory=dict)

    @property
    def service_host(self) -> Host:
        return self.lan.hosts[0]

    @property
    def data(self) -> Path:
        return self.tmp / "service"

    def prepare(self) -> None:
        """Ingest the music and add one user per speaker host."""
        self.ingest(self.tmp, self.music, len(self.lan.hosts))
        self.load_tracks()

    @staticmethod
    def ingest(tmp: Path, music: Path, hosts: int) -> Path:
        """A service data directory under ``tmp`` with ``music`` and users owner1..."""
        data = tmp / "service"
        pw = tmp / "password"
        pw.write_text(PASSWORD + "\n")
        for index in range(1, hosts):
            subprocess.run(
                [BIN / "cadenza", "user", "add", f"owner{index}", "--data", data,
                 "--password-file", pw],
                check=True,
                capture_output=True,
            )  # fmt: skip
        subprocess.run(
            [BIN / "cadenza", "ingest", "--data", data, music], check=True, capture_output=True
        )
        return data

    @staticmethod
    def catalogue(data: Path) -> tuple[list[str], dict[str, float]]:
        """Track names in album order, and their durations in seconds."""
        from cadenza.service.serve import Roles

        roles = Roles(data)
        try:
            tracks = [(_name(t.title), t.duration_ms / 1000) for t in _all_tracks(roles)]
        finally:
            roles.close()
        tracks.sort(key=lambda t: _natural(t[0]))
        return [n for n, _ in tracks], dict(tracks)

    def load_tracks(self) -> None:
        from cadenza.service.serve import Roles

        roles = Roles(self.data)
        try:
            for found in _all_tracks(roles):
                ref = next(f for f in found.files if f.bitrate == 160)
                name = _name(found.title)
                self.tracks[name] = LabTrack(
                    name,
                    found.uri,
                    found.sample_rate,
                    ref.file_id,
                    roles.storage.read_all(ref.file_id),
                    roles.storage.manifest_bytes(ref.file_id),
                    found.duration_ms,
                )
        finally:
            roles.close()

    def start_service(self) -> None:
        self.service = self.service_host.popen(
            [
                BIN / "cadenza",
                "serve",
                "--data",
                self.data,
                "--listen",
                f"0.0.0.0:{AP_PORT}",
                "--no-http",
                "--no-mdns",
            ],
            stdout=open(self.tmp / "service.log", "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_for_text(self.tmp / "service.log", r"listening on", 30)

    def service_log(self) -> str:
        return (self.tmp / "service.log").read_text(errors="replace")

    def start_speaker(
        self,
        index: int,
        *,
        holds: Iterable[str] = (),
        device: str = "default",
        p2p: str = "",
        streaming: str = "first_piece_seconds = 3\nahead_seconds = 3\n",
        prelude: str = "",
        lan_discovery: bool = True,
    ) -> Speaker:
        host = self.lan.hosts[index]
        base = self.tmp / f"speaker{index}"
        state_dir, cache_dir = base / "state", base / "cache"
        state_dir.mkdir(parents=True, exist_ok=True)
        if holds:
            self._fill_cache(cache_dir, holds)
        alsa = AlsaSandbox(base / "alsa")
        config = base / "cadenzad.toml"
        config.write_text(
            f"""
[speaker]
name = "speaker{index}"
state_dir = "{state_dir}"
cache_dir = "{cache_dir}"
[service]
address = "{self.service_host.address}:{AP_PORT}"
mdns = false
username = "owner{index}"
password_file = "{self.tmp / "password"}"
[audio]
device = "{device}"
volume = 100
normalisation = false
[control]
listen = "0.0.0.0:{CONTROL_PORT}"
advertise = false
[cache]
max_size = "200M"
[streaming]
{streaming}
[p2p]
port = {P2P_PORT}
lan_discovery = {"true" if lan_discovery else "false"}
{p2p}
"""
        )
        log_path = base / "cadenzad.log"
        if prelude:
            argv = [sys.executable, "-c", prelude + _RUN_MAIN, "--config", str(config)]
        else:
            argv = [str(BIN / "cadenzad"), "--config", str(config)]
        process = host.popen(
            argv,
            stdout=open(log_path, "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            text=True,
            env=alsa.env(),
        )
        speaker = Speaker(index, host, process, alsa, log_path, state_dir, cache_dir)
        _wait_for_text(log_path, r"control API on", 30, process)
        speaker.wait_until(
            lambda s: s["session"]["state"] == "online", 30, "logged in to the service"
        )
        self.speakers[index] = speaker
        return speaker

    def _fill_cache(self, cache_dir: Path, names: Iterable[str]) -> None:
        from cadenza.cache.store import Cache
        from cadenza.protocol.manifest import ManifestVerifier
        from cadenza.service.keys import load_or_create_signing_key

        key = load_or_create_signing_key(self.data / "keys" / "signing.key").public_key()
        cache = Cache(cache_dir, capacity=200 << 20, verifier=ManifestVerifier([key]))
        try:
            for name in names:
                t = self.tracks[name]
                assert cache.put(t.file_id, t.manifest, t.ogg)
        finally:
            cache.close()

    def close(self) -> None:
        for speaker in self.speakers.values():
            speaker.stop()
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            self.service.wait(10)


_RUN_MAIN = """
import sys
from cadenza.cli.daemon import main
sys.exit(main(sys.argv[1:]))
"""


def _name(title: str) -> str:
    return re.sub(r"^\d+\s*", "", title)


def _natural(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _all_tracks(roles: Any) -> list[Any]:
    rows = roles.db.call(lambda c: c.execute("SELECT id FROM catalog_tracks").fetchall())
    return [roles.catalog.lookup(f"cadenza:track:{r['id']}") for r in rows]


def _wait_for_text(
    path: Path, pattern: str, timeout: float, process: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text(errors="replace")):
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    text = path.read_text(errors="replace") if path.exists() else ""
    raise AssertionError(f"never saw {pattern!r} in {path}:\n{text[-3000:]}")
