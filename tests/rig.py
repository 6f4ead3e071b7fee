"""A service and one speaker on loopback as real processes, for control-plane tests.

with Rig(tmp_path) as rig:        # generated tracks ingested, speaker logged in
    httpx.get(rig.url + "/api/v1/state")
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from alsa import AlsaSandbox

BIN = Path(sys.executable).parent
PASSWORD = "rig password"
SPECS = (("Morning Light", 6.0, 440.0), ("Evening Tide", 6.0, 330.0), ("Night Drive", 6.0, 550.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"never saw {pattern!r}:\n{''.join(seen)}")


class Rig:
    def __init__(
        self,
        tmp: Path,
        *,
        album: str = "Rig Album",
        extra_config: str = "",
        long_tracks: bool = False,
        p2p_port: int = 0,
    ) -> None:
        self.long_tracks = long_tracks
        self.p2p_port = p2p_port
        self.tmp = tmp
        self.album = album
        self.extra_config = extra_config
        self.procs: list[subprocess.Popen[str]] = []
        self.url = ""
        self.uris: dict[str, str] = {}
        self.service_address = ""

    def __enter__(self) -> Rig:
        import numpy as np
        import soundfile

        music = self.tmp / "music"
        music.mkdir(parents=True)
        for n, (title, seconds, freq) in enumerate(SPECS, 1):
            seconds = 90.0 if self.long_tracks else seconds
            rate = 44100
            t = np.arange(int(rate * seconds)) / rate
            wave = 0.3 * np.sin(2 * np.pi * freq * t)
            path = music / f"{n:02d} {title}.flac"
            soundfile.write(path, np.stack([wave, wave], 1), rate)
            import mutagen.flac

            tags = mutagen.flac.FLAC(path)
            tags["title"], tags["artist"], tags["album"] = title, "Rig Band", self.album
            tags["tracknumber"] = str(n)
            tags.save()
        data = self.tmp / "service"
        pw = self.tmp / "password"
        pw.write_text(PASSWORD + "\n")
        cadenza = str(BIN / "cadenza")
        subprocess.run(
            [cadenza, "user", "add", "owner", "--data", data, "--password-file", pw],
            check=True,
            capture_output=True,
        )
        subprocess.run([cadenza, "ingest", "--data", data, music], check=True, capture_output=True)
        port = free_port()
        service = subprocess.Popen(
            [cadenza, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", "--no-http",
             "--no-mdns"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.procs.append(service)
        read_until(service, r"listening on")
        self.service_address = f"127.0.0.1:{port}"
        alsa = AlsaSandbox(self.tmp / "alsa")
        config = self.tmp / "cadenzad.toml"
        config.write_text(
            f"""
[speaker]
name = "Rig"
state_dir = "{self.tmp / "state"}"
cache_dir = "{self.tmp / "cache"}"
[service]
address = "127.0.0.1:{port}"
mdns = false
username = "owner"
password_file = "{pw}"
[audio]
device = "null"
[control]
listen = "127.0.0.1:0"
advertise = false
[p2p]
lan_discovery = false
port = {self.p2p_port}
{self.extra_config}
"""
        )
        speaker = subprocess.Popen(
            [str(BIN / "cadenzad"), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=alsa.env(),
        )
        self.procs.append(speaker)
        self.url = read_until(speaker, r"control API on (http://\S+)").group(1).rstrip("/")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.get("/api/v1/state")["session"]["state"] == "online":
                break
            time.sleep(0.1)
        for title, _, _ in SPECS:
            items = self.get("/api/v1/search", params={"q": title})["items"]
            self.uris[title] = items[0]["uri"]
        return self

    def get(self, path: str, **kw: Any) -> Any:
        r = httpx.get(self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
