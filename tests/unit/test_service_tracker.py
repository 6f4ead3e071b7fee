"""The tracker's semantics: remember 20, answer 10, only live sessions, never the asker."""

from __future__ import annotations

from cadenza.service.tracker import ANSWER, REMEMBER, Entry, Tracker


def entry(i: int) -> Entry:
    return Entry(bytes([i]) * 16, f"10.0.0.{i}", 4000 + i, bytes([i]) * 32)


def test_remembers_the_last_20_and_answers_10_newest_first() -> None:
    t: Tracker[int] = Tracker()
    for s in range(30):
        t.session_started(s, entry(s))
        t.announce(s, ["f"])
    got = t.query("f", asker=None)
    assert len(got) == ANSWER == 10
    assert [e.port for e in got] == [4000 + s for s in range(29, 19, -1)]
    # Only the last 20 are remembered: asking with a huge limit still caps at ANSWER,
    # and the first 10 announcers were forgotten (not merely unreturned).
    assert REMEMBER == 20
    assert all(t.files_of(s) == set() for s in range(10))
    assert all(t.files_of(s) == {"f"} for s in range(10, 30))


def test_never_the_asker_and_only_online() -> None:
    t: Tracker[str] = Tracker()
    for s in ("a", "b", "c"):
        t.session_started(s, entry(ord(s)))
        t.announce(s, ["f", "g"])
    assert [e.peer_id[0] for e in t.query("f", asker="c")] == [ord("b"), ord("a")]
    t.session_ended("b")
    assert [e.peer_id[0] for e in t.query("f", asker="c")] == [ord("a")]
    assert [e.peer_id[0] for e in t.query("g", asker=None)] == [ord("c"), ord("a")]
    t.session_ended("a")
    t.session_ended("c")
    assert t.query("f", asker=None) == [] and len(t) == 0


def test_reannounce_moves_to_the_front_and_withdraw_forgets() -> None:
    t: Tracker[int] = Tracker()
    for s in range(3):
        t.session_started(s, entry(s))
        t.announce(s, ["f"])
    t.announce(0, ["f"])
    assert [e.port for e in t.query("f", None)] == [4000, 4002, 4001]
    t.withdraw(0, ["f"])
    assert [e.port for e in t.query("f", None)] == [4002, 4001]
    assert t.query("f", None, limit=1) == [entry(2)]
    assert t.query("unknown", None) == []


def test_announce_needs_a_live_session() -> None:
    t: Tracker[int] = Tracker()
    try:
        t.announce(1, ["f"])
    except KeyError:
        pass
    else:
        raise AssertionError("announce from an unknown session was accepted")
