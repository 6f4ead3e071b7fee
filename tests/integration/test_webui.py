"""The speaker's web UI in a real browser: Debian's chromium, headless, driven by Playwright,
against a real `cadenza serve` and `cadenzad` over loopback.

Two pages are open on the same speaker. What one does (search, play, pause, volume, queue
edits, rename, pairing) must show on the other, carried only by the speaker's live events.
Screenshots of the main views are saved in ``tmp_path``, their paths printed, and copied to
``$CADENZA_SCREENSHOTS`` when that is set.

Needs: Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package
(its own browser download is never used).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from alsa import AlsaSandbox, requires_alsa

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    requires_alsa,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no {CHROMIUM} (Debian package chromium) for the UI test"
    ),
]
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright Python package is not installed"
)
expect = playwright_api.expect
Page = playwright_api.Page

soundfile = pytest.importorskip("soundfile")
mutagen_flac = pytest.importorskip("mutagen.flac")

BIN = Path(sys.executable).parent
PASSWORD = "web ui secret"
SPEAKER_NAME = "Living Room"
ALBUM = "Harbour Lights"
ARTIST = "The Quiet Testers"
TRACKS = (
    # title, seconds, frequency: long enough to still play while the test looks at it
    ("Paper Lanterns", 60.0, 440.0),
    ("Copper Engine", 30.0, 550.0),
    ("Northern Static", 30.0, 660.0),
    ("Morning Tide", 20.0, 330.0),
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Behaviour, not timing: generous limits for what the speaker and the browser must show.
WAIT_MS = 20_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


@dataclass
class Proc:
    """A process whose output is read all the time (a full pipe would block it)."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _seen: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        checked = 0
        with self._seen:
            while True:
                for line in self.lines[checked:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                checked = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and checked == len(self.lines)):
                    break
                self._seen.wait(min(left, 0.5))
        raise AssertionError(f"never saw {pattern!r}:\n{self.output()}")

    def output(self) -> str:
        with self._seen:
            return "".join(self.lines[-200:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class System:
    url: str
    speaker: Proc
    service: Proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str | Path], env: dict[str, str] | None = None) -> Proc:
    return Proc(
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    )


def make_music(folder: Path) -> None:
    """Tagged FLAC files: one album, one artist, titles worth searching for."""
    folder.mkdir()
    rate = 44100
    for n, (title, seconds, freq) in enumerate(TRACKS, 1):
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
        path = folder / f"{n:02d}.flac"
        soundfile.write(path, np.stack([wave, wave[::-1]], 1), rate)
        tags = mutagen_flac.FLAC(path)
        tags["title"] = title
        tags["artist"] = ARTIST
        tags["album"] = ALBUM
        tags["tracknumber"] = str(n)
        tags["date"] = "2024"
        tags.save()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp_path = tmp_path_factory.mktemp("webui")
    data = tmp_path / "service"
    music = tmp_path / "music"
    make_music(music)
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    cadenza = BIN / "cadenza"
    subprocess.run(
        [cadenza, "user", "add", "demo", "--data", data, "--password-file", pw], check=True
    )
    subprocess.run([cadenza, "ingest", "--data", data, music], check=True, capture_output=True)

    port = free_port()
    procs: list[Proc] = []
    try:
        service = spawn(
            [
                cadenza,
                "serve",
                "--data",
                data,
                "--listen",
                f"127.0.0.1:{port}",
                "--no-http",
                "--no-mdns",
            ]
        )
        procs.append(service)
        service.wait_for(r"listening on .*:(\d+)$")
        alsa = AlsaSandbox(tmp_path / "alsa")
        config = tmp_path / "cadenzad.toml"
        config.write_text(
            f"""
[speaker]
name = "{SPEAKER_NAME}"
state_dir = "{tmp_path / "state"}"
cache_dir = "{tmp_path / "cache"}"
[service]
address = "127.0.0.1:{port}"
mdns = false
username = "demo"
password_file = "{pw}"
[audio]
device = "null"
volume = 60
normalisation = false
[control]
listen = "127.0.0.1:0"
advertise = false
"""
        )
        speaker = spawn([BIN / "cadenzad", "--config", config], env=alsa.env())
        procs.append(speaker)
        url = speaker.wait_for(r"control API on (http://\S+)").group(1)
        yield System(url, speaker, service)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
def browser() -> Iterator[playwright_api.Browser]:
    expect.set_options(timeout=WAIT_MS)
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Screenshots kept in tmp_path (and copied to $CADENZA_SCREENSHOTS when set)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.paths: list[Path] = []

    def take(self, page: Page, name: str) -> None:
        # Notes ("Added to the queue") fade in two seconds: show the view, not them.
        expect(page.get_by_test_id("toast")).to_have_count(0)
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled")
        self.paths.append(path)

    def publish(self, capsys: pytest.CaptureFixture[str]) -> None:
        target = os.environ.get("CADENZA_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            for path in self.paths:
                shutil.copy2(path, Path(target) / path.name)
        with capsys.disabled():
            print("\nweb UI screenshots:")
            for path in self.paths:
                print(f"  {path}")
            if target:
                print(f"  (copied to {target})")


def tid(page: Page, testid: str) -> playwright_api.Locator:
    return page.get_by_test_id(testid)


def queue_titles(page: Page) -> playwright_api.Locator:
    return tid(page, "queue-item").get_by_test_id("queue-title")


def search_for(page: Page, words: str, title: str) -> playwright_api.Locator:
    """Search on ``page`` and return the result row titled ``title``."""
    tid(page, "tab-search").click()
    tid(page, "search-input").fill(words)
    row = tid(page, "search-result").filter(
        has=page.get_by_test_id("result-title").get_by_text(title, exact=True)
    )
    expect(row).to_have_count(1)
    return row


def api_state(system: System) -> dict:
    with httpx.Client(base_url=system.url, timeout=10) as http:
        return http.get("/api/v1/state").json()


def test_pages_and_files_are_served(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for ref in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
            r = http.get(ref)
            assert r.status_code == 200, ref
        # Nothing from elsewhere: the UI works with no internet.
        for name in ("/", "/ui/app.js", "/ui/style.css"):
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", http.get(name).text), name
        assert http.get("/ui/nope.js").status_code == 404


def test_unknown_token_opens_pairing(system: System, browser: playwright_api.Browser) -> None:
    """A page whose stored token the speaker no longer knows drops it and offers pairing.

    The browser is on loopback, which the speaker trusts whatever the token, so what a LAN
    speaker answers to that token (the 401 of its Guard) is played back here by the page's
    router; everything else goes to the real speaker.
    """
    stale = "revoked-token"
    context = browser.new_context(viewport=PHONE)
    try:
        context.add_init_script(f"localStorage.setItem('cadenza.token', {stale!r})")
        seen: list[str] = []

        def as_on_the_lan(route: playwright_api.Route) -> None:
            request = route.request
            if request.headers.get("authorization") == f"Bearer {stale}" or (
                f"access_token={stale}" in request.url
            ):
                seen.append(request.url)
                route.fulfill(
                    status=401,
                    json={
                        "error": {"status": 401, "message": "unknown or revoked token: pair again"}
                    },
                )
            else:
                route.continue_()

        page = context.new_page()
        page.route("**/api/v1/**", as_on_the_lan)
        page.goto(system.url)
        expect(tid(page, "pairing-panel")).to_be_visible()
        expect(tid(page, "pairing-reason")).to_contain_text("unknown or revoked token")
        expect(tid(page, "pair-name")).not_to_have_value("")
        assert seen, "the stored token was never sent"
        # The dead token is forgotten: from now on requests go without it.
        assert page.evaluate("localStorage.getItem('cadenza.token')") is None
        tid(page, "pair-close").click()
        expect(tid(page, "pairing-panel")).to_be_hidden()
        expect(tid(page, "speaker-name")).not_to_have_text("")
    finally:
        context.close()


def test_two_pages_follow_each_other(
    system: System,
    browser: playwright_api.Browser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    shots = Shots(tmp_path / "screenshots")
    phone = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    desk = browser.new_context(viewport=DESKTOP, color_scheme="dark")  # the other theme
    page_errors: list[str] = []
    try:
        p1, p2 = phone.new_page(), desk.new_page()
        for page in (p1, p2):
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(system.url)
            # The header shows the speaker's name; the service connection is shown, subtly.
            expect(tid(page, "speaker-name")).to_have_text(SPEAKER_NAME)
            expect(tid(page, "session-state")).to_have_attribute("data-state", "online")
            expect(tid(page, "live-badge")).to_be_hidden()
            expect(tid(page, "volume")).to_have_value("60")

        # --- search, and play a result ----------------------------------------------------
        tid(p1, "tab-search").click()
        tid(p1, "search-input").fill("harbour")  # the album's name: the album and its tracks
        expect(tid(p1, "album-result")).to_have_count(1)
        expect(tid(p1, "album-result")).to_contain_text(ALBUM)
        expect(tid(p1, "search-result")).to_have_count(len(TRACKS))
        shots.take(p1, "search-results")
        row = search_for(p1, "lantern", "Paper Lanterns")
        expect(tid(p1, "search-result")).to_have_count(1)
        expect(tid(p1, "album-result")).to_have_count(0)
        expect(row).to_contain_text(ARTIST)
        row.get_by_test_id("search-play").click()
        for page in (p1, p2):
            expect(tid(page, "title")).to_have_text("Paper Lanterns")
            expect(tid(page, "artists")).to_have_text(ARTIST)
            expect(tid(page, "album")).to_have_text(ALBUM)
            expect(tid(page, "status")).to_have_attribute("data-status", "playing")
            expect(tid(page, "play-pause")).to_have_attribute("aria-label", "Pause")
        # The artwork placeholder carries the album's initial.
        expect(tid(p2, "artwork")).to_have_text("H")
        # The position bar moves on its own while playing (page 2 only listens).
        p2.wait_for_function(
            "Number(document.querySelector('[data-testid=seek]').value) > 1500",
            timeout=WAIT_MS,
        )
        tid(p1, "tab-now").click()
        expect(tid(p1, "position")).not_to_have_text("0:00")
        shots.take(p1, "now-playing")

        # --- pause: both pages show it, and the playhead stops ------------------------------
        tid(p1, "play-pause").click()
        for page in (p1, p2):
            expect(tid(page, "status")).to_have_attribute("data-status", "paused")
            expect(tid(page, "play-pause")).to_have_attribute("aria-label", "Play")
        assert api_state(system)["status"] == "paused"
        held = float(tid(p2, "seek").input_value())
        p2.wait_for_timeout(800)  # playing, it would move by 800 ms
        assert abs(float(tid(p2, "seek").input_value()) - held) < 300

        # --- volume: page 1's slider moves page 2's -------------------------------------------
        tid(p1, "volume").fill("37")
        expect(tid(p2, "volume")).to_have_value("37")
        expect(tid(p2, "volume-value")).to_have_text("37")
        assert api_state(system)["volume"] == 37

        # --- queue: add two, remove one, move one; page 2 follows -------------------------------
        tid(p2, "tab-queue").click()
        expect(queue_titles(p2)).to_have_text(["Paper Lanterns"])
        search_for(p1, "copper", "Copper Engine").get_by_test_id("search-add").click()
        expect(queue_titles(p2)).to_have_text(["Paper Lanterns", "Copper Engine"])
        search_for(p1, "northern", "Northern Static").get_by_test_id("search-add").click()
        expect(queue_titles(p2)).to_have_text(
            ["Paper Lanterns", "Copper Engine", "Northern Static"]
        )
        tid(p1, "tab-queue").click()
        items = tid(p1, "queue-item")
        expect(items).to_have_count(3)
        # What plays is marked, and cannot be removed (the speaker would refuse).
        expect(items.nth(0)).to_have_attribute("aria-current", "true")
        expect(items.nth(0).get_by_test_id("queue-remove")).to_be_disabled()
        items.nth(1).get_by_test_id("queue-remove").click()
        for page in (p1, p2):
            expect(queue_titles(page)).to_have_text(["Paper Lanterns", "Northern Static"])
        items.nth(1).get_by_test_id("queue-up").click()
        for page in (p1, p2):
            expect(queue_titles(page)).to_have_text(["Northern Static", "Paper Lanterns"])
            # The playing track moved with the edit.
            expect(tid(page, "queue-item").nth(1)).to_have_attribute("aria-current", "true")
            expect(tid(page, "queue-count")).to_have_text("2")
        state = api_state(system)
        assert [t["title"] for t in state["queue"]] == ["Northern Static", "Paper Lanterns"]
        assert state["index"] == 1 and state["track"]["title"] == "Paper Lanterns"
        shots.take(p1, "queue")

        # --- rename: page 2's header follows ------------------------------------------------------
        tid(p1, "tab-settings").click()
        expect(tid(p1, "rename-input")).to_have_value(SPEAKER_NAME)
        tid(p1, "rename-input").fill("Kitchen")
        tid(p1, "rename-save").click()
        for page in (p1, p2):
            expect(tid(page, "speaker-name")).to_have_text("Kitchen")
        expect(p2).to_have_title(re.compile("Kitchen"))
        with httpx.Client(base_url=system.url, timeout=10) as http:
            assert http.get("/api/v1/settings").json()["name"] == "Kitchen"
            assert http.get("/api/v1/info").json()["name"] == "Kitchen"

        # --- pairing: page 1 asks, page 2 (an admin: loopback) approves -------------------------
        tid(p1, "pair-open").click()
        panel = tid(p1, "pairing-panel")
        expect(panel).to_be_visible()
        tid(p1, "pair-name").fill("Test phone")
        tid(p1, "pair-start").click()
        expect(tid(p1, "pair-code")).to_have_text(re.compile(r"^\d{6}$"))
        code = tid(p1, "pair-code").inner_text()
        shots.take(p1, "pairing")
        tid(p2, "tab-settings").click()
        pending = tid(p2, "pending-item").filter(has_text=code)
        expect(pending).to_contain_text("Test phone")
        shots.take(p2, "settings-desktop")
        with p1.expect_request(
            lambda r: "/api/v1/events?access_token=" in r.url, timeout=WAIT_MS
        ) as stream:
            pending.get_by_test_id("pending-approve").click()
            expect(tid(p1, "pair-status")).to_contain_text("Paired")
        token = p1.evaluate("localStorage.getItem('cadenza.token')")
        assert token and len(token) > 20
        # Paired, the page reconnects its event stream with the token in the URL...
        assert stream.value.url.endswith(f"/api/v1/events?access_token={token}")
        expect(panel).to_be_hidden()
        expect(tid(p1, "forget-token")).to_be_visible()
        with httpx.Client(base_url=system.url, timeout=10) as http:
            tokens = http.get("/api/v1/tokens").json()["tokens"]
        assert [(t["name"], t["scope"]) for t in tokens] == [("Test phone", "playback")]
        # ... and sends it as a bearer token with every request.
        tid(p1, "tab-now").click()
        with p1.expect_request(lambda r: r.url.endswith("/api/v1/resume")) as resume:
            tid(p1, "play-pause").click()
        assert resume.value.all_headers().get("authorization") == f"Bearer {token}"
        for page in (p1, p2):
            expect(tid(page, "status")).to_have_attribute("data-status", "playing")

        # --- an album plays as a whole ------------------------------------------------------------
        tid(p1, "tab-search").click()
        tid(p1, "search-input").fill("harbour")
        tid(p1, "album-result").get_by_test_id("album-play").click()
        album_order = [title for title, _, _ in TRACKS]
        expect(queue_titles(p2)).to_have_text(album_order)
        expect(tid(p2, "queue-item").nth(0)).to_have_attribute("aria-current", "true")
        expect(tid(p2, "title")).to_have_text(album_order[0])

        # --- the service goes away: shown on both pages; a failing request says why ------------
        system.service.popen.send_signal(signal.SIGKILL)
        for page in (p1, p2):
            expect(tid(page, "session-state")).not_to_have_attribute("data-state", "online")
        tid(p1, "tab-search").click()
        tid(p1, "search-input").fill("tide")
        expect(tid(p1, "toast").filter(has_text="not reachable")).to_be_visible()

        # --- the speaker goes away: the pages say they are reconnecting ---------------------------
        system.speaker.stop()
        for page in (p1, p2):
            expect(tid(page, "live-badge")).to_be_visible()

        assert not page_errors, page_errors
        record_property("screenshots", [str(p) for p in shots.paths])
    finally:
        if shots.paths:
            shots.publish(capsys)
        phone.close()
        desk.close()
