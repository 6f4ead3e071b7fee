"""The control plane seen from the LAN: a phone in another namespace (not loopback, so not
trusted), pairing confirmed by the owner, scoped and revoked tokens, Host/Origin checks, and
avahi-browse (a real mDNS client nobody here wrote) seeing the speaker and its renames."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from netns import NETNS_MARKS, Host, Lan

pytestmark = NETNS_MARKS

BIN = Path(sys.executable).parent
PORT = 4080


def start_speaker(host: Host, tmp: Path, name: str) -> subprocess.Popen[bytes]:
    """A real cadenzad in ``host`` (no service: its address leads nowhere), API on PORT."""
    base = tmp / name
    base.mkdir()
    config = base / "cadenzad.toml"
    config.write_text(
        f"""
[speaker]
name = "{name}"
state_dir = "{base / "state"}"
cache_dir = "{base / "cache"}"
[service]
address = "127.0.0.1:9"
mdns = false
[audio]
device = "null"
[control]
listen = "0.0.0.0:{PORT}"
advertise = true
[p2p]
enabled = false
"""
    )
    log_path = base / "cadenzad.log"
    with open(log_path, "w") as log:
        daemon = host.popen(
            [str(BIN / "cadenzad"), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while "control API on" not in log_path.read_text():
        assert daemon.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return daemon


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[Lan, Any]]:
    with Lan(3) as made:
        daemon = start_speaker(made.hosts[0], tmp_path, "Kitchen")
        try:
            yield made, daemon
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)


def call(host: Host, method: str, url: str, **kw: Any) -> httpx.Response:
    def go() -> httpx.Response:
        return httpx.request(method, url, timeout=10, **kw)

    response: httpx.Response = host.call(go)
    return response


def test_lan_clients_need_a_token_the_owner_confirms_and_can_revoke(
    lan: tuple[Lan, Any],
) -> None:
    made, _ = lan
    speaker, phone = made.hosts[0], made.hosts[1]
    base = f"http://{speaker.address}:{PORT}/api/v1"
    owner = f"http://127.0.0.1:{PORT}/api/v1"  # loopback on the speaker itself: trusted

    # Without a token: who it is, yes; anything else, no.
    assert call(phone, "GET", base + "/info").json()["pairing"] == "token"
    r = call(phone, "GET", base + "/state")
    assert r.status_code == 401 and "pair" in r.json()["error"]["message"]
    assert call(phone, "POST", base + "/pause").status_code == 401

    # Asking to pair gives a code; nothing happens until the owner confirms.
    ask = call(phone, "POST", base + "/pairing", json={"name": "Ana's phone", "scope": "playback"})
    assert ask.status_code == 201
    rid, code = ask.json()["id"], ask.json()["code"]
    assert re.fullmatch(r"\d{6}", code)
    status = call(phone, "GET", base + f"/pairing/{rid}").json()
    assert status["state"] == "pending" and "token" not in status
    # The phone cannot approve itself.
    assert call(phone, "POST", base + f"/pairing/{rid}/approve").status_code == 401
    assert "token" not in call(phone, "GET", base + f"/pairing/{rid}").json()

    # The owner sees the request (with its code) and approves it.
    pending = call(speaker, "GET", owner + "/pairing").json()["requests"]
    assert [(p["id"], p["code"]) for p in pending] == [(rid, code)]
    assert call(speaker, "POST", owner + f"/pairing/{rid}/approve").status_code == 200
    collected = call(phone, "GET", base + f"/pairing/{rid}").json()
    token = collected["token"]
    assert "token" not in call(phone, "GET", base + f"/pairing/{rid}").json()  # only once

    auth = {"Authorization": f"Bearer {token}"}
    assert call(phone, "GET", base + "/state", headers=auth).status_code == 200
    assert call(phone, "POST", base + "/pause", headers=auth).status_code == 200
    # Playback scope: settings need admin.
    r = call(phone, "PATCH", base + "/settings", headers=auth, json={"name": "Hacked"})
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
    # A made-up token is refused like a revoked one.
    r = call(phone, "GET", base + "/state", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401

    # Foreign Host (DNS rebinding) and foreign Origin (a web page elsewhere): refused even
    # with a good token.
    r = call(phone, "GET", base + "/state", headers=auth | {"Host": "evil.example"})
    assert r.status_code == 421
    r = call(phone, "POST", base + "/pause", headers=auth | {"Origin": "http://evil.example"})
    assert r.status_code == 403 and "Origin" in r.json()["error"]["message"]

    # The owner revokes it: refused from then on.
    tokens = call(speaker, "GET", owner + "/tokens").json()["tokens"]
    assert [t["name"] for t in tokens] == ["Ana's phone"]
    assert call(speaker, "DELETE", owner + f"/tokens/{tokens[0]['id']}").status_code == 200
    r = call(phone, "GET", base + "/state", headers=auth)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    # ...but it may still see who the speaker is and ask to pair again.
    assert call(phone, "GET", base + "/info", headers=auth).status_code == 200
    r = call(phone, "POST", base + "/pairing", headers=auth, json={"name": "Ana again"})
    assert r.status_code == 201

    # A denied request never yields a token.
    ask = call(phone, "POST", base + "/pairing", json={"name": "Stranger", "scope": "admin"})
    rid = ask.json()["id"]
    assert call(speaker, "POST", owner + f"/pairing/{rid}/deny").status_code == 200
    denied = call(phone, "GET", base + f"/pairing/{rid}").json()
    assert denied["state"] == "denied" and "token" not in denied

    # Open mode: any LAN client may drive playback, but still not administer.
    call(speaker, "PATCH", owner + "/settings", json={"open": True}).raise_for_status()
    assert call(phone, "POST", base + "/pause").status_code == 200
    assert call(phone, "PATCH", base + "/settings", json={"open": False}).status_code == 403


def test_oversized_and_malformed_bodies_from_the_lan_get_4xx(lan: tuple[Lan, Any]) -> None:
    made, _ = lan
    speaker, phone = made.hosts[0], made.hosts[1]
    base = f"http://{speaker.address}:{PORT}/api/v1"
    r = call(phone, "POST", base + "/pairing", content=b"{" * 100_000)
    assert r.status_code == 413
    r = call(phone, "POST", base + "/pairing", content=b"{nope")
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = call(phone, "POST", base + "/pairing", json={"name": "\x07bell"})
    assert r.status_code == 400 and "name" in r.json()["error"]["message"]


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


@contextlib.contextmanager
def avahi(host: Host, tmp: Path) -> Iterator[dict[str, str]]:
    """An avahi-daemon inside ``host`` on a D-Bus of its own; yields the environment that
    points avahi-browse at it.

    Nothing is shared with the machine or with another run on it: the bus listens on a socket
    under ``tmp`` (not /run/dbus) and avahi runs in a private mount namespace with its own
    /run/avahi-daemon, so a stale pid file or a second suite running at the same time cannot
    make it refuse to start (it did: "avahi-daemon -D" exited 1 in CI)."""
    socket = tmp / "system_bus_socket"
    config = tmp / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket))
    out = subprocess.run(
        ["dbus-daemon", f"--config-file={config}", "--fork", "--print-pid"],
        capture_output=True,
        text=True,
        check=True,
    )
    bus = int(out.stdout.split()[0])
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket}"}
    log_path = tmp / "avahi.log"
    script = (
        "mount -t tmpfs tmpfs /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot"
    )
    with open(log_path, "w") as log:
        daemon = host.popen(
            ["unshare", "-m", "sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "Server startup complete" not in log_path.read_text():
            said = log_path.read_text()
            assert daemon.poll() is None, f"avahi-daemon exited: {said}"
            assert time.monotonic() < deadline, f"avahi-daemon never started: {said}"
            time.sleep(0.1)
        yield env
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=10)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(bus, signal.SIGTERM)


def browse(host: Host, env: dict[str, str]) -> list[list[str]]:
    out = host.run(
        ["avahi-browse", "-rpt", "_cadenza._tcp"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    ).stdout

    # -p escapes characters in names as \DDD (decimal): "Living\032Room".
    def unescape(field: str) -> str:
        return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), field)

    return [
        [unescape(f) for f in line.split(";")] for line in out.splitlines() if line.startswith("=")
    ]


@pytest.mark.skipif(shutil.which("avahi-browse") is None, reason="needs Debian's avahi-utils")
def test_avahi_browse_sees_the_speaker_and_its_rename(lan: tuple[Lan, Any], tmp_path: Path) -> None:
    made, _ = lan
    speaker, browser = made.hosts[0], made.hosts[2]
    owner = f"http://127.0.0.1:{PORT}/api/v1"
    with avahi(browser, tmp_path) as env:
        deadline = time.monotonic() + 30
        found: list[list[str]] = []
        while time.monotonic() < deadline and not found:
            found = [f for f in browse(browser, env) if f[3] == "Kitchen"]
        assert found, "avahi-browse never resolved the speaker"
        entry = found[0]
        assert entry[7] == speaker.address and entry[8] == str(PORT)
        txt = entry[9]
        for item in ('"name=Kitchen"', '"api=1"', '"path=/api/v1"', '"pairing=token"'):
            assert item in txt, txt
        # Renamed over the API: re-announced under the new name, the old one withdrawn.
        call(speaker, "PATCH", owner + "/settings", json={"name": "Living Room"})
        deadline = time.monotonic() + 30
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = {f[3] for f in browse(browser, env)}
            if "Living Room" in names and "Kitchen" not in names:
                break
        assert "Living Room" in names and "Kitchen" not in names, names


def test_cadenza_speakers_finds_it_over_mdns_and_drives_it(lan: tuple[Lan, Any]) -> None:
    made, _ = lan
    phone = made.hosts[1]
    out = phone.run(
        [str(BIN / "cadenza"), "speakers", "--json", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [s["name"] for s in found] == ["Kitchen"]
    # Driving it from the LAN without a token: refused, with the way to pair.
    r = phone.run(
        [str(BIN / "cadenza"), "pause", "--speaker", "Kitchen"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and "pair" in r.stderr.lower(), r.stderr


def test_a_speaker_lists_the_other_speakers_it_sees(lan: tuple[Lan, Any], tmp_path: Path) -> None:
    made, _ = lan
    kitchen, bedroom_host = made.hosts[0], made.hosts[2]
    bedroom = start_speaker(bedroom_host, tmp_path, "Bedroom")
    try:
        deadline = time.monotonic() + 30
        others: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not others:
            r = call(kitchen, "GET", f"http://127.0.0.1:{PORT}/api/v1/speakers")
            others = r.json()["speakers"]
            time.sleep(0.2)
        assert [o["name"] for o in others] == ["Bedroom"]  # never itself
        assert others[0]["url"] == f"http://{bedroom_host.address}:{PORT}/api/v1"
        assert others[0]["pairing"] == "token"
    finally:
        bedroom.send_signal(signal.SIGTERM)
        assert bedroom.wait(20) == 0
    # Its goodbye on shutdown takes it off the list.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and others:
        others = call(kitchen, "GET", f"http://127.0.0.1:{PORT}/api/v1/speakers").json()["speakers"]
        time.sleep(0.2)
    assert others == []
