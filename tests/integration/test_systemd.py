"""`cadenzad` under a real NOTIFY_SOCKET (a datagram socket this test binds, as systemd does):
READY only once the API listens (and without waiting for the service), STATUS says what it
does, WATCHDOG pings stop while the audio thread is wedged, RELOADING/READY on SIGHUP without
interrupting playback, STOPPING and exit code 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from alsa import AlsaSandbox, requires_alsa, requires_pv
from rig import Rig

pytestmark = [requires_alsa, requires_pv]

BIN = Path(sys.executable).parent
WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@dataclass
class Notifications:
    sock: socket.socket
    got: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self.lock:
                self.got.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        with self.lock:
            return [m for _, m in self.got]

    def wait_for(self, text: str, timeout: float = 30, after: int = 0) -> int:
        """Index of the first message (from ``after`` on) containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.messages()[after:], after):
                if text in m:
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in {self.messages()[after:]}")

    def watchdogs_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t, m in self.got if start <= t <= end and "WATCHDOG=1" in m)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    # A service with tracks (the speaker under test is started by the test itself).
    with Rig(tmp_path / "rig", long_tracks=True) as made:
        made.procs[-1].send_signal(signal.SIGTERM)  # the rig's own speaker is not needed
        made.procs[-1].wait(20)
        yield made


def start(tmp_path: Path, rig: Rig, notify: str, device: str = "paced") -> subprocess.Popen[str]:
    alsa = AlsaSandbox(tmp_path / "alsa")
    service = rig.service_address
    config = tmp_path / "cadenzad.toml"
    config.write_text(
        f"""
[speaker]
name = "Notified"
state_dir = "{tmp_path / "state"}"
cache_dir = "{tmp_path / "cache"}"
[service]
address = "{service}"
mdns = false
username = "owner"
password_file = "{rig.tmp / "password"}"
[audio]
device = "{device}"
max_volume = 100
[control]
listen = "127.0.0.1:0"
advertise = false
[p2p]
enabled = false
"""
    )
    env = alsa.env() | {"NOTIFY_SOCKET": notify, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [str(BIN / "cadenzad"), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_notify_ready_status_watchdog_reload_stop(tmp_path: Path, rig: Rig) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    notes = Notifications(sock)
    threading.Thread(target=notes.run, daemon=True).start()
    daemon = start(tmp_path, rig, path)
    output: list[str] = []
    url_box: list[str] = []

    def read() -> None:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            output.append(line)
            if "control API on " in line:
                url_box.append(line.split("control API on ")[1].strip().rstrip("/"))

    threading.Thread(target=read, daemon=True).start()
    try:
        # READY=1: by then the API answers at once (no retry), so it listened first.
        ready = notes.wait_for("READY=1")
        deadline = time.monotonic() + 5
        while not url_box and time.monotonic() < deadline:
            time.sleep(0.01)
        url = url_box[0]
        assert httpx.get(url + "/api/v1/info", timeout=5).status_code == 200
        assert not any("READY=1" in m for m in notes.messages()[:ready])

        # Playing: STATUS says so, with the title and where it comes from.
        httpx.post(
            url + "/api/v1/play", json={"uri": rig.uris["Morning Light"]}, timeout=30
        ).raise_for_status()
        i = notes.wait_for("STATUS=playing Morning Light")
        assert "from peers" in notes.messages()[i] or "from the cache" in notes.messages()[i]

        # The watchdog is pinged while all is well...
        time.sleep(2.0)
        now = time.monotonic()
        assert notes.watchdogs_between(now - 2.0, now) >= 2
        # ...and not while the audio thread is wedged: freeze the paced PCM's pipe (pv)
        # so the player's ALSA write blocks.
        pv = [p for p in psutil.Process(daemon.pid).children(recursive=True) if p.name() == "pv"]
        assert pv, "no pv process under the daemon"
        for p in pv:
            p.suspend()
        time.sleep(1.5)  # the pipe fills, the write blocks
        frozen_from = time.monotonic()
        time.sleep(3.0)
        frozen_to = time.monotonic()
        assert notes.watchdogs_between(frozen_from, frozen_to) == 0
        for p in pv:
            p.resume()
        resumed = time.monotonic()
        time.sleep(2.0)
        assert notes.watchdogs_between(resumed, time.monotonic()) >= 2

        # SIGHUP: RELOADING=1 then READY=1; playback goes on (no new underrun, same track).
        before = httpx.get(url + "/api/v1/state", timeout=10).json()
        config = tmp_path / "cadenzad.toml"
        config.write_text(
            config.read_text()
            .replace("max_volume = 100", "max_volume = 70")
            .replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"')
        )
        mark = len(notes.messages())
        daemon.send_signal(signal.SIGHUP)
        reloading = notes.wait_for("RELOADING=1", after=mark)
        notes.wait_for("READY=1", after=reloading)
        time.sleep(1.0)
        after = httpx.get(url + "/api/v1/state", timeout=10).json()
        assert after["status"] == "playing" and after["track"] == before["track"]
        assert after["position_ms"] > before["position_ms"]
        assert after["underruns"] == before["underruns"]
        assert after["max_volume"] == 70  # applied live
        log = "".join(output)
        assert "next restart: control.listen" in log  # named, not applied

        # SIGTERM: STOPPING=1 and a clean exit.
        mark = len(notes.messages())
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        notes.wait_for("STOPPING=1", after=mark, timeout=5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sock.close()
        os.unlink(path)


def test_ready_does_not_wait_for_the_service(tmp_path: Path) -> None:
    """No service at all: READY=1 all the same, and STATUS says it is offline."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    notes = Notifications(sock)
    threading.Thread(target=notes.run, daemon=True).start()

    class Nowhere:
        service_address = "127.0.0.1:9"
        tmp = tmp_path
        uris: dict[str, str] = {}

    (tmp_path / "password").write_text("x\n")
    daemon = start(tmp_path, Nowhere(), path, device="null")  # type: ignore[arg-type]
    try:
        notes.wait_for("READY=1", timeout=20)
        notes.wait_for("offline: retrying access point in", timeout=20)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sock.close()
