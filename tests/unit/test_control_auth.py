"""Pure parts of the control plane's trust: tokens, pairing, Host and Origin checks; the
events diff; settings validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.control import events
from cadenza.control.auth import (
    MAX_PENDING,
    MAX_PENDING_PER_CLIENT,
    PAIRING_TTL_S,
    Pairing,
    PairingRefused,
    TokenStore,
    host_allowed,
    origin_allowed,
    scope_allows,
)
from cadenza.control.settings import Settings, load, save, validate

OWN = {"10.0.0.7", "kitchen.local", "cadenza-abc123.local"}


def test_scopes_nest() -> None:
    assert scope_allows("admin", "playback") and scope_allows("playback", "read")
    assert not scope_allows("read", "playback") and not scope_allows("playback", "admin")


def test_tokens_are_checked_by_hash_persisted_and_revocable(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    info, token = store.issue("phone", "playback", now=1.0)
    assert token not in path.read_text()  # only the hash is stored
    assert store.check(token, now=2.0) == info and info.last_used == 2.0
    assert store.check(token + "x", now=2.0) is None
    again = TokenStore(path)  # a restart keeps it
    assert again.check(token, now=3.0) is not None
    assert again.revoke(info.id) and not again.revoke(info.id)
    assert TokenStore(path).check(token, now=4.0) is None
    with pytest.raises(ValueError, match="scope"):
        store.issue("x", "root", now=1.0)


def test_pairing_needs_the_owner_and_hands_the_token_out_once(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    pairing = Pairing(store)
    req = pairing.ask("Ana's phone", "playback", client="10.0.0.20", now=0.0)
    assert len(req.code) == 6 and req.code.isdigit()
    assert pairing.collect(req.id, now=1.0) is None  # not approved: nothing
    assert store.list() == []
    assert pairing.approve(req.id, now=2.0) is not None
    token = pairing.collect(req.id, now=3.0)
    assert token is not None and store.check(token, now=3.0) is not None
    assert pairing.collect(req.id, now=4.0) is None  # once
    denied = pairing.ask("stranger", "admin", client="10.0.0.66", now=5.0)
    assert pairing.deny(denied.id, now=6.0) is not None
    assert pairing.approve(denied.id, now=7.0) is None  # a denied request stays denied
    late = pairing.ask("slow", "read", client="10.0.0.21", now=10.0)
    assert pairing.approve(late.id, now=10.0 + PAIRING_TTL_S + 1) is None  # expired


def test_the_button_approves_the_oldest_pending_request(tmp_path: Path) -> None:
    pairing = Pairing(TokenStore(None))
    first = pairing.ask("a", "read", client="10.0.0.20", now=0.0)
    pairing.ask("b", "read", client="10.0.0.21", now=1.0)
    approved = pairing.approve_oldest(now=2.0)
    assert approved is not None and approved.id == first.id
    assert [r.name for r in pairing.pending(now=2.0)] == ["b"]


def test_pending_pairing_requests_are_limited_per_client_address() -> None:
    pairing = Pairing(TokenStore(None))
    ana = pairing.ask("Ana's phone", "playback", client="10.0.0.20", now=0.0)
    for n in range(MAX_PENDING_PER_CLIENT):
        pairing.ask(f"flood {n}", "admin", client="10.0.0.66", now=1.0 + n)
    with pytest.raises(PairingRefused, match=f"at most {MAX_PENDING_PER_CLIENT} pending") as exc:
        pairing.ask("one more", "admin", client="10.0.0.66", now=10.0)
    assert exc.value.retry_after == PAIRING_TTL_S - 9.0  # when its oldest expires
    assert pairing.get(ana.id, now=10.0) is not None
    pairing.ask("Ana's tablet", "playback", client="10.0.0.20", now=11.0)  # others still may
    # Once the owner answers one, that address may ask again.
    flood = [r for r in pairing.pending(now=12.0) if r.client == "10.0.0.66"]
    assert pairing.deny(flood[0].id, now=12.0) is not None
    pairing.ask("again", "admin", client="10.0.0.66", now=13.0)


def test_when_full_the_address_holding_most_makes_room_never_a_single_request() -> None:
    pairing = Pairing(TokenStore(None))
    ana = pairing.ask("Ana's phone", "playback", client="10.0.0.20", now=0.0)
    flooders = [f"10.0.1.{n}" for n in range(5)]
    now = 1.0
    for address in flooders:
        for _ in range(MAX_PENDING_PER_CLIENT):
            pairing.ask("flood", "admin", client=address, now=now)
            now += 1
    assert len(pairing.pending(now)) == MAX_PENDING
    # Newcomers push out the flooders' requests, oldest of the biggest holder first...
    oldest = pairing.pending(now)[1]
    newcomers = [f"10.0.2.{n}" for n in range(20)]
    asked = []
    for address in newcomers:
        try:
            asked.append(pairing.ask("phone", "read", client=address, now=now))
        except PairingRefused as exc:
            assert f"holds {MAX_PENDING} pairing requests" in str(exc)
            break
    assert len(asked) == MAX_PENDING - 1 - len(flooders)
    assert pairing.get(oldest.id, now) is None
    # ...until every address holds one: then nobody's goes, the next one is refused.
    held = [r.client for r in pairing.pending(now)]
    assert len(held) == MAX_PENDING and sorted(set(held)) == sorted(held)
    assert pairing.get(ana.id, now) is not None
    assert all(pairing.get(r.id, now) is not None for r in asked)


def test_when_full_an_address_asking_again_cannot_push_out_an_equal() -> None:
    pairing = Pairing(TokenStore(None))
    for n in range(MAX_PENDING // 2):
        for _ in range(2):
            pairing.ask("phone", "read", client=f"10.0.0.{n}", now=float(n))
    with pytest.raises(PairingRefused):
        pairing.ask("phone", "read", client="10.0.0.0", now=20.0)  # it holds 2, so do all
    assert len(pairing.pending(now=20.0)) == MAX_PENDING
    pairing.ask("phone", "read", client="10.0.9.9", now=20.0)  # one with none: room is made
    assert len(pairing.pending(now=20.0)) == MAX_PENDING


def test_when_full_settled_requests_go_first() -> None:
    pairing = Pairing(TokenStore(None))
    first = pairing.ask("phone", "read", client="10.0.0.0", now=0.0)
    for n in range(1, MAX_PENDING):
        pairing.ask("phone", "read", client=f"10.0.0.{n}", now=float(n))
    assert pairing.deny(first.id, now=20.0) is not None
    pairing.ask("phone", "read", client="10.0.9.9", now=21.0)
    assert pairing.get(first.id, now=21.0) is None
    assert len(pairing.pending(now=21.0)) == MAX_PENDING


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("10.0.0.7:4080", True),
        ("kitchen.local", True),
        ("Kitchen.Local.:4080", True),
        ("127.0.0.1:4080", True),
        ("[::1]:4080", True),
        ("localhost:4080", False),  # not in OWN here: the daemon adds it itself
        ("evil.example:4080", False),
        ("10.0.0.8:4080", False),
        ("", False),
        (None, False),
    ],
)
def test_host_must_be_one_of_ours(host: str | None, ok: bool) -> None:
    assert host_allowed(host, OWN) is ok


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        (None, True),  # not a browser
        ("http://10.0.0.7:4080", True),
        ("https://kitchen.local:4080", True),
        ("http://Kitchen.Local.:4080", True),
        ("http://127.0.0.1:4080", True),
        ("http://[::1]:4080", True),
        ("http://127.0.0.1:3000", False),  # another program's page on the same host
        ("http://10.0.0.7:8080", False),
        ("http://kitchen.local", False),  # port 80
        ("http://localhost:4080", False),  # not in OWN here: the daemon adds it itself
        ("https://evil.example", False),
        ("null", False),
        ("file://", False),
        ("http://10.0.0.7.evil.example", False),
        ("http://10.0.0.7:4080.evil.example", False),
        ("http://evil@10.0.0.7:4080", False),
        ("http://10.0.0.7:4080/", False),
        ("http://10.0.0.7:99999", False),
    ],
)
def test_origin_must_be_one_of_ours_with_the_apis_port_or_absent(
    origin: str | None, ok: bool
) -> None:
    assert origin_allowed(origin, OWN, 4080) is ok


def test_an_origin_without_a_port_means_the_schemes_default() -> None:
    assert origin_allowed("http://kitchen.local", OWN, 80)
    assert origin_allowed("https://kitchen.local", OWN, 443)
    assert not origin_allowed("https://kitchen.local", OWN, 80)
    assert not origin_allowed("http://10.0.0.7:4080", OWN, None)  # port unknown: none is ours
    assert origin_allowed(None, OWN, None)


def test_events_start_with_the_state_then_say_what_changed() -> None:
    a = {"status": "playing", "track": {"uri": "t1"}, "index": 0, "position_ms": 1000,
         "volume": 50, "max_volume": 100, "queue": [], "shuffle": False, "repeat": "off",
         "session": {"state": "online"}, "name": "K", "error": ""}  # fmt: skip
    assert events.diff(None, a) == [("state", a)]
    assert events.diff(a, a) == []
    b = a | {"volume": 60, "position_ms": 1250}
    assert [n for n, _ in events.diff(a, b)] == ["volume", "position"]
    c = a | {"track": {"uri": "t2"}, "index": 1, "name": "Kitchen"}
    names = [n for n, _ in events.diff(a, c)]
    assert names == ["track", "queue", "settings"]
    assert dict(events.diff(a, c))["track"] == {"track": {"uri": "t2"}, "index": 1}
    assert events.diff(a, a | {"error": "boom"}) == [("error", {"error": "boom"})]
    assert events.diff(a | {"error": "boom"}, a) == []  # an error clearing is not an event


def test_settings_validation_names_the_field(tmp_path: Path) -> None:
    base = Settings(name="Kitchen")
    assert validate(base, {"name": " Den "}).name == "Den"
    for patch, field in [
        ({"name": ""}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"max_volume": 101}, "max_volume"),
        ({"bitrate": 128}, "bitrate"),
        ({"cache_size": 5}, "cache_size"),
        ({"open": "yes"}, "open"),
        ({"colour": "red"}, "colour"),
    ]:
        with pytest.raises(ValueError, match=field):
            validate(base, patch)
    with pytest.raises(ValueError, match="at least one"):
        validate(base, {})
    path = tmp_path / "settings.json"
    changed = validate(base, {"name": "Den", "open": True})
    save(path, changed, base)
    assert load(path, base) == changed
    path.write_text("{not json")
    assert load(path, base) == base
