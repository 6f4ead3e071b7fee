"""The control API of a real `cadenzad` over loopback: schemathesis against the OpenAPI
document (no server error, documented statuses, responses fitting their schemas), live
events, the queue, shuffle/repeat and settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from alsa import requires_alsa
from cadenza import __version__
from cadenza.control import openapi
from rig import Rig

pytestmark = requires_alsa

schema = schemathesis.openapi.from_dict(openapi.document(__version__)).exclude(
    path="/events"  # an endless stream: tested below
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig(tmp_path_factory.mktemp("rig")) as made:
        yield made


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("CADENZA_API_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_matches_its_openapi_document(case: schemathesis.Case, rig: Rig) -> None:
    case.call_and_validate(base_url=rig.url + "/api/v1")


def test_the_document_is_served_and_valid_openapi_3_1(rig: Rig) -> None:
    doc = rig.get("/api/v1/openapi.json")
    assert doc["openapi"] == "3.1.0" and "/play" in doc["paths"]


@pytest.fixture
def clean(rig: Rig) -> Rig:
    """Undo what the schemathesis run left (it changes settings, shuffle, repeat...)."""
    body = {"name": "Rig", "max_volume": 100, "open": False, "bitrate": 160, "cache_size": None}
    httpx.patch(rig.url + "/api/v1/settings", json=body, timeout=10).raise_for_status()
    httpx.put(rig.url + "/api/v1/shuffle", json={"shuffle": False}, timeout=10)
    httpx.put(rig.url + "/api/v1/repeat", json={"repeat": "off"}, timeout=10)
    return rig


def events_until(
    url: str, wanted: set[str], action: object = None, done: Any = None
) -> dict[str, list[dict]]:
    """Read the event stream until every name in ``wanted`` was seen (calls ``action`` once
    the initial state arrived)."""
    seen: dict[str, list[dict]] = {}
    with httpx.stream("GET", url + "/api/v1/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                seen.setdefault(name, []).append(json.loads(line[6:]))
                if name == "state" and action is not None:
                    action()  # type: ignore[operator]
                    action = None
                if wanted <= set(seen) and (done is None or done(seen)):
                    return seen
    raise AssertionError(f"stream ended; saw {sorted(seen)}")


def test_events_start_with_the_state_then_follow_changes(clean: Rig) -> None:
    rig = clean

    def change() -> None:
        httpx.put(rig.url + "/api/v1/volume", json={"volume": 33}, timeout=10).raise_for_status()
        httpx.post(
            rig.url + "/api/v1/play", json={"uri": rig.uris["Morning Light"]}, timeout=30
        ).raise_for_status()

    def playing(seen: dict[str, list[dict]]) -> bool:
        return any(e["track"] is not None for e in seen["track"])

    seen = events_until(rig.url, {"state", "volume", "track", "position"}, change, playing)
    assert "status" in seen["state"][0] and "queue" in seen["state"][0]
    assert seen["volume"][-1]["volume"] == 33
    assert [e["track"]["title"] for e in seen["track"] if e["track"]] == ["Morning Light"]


def test_queue_editing_shuffle_and_repeat(clean: Rig) -> None:
    rig = clean

    def post(path: str, body: object = None) -> dict:
        r = httpx.post(rig.url + path, json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    uris = rig.uris
    post("/api/v1/play", {"uris": [uris["Morning Light"]]})
    q = post("/api/v1/queue", {"uris": [uris["Evening Tide"], uris["Night Drive"]]})
    assert [t["title"] for t in q["queue"]] == ["Morning Light", "Evening Tide", "Night Drive"]
    q = post("/api/v1/queue/move", {"from": 2, "to": 1})
    assert [t["title"] for t in q["queue"]] == ["Morning Light", "Night Drive", "Evening Tide"]
    r = httpx.delete(rig.url + "/api/v1/queue/1", timeout=10)
    assert [t["title"] for t in r.json()["queue"]] == ["Morning Light", "Evening Tide"]
    r = httpx.delete(rig.url + "/api/v1/queue/0", timeout=10)  # what plays cannot be removed
    assert r.status_code == 409 and "playing" in r.json()["error"]["message"]
    r = httpx.delete(rig.url + "/api/v1/queue/9", timeout=10)
    assert r.status_code == 404 and "0..1" in r.json()["error"]["message"]
    r = httpx.put(rig.url + "/api/v1/repeat", json={"repeat": "one"}, timeout=10)
    assert r.json()["repeat"] == "one"
    r = httpx.put(rig.url + "/api/v1/repeat", json={"repeat": "sometimes"}, timeout=10)
    assert r.status_code == 400 and "repeat" in r.json()["error"]["message"]
    r = httpx.put(rig.url + "/api/v1/shuffle", json={"shuffle": True}, timeout=10)
    assert r.json()["shuffle"] is True
    httpx.put(rig.url + "/api/v1/repeat", json={"repeat": "off"}, timeout=10)
    httpx.put(rig.url + "/api/v1/shuffle", json={"shuffle": False}, timeout=10)
    r = httpx.delete(rig.url + "/api/v1/queue", timeout=10)
    assert [t["title"] for t in r.json()["queue"]] == ["Morning Light"]
    # An album as a context, from its second track.
    album = rig.get("/api/v1/lookup", params={"uri": uris["Morning Light"]})["item"]["album"]
    state = post("/api/v1/play", {"context": album["uri"], "offset": 1})
    assert state["track"]["title"] == "Evening Tide" and len(state["queue"]) == 3


def test_settings_persist_and_rename(clean: Rig) -> None:
    rig = clean

    r = httpx.patch(rig.url + "/api/v1/settings", json={"name": "Den", "max_volume": 80})
    assert r.status_code == 200 and r.json()["name"] == "Den"
    assert rig.get("/api/v1/info")["name"] == "Den"
    r = httpx.put(rig.url + "/api/v1/volume", json={"volume": 100}, timeout=10)
    assert r.json()["volume"] == 80  # capped
    saved = json.loads((rig.tmp / "state" / "settings.json").read_text())
    assert saved["name"] == "Den" and saved["max_volume"] == 80
    r = httpx.patch(rig.url + "/api/v1/settings", json={"bitrate": 128})
    assert r.status_code == 400 and "bitrate" in r.json()["error"]["message"]
    httpx.patch(rig.url + "/api/v1/settings", json={"name": "Rig", "max_volume": 100})


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "words"),
    [
        ("POST", "/api/v1/play", {"content": b"{not json"}, 400, "JSON"),
        ("POST", "/api/v1/play", {"content": b"[1, 2]"}, 400, "object"),
        ("POST", "/api/v1/play", {"content": b"[" * 5000 + b"]" * 5000}, 400, "nested"),
        ("PATCH", "/api/v1/settings", {"content": b'{"name": ' * 5000}, 400, "nested"),
        ("POST", "/api/v1/play", {"content": b"x" * 70_000}, 413, "body"),
        ("PUT", "/api/v1/volume", {"json": {"volume": "loud"}}, 400, "volume"),
        ("GET", "/api/v1/nothing", {}, 404, "/api/v1/nothing"),
        ("DELETE", "/api/v1/state", {}, 405, "DELETE"),
        ("GET", "/api/v1/search", {"params": {"q": "x", "type": "song"}}, 400, "type"),
        ("GET", "/api/v1/lookup", {"params": {"uri": "spotify:track:1"}}, 400, "spotify"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(
    rig: Rig, method: str, path: str, kw: dict, status: int, words: str
) -> None:
    r = httpx.request(method, rig.url + path, timeout=10, **kw)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_chunked_oversized_body_is_refused(rig: Rig) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 10_000

    r = httpx.post(rig.url + "/api/v1/play", content=body(), timeout=10)
    assert r.status_code in (400, 413)


def test_foreign_host_and_origin_are_refused(rig: Rig) -> None:
    r = httpx.get(rig.url + "/api/v1/state", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 421 and "Host" in r.json()["error"]["message"]
    r = httpx.post(
        rig.url + "/api/v1/pause", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert r.status_code == 403 and "Origin" in r.json()["error"]["message"]
    port = int(rig.url.rsplit(":", 1)[1])
    for other in (f"http://127.0.0.1:{port + 1}", "http://localhost:3000"):  # another program
        r = httpx.post(rig.url + "/api/v1/pause", headers={"Origin": other}, timeout=10)
        assert r.status_code == 403, (other, r.text)
    ok = httpx.post(rig.url + "/api/v1/pause", headers={"Origin": rig.url}, timeout=10)
    assert ok.status_code == 200


def test_the_web_ui_is_served(rig: Rig) -> None:
    r = httpx.get(rig.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/ui/app.js" in r.text
    r = httpx.get(rig.url + "/ui/../http.py", timeout=10)
    assert r.status_code == 404


def test_a_playlist_plays_as_a_context(clean: Rig) -> None:
    rig = clean
    made = subprocess.run(
        [str(Path(sys.executable).parent / "cadenza"), "playlist", "create", "--data",
         str(rig.tmp / "service"), "--user", "owner", "Evening mix",
         rig.uris["Night Drive"], rig.uris["Morning Light"]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    link = made.stdout.strip().split()[-1]
    assert link.startswith("cadenza:user:owner:playlist:")
    r = httpx.post(rig.url + "/api/v1/play", json={"context": link, "offset": 1}, timeout=30)
    assert r.status_code == 200, r.text
    state = r.json()
    assert [t["title"] for t in state["queue"]] == ["Night Drive", "Morning Light"]
    assert state["track"]["title"] == "Morning Light"
    missing = link[:-22] + "0" * 22
    r = httpx.post(rig.url + "/api/v1/play", json={"context": missing}, timeout=30)
    assert r.status_code == 404 and "playlist" in r.json()["error"]["message"]
