"""2-hop flooded search: query ids, TTL, duplicate suppression, bounded fan-out, answers."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.p2p.search import (
    MAX_ANSWERS,
    MAX_TTL,
    QUERY_ID_LEN,
    SEEN_TTL_S,
    Decision,
    SearchRouter,
)


def pid(i: int) -> bytes:
    return bytes([i])


def counter_rng() -> Callable[[int], bytes]:
    c = itertools.count()
    return lambda n: next(c).to_bytes(n, "big")


def qid(i: int) -> bytes:
    return i.to_bytes(QUERY_ID_LEN, "big")


NEIGHBOURS = [pid(i) for i in range(10)]


def test_new_query_id_from_rng_and_ttl_2() -> None:
    r = SearchRouter(max_fanout=3, rng=lambda n: b"\x07" * n)
    q = r.new_query("f1", now=0, neighbours=NEIGHBOURS)
    assert q.id == b"\x07" * 16 and q.file_id == "f1" and q.ttl == MAX_TTL == 2
    assert q.send_to == (pid(0), pid(1), pid(2))


def test_default_rng_gives_distinct_ids() -> None:
    r = SearchRouter()
    ids = {r.new_query("f", 0).id for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 16 for i in ids)


def test_own_query_echo_is_dropped() -> None:
    r = SearchRouter()
    q = r.new_query("f", now=0, neighbours=NEIGHBOURS)
    d = r.on_query(q.id, "f", 1, pid(3), now=0.1, neighbours=NEIGHBOURS)
    assert d.drop_reason == "duplicate" and not d.answer_locally and d.forward_to == []


def test_ttl_2_is_exactly_two_hops() -> None:
    """Simulate a small overlay: A's query reaches B (hop 1) and C (hop 2), never D (hop 3)."""
    graph = {b"A": [b"B"], b"B": [b"A", b"C"], b"C": [b"B", b"D"], b"D": [b"C"]}
    routers = {n: SearchRouter(max_fanout=4, rng=counter_rng()) for n in graph}
    q = routers[b"A"].new_query("f", 0, graph[b"A"])
    asked: dict[bytes, int] = {}
    frontier = [(dst, b"A", q.ttl) for dst in q.send_to]
    while frontier:
        dst, src, ttl = frontier.pop()
        d = routers[dst].on_query(q.id, "f", ttl, src, 0, graph[dst])
        if d.answer_locally:
            asked[dst] = MAX_TTL - ttl + 1
        frontier += [(n, dst, d.forward_ttl) for n in d.forward_to]
    assert asked == {b"B": 1, b"C": 2}


def test_ttl_handling() -> None:
    r = SearchRouter()
    d = r.on_query(qid(1), "f", 2, pid(0), 0, NEIGHBOURS)
    assert d.answer_locally and d.forward_ttl == 1 and d.forward_to
    d = r.on_query(qid(2), "f", 1, pid(0), 0, NEIGHBOURS)
    assert d.answer_locally and d.forward_to == []
    assert r.on_query(qid(3), "f", 0, pid(0), 0, NEIGHBOURS).drop_reason == "ttl expired"
    # A peer claiming a bigger TTL does not extend the flood.
    d = r.on_query(qid(4), "f", 50, pid(0), 0, NEIGHBOURS)
    assert d.answer_locally and d.forward_ttl == 1


def test_malformed_queries_dropped() -> None:
    r = SearchRouter()
    assert r.on_query(b"short", "f", 2, pid(0), 0).drop_reason == "bad query id"
    assert r.on_query(qid(1), "", 2, pid(0), 0).drop_reason == "no file id"
    assert len(r) == 0


def test_fanout_bounded_and_never_back_to_sender() -> None:
    r = SearchRouter(max_fanout=3)
    d = r.on_query(qid(1), "f", 2, pid(0), 0, NEIGHBOURS)
    assert d.forward_to == [pid(1), pid(2), pid(3)]
    d = r.on_query(qid(2), "f", 2, pid(5), 0, [pid(5), pid(5), pid(6)])
    assert d.forward_to == [pid(6)]


def test_duplicates_dropped_until_expiry() -> None:
    r = SearchRouter()
    assert r.on_query(qid(1), "f", 2, pid(0), 0, NEIGHBOURS).answer_locally
    d = r.on_query(qid(1), "f", 2, pid(4), 1, NEIGHBOURS)
    assert d == Decision(False, [], "duplicate")
    assert r.seen(qid(1), SEEN_TTL_S - 0.01)
    assert not r.seen(qid(1), SEEN_TTL_S)
    assert len(r) == 0  # forgotten, not merely ignored
    assert r.on_query(qid(1), "f", 2, pid(0), SEEN_TTL_S, NEIGHBOURS).answer_locally


def test_seen_is_bounded_lru() -> None:
    r = SearchRouter(seen_capacity=3)
    for i in range(5):
        r.on_query(qid(i), "f", 2, pid(0), 0)
    assert len(r) == 3
    assert not r.seen(qid(0), 0) and not r.seen(qid(1), 0)
    assert all(r.seen(qid(i), 0) for i in (2, 3, 4))


def test_answers_recorded_and_routed_back() -> None:
    r = SearchRouter()
    q = r.new_query("f", 0, NEIGHBOURS)
    assert r.reply_to(q.id, 0) is None  # ours
    assert r.record_answer(q.id, pid(7), 0.2)
    assert r.record_answer(q.id, pid(7), 0.3)  # counted once
    assert r.record_answer(q.id, pid(8), 0.3)
    assert r.answers(q.id, 0.5) == [pid(7), pid(8)]
    r.on_query(qid(99), "f", 2, pid(3), 0, NEIGHBOURS)
    assert r.reply_to(qid(99), 1) == pid(3)
    # Late answers are refused once the query is forgotten.
    assert not r.record_answer(q.id, pid(9), SEEN_TTL_S + 1)
    assert r.answers(q.id, SEEN_TTL_S + 1) == []


def test_answers_bounded() -> None:
    r = SearchRouter()
    q = r.new_query("f", 0)
    for i in range(MAX_ANSWERS + 5):
        r.record_answer(q.id, pid(i), 0)
    assert len(r.answers(q.id, 0)) == MAX_ANSWERS


def test_bad_rng_and_args() -> None:
    with pytest.raises(ValueError):
        SearchRouter(rng=lambda n: b"x").new_query("f", 0)
    with pytest.raises(ValueError):
        SearchRouter(seen_capacity=0)


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(-1, 4), st.integers(0, 9), st.floats(0, 30)),
        max_size=60,
    ),
    st.integers(0, 5),
    st.integers(1, 8),
)
def test_router_properties(
    msgs: list[tuple[int, int, int, float]], fanout: int, capacity: int
) -> None:
    r = SearchRouter(max_fanout=fanout, seen_capacity=capacity, seen_ttl=20)
    now = 0.0
    for q, ttl, sender, dt in msgs:
        now += dt
        was_seen = r.seen(qid(q), now)
        d = r.on_query(qid(q), "f", ttl, pid(sender), now, NEIGHBOURS)
        assert len(d.forward_to) <= fanout
        assert pid(sender) not in d.forward_to
        assert len(set(d.forward_to)) == len(d.forward_to)
        assert d.answer_locally == (d.drop_reason is None)
        if was_seen:
            assert not d.answer_locally
        if d.forward_to:
            assert d.forward_ttl == 1 and ttl >= 2
        if not d.answer_locally:
            assert d.forward_to == []
        assert len(r) <= capacity
