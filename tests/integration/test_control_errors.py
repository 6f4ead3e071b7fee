"""The control API's errors (issue 23): a user's or client's error is its class's status, a
bug is a 500 with its traceback logged, whatever the bug's exception type (a stray
``KeyError`` is no "409 conflict", a stray ``ValueError`` no "400 bad request").

A real control plane in this process (``run_control`` on loopback, a real speaker on ALSA's
``null`` device, no service behind it), driven over real sockets, as in
tests/hostile/test_control_hostile.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from alsa import AlsaSandbox, requires_alsa
from cadenza.control.plane import ControlPlane, run_control
from cadenza.control.settings import Settings
from cadenza.player.player import Player
from cadenza.protocol.noise import KeyPair
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.speaker import Speaker

pytestmark = requires_alsa


@pytest.fixture
async def plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> AsyncIterator[ControlPlane]:
    AlsaSandbox(tmp_path / "alsa").activate(monkeypatch)
    (tmp_path / "state").mkdir()

    async def nowhere() -> list[Endpoint]:
        return []  # the service is never reached: these tests are about the API's answers

    session = Session(
        static=KeyPair.generate(),
        state_dir=tmp_path / "state",
        candidates=nowhere,
        credentials=Credentials("", "", "errors"),
    )
    player, _ = Player.open_first(["null"])
    try:
        speaker = Speaker(session=session, cache=None, player=player)
        yield await nursery.start(
            partial(
                run_control,
                speaker,
                {"id": "errors0", "name": "Errors", "model": "cadenza"},
                host="127.0.0.1",
                port=0,
                state_dir=tmp_path / "state",
                defaults=Settings(name="Errors"),
                advertise=False,
            )
        )
    finally:
        player.close()


def client(plane: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{plane.address[1]}", timeout=10)


def tracebacks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.exc_info and r.name.startswith("cadenza")]


@pytest.mark.parametrize(
    "stray",
    [KeyError("volume"), LookupError("a bug"), IndexError("a bug"), ValueError("a bug")],
    ids=lambda e: type(e).__name__,
)
async def test_a_stray_exception_in_a_handler_is_a_500_with_its_traceback_logged(
    plane: ControlPlane,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stray: Exception,
) -> None:
    def broken(volume: int) -> None:
        raise stray

    monkeypatch.setattr(plane.control.speaker, "set_volume", broken)
    caplog.set_level(logging.INFO)
    async with client(plane) as c:
        r = await c.put("/api/v1/volume", json={"volume": 40})
        assert r.status_code == 500, r.text
        assert r.json() == {"error": {"status": 500, "message": "internal error"}}
        logged = tracebacks(caplog.records)
        assert len(logged) == 1, [r.getMessage() for r in logged]
        assert logged[0].exc_info is not None and logged[0].exc_info[1] is stray
        assert "/api/v1/volume" in logged[0].getMessage()
        # The API goes on answering.
        r = await c.get("/api/v1/state")
        assert r.status_code == 200, r.text


async def test_a_stray_key_error_in_the_speaker_is_not_a_conflict(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The case of issue 23: the route that answers 409 to a user's mistake (seeking with
    nothing playing) answers 500 when the speaker trips over its own dictionary."""
    caplog.set_level(logging.INFO)
    async with client(plane) as c:
        r = await c.post("/api/v1/seek", json={"position_ms": 0})
        assert r.status_code == 409, r.text

        async def broken(position_ms: int) -> None:
            {}["current"]  # the bug: a key that is not there

        monkeypatch.setattr(plane.control.speaker, "seek", broken)
        r = await c.post("/api/v1/seek", json={"position_ms": 0})
        assert r.status_code == 500, r.text
        (logged,) = tracebacks(caplog.records)
        assert logged.exc_info is not None and isinstance(logged.exc_info[1], KeyError)


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "message"),
    [
        # The user's mistakes, each its class's status and the message the API always gave.
        ("POST", "/api/v1/previous", {}, 409, "the queue is empty: nothing to go back to"),
        ("POST", "/api/v1/seek", {"json": {"position_ms": 0}}, 409, "nothing is playing"),
        (
            "DELETE",
            "/api/v1/queue/3",
            {},
            404,
            "the queue is empty (asked for position 3)",
        ),
        (
            "POST",
            "/api/v1/queue/move",
            {"json": {"from": 0, "to": 1}},
            404,
            "the queue is empty (asked for position 0 and 1)",
        ),
        (
            "PUT",
            "/api/v1/repeat",
            {"json": {"repeat": "twice"}},
            400,
            "field 'repeat' must be one of off, all, one",
        ),
        (
            "PUT",
            "/api/v1/volume",
            {"json": {"volume": 101}},
            400,
            "field 'volume' must be an integer 0..100, got 101",
        ),
        (
            "GET",
            "/api/v1/lookup",
            {"params": {"uri": "spotify:track:1"}},
            400,
            "'spotify:track:1' is not a cadenza: link (expected cadenza:<kind>:<id>)",
        ),
        (
            "GET",
            "/api/v1/lookup",
            {"params": {"uri": "cadenza:track:zzzzzzzzzzzzzzzzzzzzzz"}},
            404,
            "'zzzzzzzzzzzzzzzzzzzzzz' is larger than 128 bits: no such id",
        ),
        (
            "POST",
            "/api/v1/play",
            {"json": {"uri": "cadenza:artist:0000000000000000000001"}},
            404,
            "cannot play cadenza:artist:0000000000000000000001 (tracks, albums and playlists)",
        ),
        (
            "POST",
            "/api/v1/pairing",
            {"json": {"name": "phone", "scope": "root"}},
            400,
            "scope must be one of read, playback, admin, not 'root'",
        ),
        (
            "PATCH",
            "/api/v1/settings",
            {"json": {"volume": 3}},
            400,
            "unknown setting 'volume' (known: bitrate, cache_size, max_volume, name, open)",
        ),
        (
            "GET",
            "/api/v1/pairing/nope",
            {},
            404,
            "no pairing request 'nope' (expired or never made)",
        ),
        ("POST", "/api/v1/pairing/nope/approve", {}, 404, "no pending pairing request 'nope'"),
        ("DELETE", "/api/v1/tokens/nope", {}, 404, "no token 'nope'"),
        ("GET", "/api/v1/nothing", {}, 404, "no such endpoint '/api/v1/nothing'"),
    ],
)
async def test_a_users_error_is_its_status_and_message(
    plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    kw: dict[str, Any],
    status: int,
    message: str,
) -> None:
    caplog.set_level(logging.INFO)
    async with client(plane) as c:
        r = await c.request(method, path, **kw)
    assert r.status_code == status, r.text
    assert r.json() == {"error": {"status": status, "message": message}}
    assert not tracebacks(caplog.records)


async def test_a_name_holding_a_lone_surrogate_is_a_400(plane: ControlPlane) -> None:
    """JSON can escape what no UTF-8 answer can carry: refused as the request's fault
    (before, the pairing route stumbled over it while answering)."""
    async with client(plane) as c:
        for method, path in (("POST", "/api/v1/pairing"), ("PATCH", "/api/v1/settings")):
            r = await c.request(method, path, content=b'{"name": "ok \\ud800"}')
            assert r.status_code == 400, r.text
            assert "field 'name' holds a lone surrogate" in r.json()["error"]["message"]
