"""The control API against hostile clients (issue 17): a real control plane in this process
(``run_control`` on every address, a real speaker on ALSA's ``null`` device, no service
behind it) driven over real sockets.

Another client is another loopback address (127.0.0.2); loopback clients are trusted, but
pairing limits and Origin checks hold whatever the trust. A stranger on the LAN (untrusted:
tokens and rate limits apply) is this host's own non-loopback address, used as both ends;
the tests that need one are skipped on a host without any.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from alsa import AlsaSandbox, requires_alsa
from cadenza.control import auth
from cadenza.control.plane import ControlPlane, run_control
from cadenza.control.settings import Settings
from cadenza.net import mdns
from cadenza.player.player import Player
from cadenza.protocol.noise import KeyPair
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.speaker import Speaker
from cadenza.system.logbudget import BURST, LogBudget

pytestmark = requires_alsa

NEIGHBOUR = "127.0.0.2"  # another client on this machine: a different address


@pytest.fixture
async def plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> AsyncIterator[ControlPlane]:
    AlsaSandbox(tmp_path / "alsa").activate(monkeypatch)
    (tmp_path / "state").mkdir()

    async def nowhere() -> list[Endpoint]:
        return []  # the service is never reached: these tests are about the API's edge

    session = Session(
        static=KeyPair.generate(),
        state_dir=tmp_path / "state",
        candidates=nowhere,
        credentials=Credentials("", "", "hostile"),
    )
    player, _ = Player.open_first(["null"])
    try:
        speaker = Speaker(session=session, cache=None, player=player)
        yield await nursery.start(
            partial(
                run_control,
                speaker,
                {"id": "hostile0", "name": "Hostile", "model": "cadenza"},
                host="0.0.0.0",
                port=0,
                state_dir=tmp_path / "state",
                defaults=Settings(name="Hostile"),
                advertise=False,
            )
        )
    finally:
        player.close()


def client(
    plane: ControlPlane, source: str = "127.0.0.1", target: str = "127.0.0.1"
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{target}:{plane.address[1]}",
        transport=httpx.AsyncHTTPTransport(local_address=source),
        timeout=10,
    )


def lan_address() -> str:
    """This host's first non-loopback IPv4 address (a client from it is not trusted)."""
    for address in mdns.host_addresses():
        if not ipaddress.ip_address(address).is_loopback:
            return address
    pytest.skip("this host has no non-loopback IPv4 address to play the LAN stranger from")


# --- 1. a pairing flood does not push out another client's request ------------------------------


async def test_a_pairing_flood_from_one_address_keeps_anothers_request(
    plane: ControlPlane,
) -> None:
    async with client(plane) as phone, client(plane, NEIGHBOUR) as flooder:
        r = await phone.post("/api/v1/pairing", json={"name": "Ana's phone"})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        statuses = []
        for n in range(20):
            r = await flooder.post("/api/v1/pairing", json={"name": f"flood {n}"})
            statuses.append(r.status_code)
        r = await phone.get(f"/api/v1/pairing/{rid}")
        assert r.status_code == 200 and r.json()["state"] == "pending", r.text
        assert statuses == [201] * auth.MAX_PENDING_PER_CLIENT + [429] * (
            20 - auth.MAX_PENDING_PER_CLIENT
        )
        refused = await flooder.post("/api/v1/pairing", json={"name": "one more"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        message = refused.json()["error"]["message"]
        assert f"at most {auth.MAX_PENDING_PER_CLIENT} pending pairing requests" in message
        listed = (await phone.get("/api/v1/pairing")).json()["requests"]
        assert len(listed) == 1 + auth.MAX_PENDING_PER_CLIENT


# --- 2. a body that is not JSON (or nested too deep) is a 400, never a 500 ----------------------

DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/pairing"), ("PUT", "/api/v1/volume"), ("PATCH", "/api/v1/settings")],
)
async def test_json_nested_too_deep_is_a_400_that_says_so(
    plane: ControlPlane, method: str, path: str
) -> None:
    async with client(plane) as c:
        for body in (
            DEEP,
            b'{"name": ' + DEEP + b"}",
            b'{"a": ' * 5000 + b"1" + b"}" * 5000,
            b'{"a": ' * 20 + b"1" + b"}" * 20,  # parses, but deeper than any request of ours
        ):
            r = await c.request(method, path, content=body)
            assert r.status_code == 400, r.text
            assert "nested deeper than" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\xff",  # not UTF-8 (nor 16 or 32)
        b"\x00" * 8,
        b"1" * 5000,  # more digits than Python converts
        b'{"volume": 1e999999}',
        b'{"volume": NaN}',
        b'"' + b"\\" * 3 + b'"',
        b"[" * 5000,  # never closed
        b"{" * 5000,
        b'{"a": ' * 5000,
        b'{"volume": "\\ud800"}',
    ],
)
async def test_unparsable_or_strange_json_is_a_400(plane: ControlPlane, body: bytes) -> None:
    async with client(plane) as c:
        r = await c.put("/api/v1/volume", content=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"]


# --- 3. a client that hangs up mid-body costs no traceback -------------------------------------


class Watch(logging.Handler):
    """Keeps every record; ``done`` is set once ``enough(records)`` holds."""

    def __init__(self, enough: Callable[[list[logging.LogRecord]], bool]) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.enough = enough
        self.done = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.enough(self.records):
            self.done.set()


def loud(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.exc_info or r.levelno >= logging.WARNING]


def went_away(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if "went away" in r.getMessage()]


async def test_a_client_hanging_up_mid_body_logs_no_traceback(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger's level, restored afterwards
    port = plane.address[1]
    hangups = [("POST", "/api/v1/pairing"), ("PUT", "/api/v1/volume")]
    watch = Watch(lambda records: len(went_away(records)) == len(hangups) or bool(loud(records)))
    logging.getLogger().addHandler(watch)
    try:
        for method, path in hangups:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"name": "'  # 10 of the 1000 bytes promised
            )
            await stream.aclose()
        with trio.fail_after(10):  # the server handles the hang-ups on its own tasks
            await watch.done.wait()
    finally:
        logging.getLogger().removeHandler(watch)
    bad = loud(watch.records)
    assert not bad, [(r.name, r.getMessage()) for r in bad]
    assert [r.levelno for r in went_away(watch.records)] == [logging.DEBUG] * len(hangups)
    async with client(plane) as c:  # and the server goes on answering
        assert (await c.get("/api/v1/info")).status_code == 200


# --- 4. an Origin must be one of the speaker's own, port included ------------------------------


async def test_a_page_on_another_port_of_a_local_name_cannot_drive_the_speaker(
    plane: ControlPlane,
) -> None:
    port = plane.address[1]
    async with client(plane) as c:
        for origin in ("http://127.0.0.1:3000", f"http://127.0.0.1:{port + 1}",
                       "http://localhost:8080", "https://127.0.0.1"):  # fmt: skip
            r = await c.post("/api/v1/pause", headers={"Origin": origin})
            assert r.status_code == 403, (origin, r.text)
            assert "Origin" in r.json()["error"]["message"]
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):
            headers = {"Origin": origin} if origin else {}
            r = await c.post("/api/v1/pause", headers=headers)
            assert r.status_code == 200, (origin, r.text)


async def test_in_open_mode_a_lan_page_on_another_port_cannot_drive_the_speaker(
    plane: ControlPlane,
) -> None:
    lan = lan_address()
    port = plane.address[1]
    async with client(plane) as owner, client(plane, lan, lan) as stranger:
        assert (await stranger.post("/api/v1/pause")).status_code == 401  # closed: a token
        r = await owner.patch("/api/v1/settings", json={"open": True})
        assert r.status_code == 200 and r.json()["open"] is True
        for origin in (f"http://{lan}:3000", "http://127.0.0.1:3000", f"http://{lan}"):
            r = await stranger.post("/api/v1/pause", headers={"Origin": origin})
            assert r.status_code == 403, (origin, r.text)
        r = await stranger.post("/api/v1/pause", headers={"Origin": f"http://{lan}:{port}"})
        assert r.status_code == 200, r.text  # the speaker's own web UI


# --- 5. what a stranger can make the speaker log is quiet and budgeted -------------------------


async def test_what_a_stranger_causes_is_logged_below_warning_under_few_templates(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    lan = lan_address()
    caplog.set_level(logging.DEBUG, logger="cadenza")
    seen: set[int] = set()
    async with client(plane, lan, lan) as stranger:
        for n in range(8):
            for r in (
                await stranger.get("/api/v1/info", headers={"Host": f"evil{n}.example"}),
                await stranger.post(
                    "/api/v1/pause", headers={"Origin": f"http://{lan}:{3000 + n}"}
                ),
                await stranger.get("/api/v1/state", headers={"Authorization": f"Bearer no{n}"}),
                await stranger.post("/api/v1/pairing", json={"name": f"stranger {n}"}),
            ):
                seen.add(r.status_code)
        with trio.fail_after(30):  # until the rate limit bites
            while 429 not in seen:
                r = await stranger.get("/api/v1/info")
                seen.add(r.status_code)
    records = [r for r in caplog.records if r.name.startswith("cadenza")]
    loud = [(r.levelname, r.getMessage()) for r in records if r.levelno >= logging.WARNING]
    assert not loud, loud
    # Constant templates: the stranger's varying input is in the arguments, so the log
    # budget groups each kind of line however the requests vary...
    kinds = {(r.name, r.msg) for r in records}
    assert len(kinds) <= 3, kinds
    for r in records:
        assert lan in r.getMessage() and not any(
            varying in str(r.msg) for varying in (lan, "evil", "Bearer", "stranger", "3000")
        ), r.msg
    # ...and lets through a burst of each kind, not a line per request.
    budget = LogBudget(clock=lambda: 0.0)
    assert sum(budget.filter(r) for r in records) <= BURST * len(kinds) < len(records)
    assert {201, 401, 403, 421, 429} <= seen, seen  # every kind of refusal was tried
