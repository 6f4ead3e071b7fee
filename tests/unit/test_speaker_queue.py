"""The play queue (cadenza.speaker.queue.PlayQueue) on its own: no trio, no player, no streams.

Entries are track records compared by identity: the same song queued twice is two entries, and
an entry keeps its identity through moves, inserts, removals and shuffles. The controller sets
``index`` to what ``replace``/``following``/``previous`` answer; the tests do the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from cadenza.errors import BadPosition, BadRequest, CadenzaError, Conflict, UnknownLink
from cadenza.speaker.queue import REPEAT_MODES, PlayQueue, Repeat

Track = dict[str, Any]


def tracks(n: int, prefix: str = "t") -> list[Track]:
    return [{"id": f"{prefix}{i}", "title": f"{prefix.upper()} {i}"} for i in range(n)]


def ids(ts: list[Track]) -> list[str]:
    return [t["id"] for t in ts]


def same(a: list[Track], b: list[Track]) -> bool:
    """The same entries (objects) in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def among(ts: list[Track], these: list[Track]) -> list[Track]:
    """The entries of ``ts`` that are (by identity) in ``these``, in the order of ``ts``."""
    wanted = {id(t) for t in these}
    return [t for t in ts if id(t) in wanted]


def queue(n: int = 6, index: int = 0, *, seed: int = 1, repeat: str = "off") -> PlayQueue:
    q = PlayQueue(random.Random(seed))
    q.index = q.replace(tracks(n), index) if n else -1
    q.set_repeat(repeat)
    return q


def snapshot(q: PlayQueue) -> tuple[list[int], int, bool, Repeat]:
    return [id(t) for t in q.tracks], q.index, q.shuffle, q.repeat


# --- replace ----------------------------------------------------------------------------------


def test_a_new_queue_is_empty_with_nothing_current() -> None:
    q = PlayQueue()
    assert len(q) == 0 and q.tracks == [] and q.index == -1
    assert q.shuffle is False and q.repeat == Repeat.OFF
    assert REPEAT_MODES == ("off", "all", "one")


@pytest.mark.parametrize("start", [0, 2, 4])
def test_replace_keeps_the_order_and_returns_the_start_index(start: int) -> None:
    q = PlayQueue(random.Random(1))
    ts = tracks(5)
    assert q.replace(ts, start) == start
    assert same(q.tracks, ts)
    assert len(q) == 5


def test_replace_drops_the_previous_queue() -> None:
    q = queue(4, 2)
    new = tracks(2, "n")
    q.index = q.replace(new, 1)
    assert same(q.tracks, new)
    assert q.index == 1


@pytest.mark.parametrize("start", [3, 4, 100, -1, -3])
def test_replace_with_a_start_out_of_range_raises_unknown_link_and_changes_nothing(
    start: int,
) -> None:
    q = queue(4, 2)
    before = snapshot(q)
    with pytest.raises(UnknownLink) as info:
        q.replace(tracks(3, "n"), start)
    assert f"offset {start}" in str(info.value)
    assert "3 tracks" in str(info.value)
    assert info.value.http_status == 404
    assert snapshot(q) == before


def test_replace_with_nothing_raises_unknown_link_and_changes_nothing() -> None:
    q = queue(4, 2)
    before = snapshot(q)
    with pytest.raises(UnknownLink, match="nothing to play"):
        q.replace([], 0)
    assert snapshot(q) == before


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
@pytest.mark.parametrize("start", [0, 3, 9])
def test_replace_with_shuffle_on_plays_the_chosen_track_first_and_shuffles_the_rest(
    seed: int, start: int
) -> None:
    q = PlayQueue(random.Random(seed))
    assert q.set_shuffle(True) is True
    ts = tracks(10)
    original = list(ts)
    assert q.replace(ts, start) == 0
    assert q.tracks[0] is original[start]
    rest = q.tracks[1:]
    others = original[:start] + original[start + 1 :]
    # A permutation of the other entries: each of them once, nothing else.
    assert sorted(ids(rest)) == sorted(ids(others))
    assert {id(t) for t in rest} == {id(t) for t in others}
    assert len(q) == 10
    assert same(ts, original)  # the caller's list is left alone


def test_replace_with_shuffle_on_is_a_real_shuffle_and_follows_the_rng() -> None:
    orders = set()
    for seed in range(5):
        q = PlayQueue(random.Random(seed))
        q.set_shuffle(True)
        q.replace(tracks(10), 0)
        orders.add(tuple(ids(q.tracks)))
    assert len(orders) > 1  # different seeds, different orders

    a, b = PlayQueue(random.Random(7)), PlayQueue(random.Random(7))
    for q in (a, b):
        q.set_shuffle(True)
        q.replace(tracks(10), 4)
    assert ids(a.tracks) == ids(b.tracks)  # the same seed, the same order
    assert ids(a.tracks) != ["t4", "t0", "t1", "t2", "t3", "t5", "t6", "t7", "t8", "t9"]


def test_replace_with_shuffle_on_and_one_track() -> None:
    q = PlayQueue(random.Random(1))
    q.set_shuffle(True)
    ts = tracks(1)
    assert q.replace(ts, 0) == 0
    assert same(q.tracks, ts)


def test_shuffle_off_after_a_shuffled_replace_puts_the_others_back_in_order_after_the_chosen() -> (
    None
):
    q = PlayQueue(random.Random(3))
    q.set_shuffle(True)
    ts = tracks(6)
    q.index = q.replace(ts, 3)
    assert q.set_shuffle(False) is True
    assert q.shuffle is False
    assert same(q.tracks, [ts[3], ts[0], ts[1], ts[2], ts[4], ts[5]])
    assert q.index == 0


# --- following ---------------------------------------------------------------------------------


def test_following_with_repeat_off() -> None:
    q = queue(4, 0)
    assert q.following(-1) == 0  # nothing played yet: the first
    assert q.following(0) == 1
    assert q.following(2) == 3
    assert q.following(3) is None  # the end
    assert q.following(3, user=True) is None


def test_following_with_repeat_all_wraps_around() -> None:
    q = queue(4, 0, repeat="all")
    assert q.following(0) == 1
    assert q.following(3) == 0
    assert q.following(3, user=True) == 0


def test_following_with_repeat_one_stays_unless_the_user_skips() -> None:
    q = queue(4, 0, repeat="one")
    assert q.following(0) == 0
    assert q.following(2) == 2
    assert q.following(3) == 3  # the last track repeats too
    assert q.following(2, user=True) == 3
    # A skip past the last track: repeat "one" does not wrap, the queue ends.
    assert q.following(3, user=True) is None
    # Nothing current yet: the first track.
    assert q.following(-1) == 0


def test_following_with_a_single_track() -> None:
    q = queue(1, 0)
    assert q.following(0) is None
    q.set_repeat("all")
    assert q.following(0) == 0
    q.set_repeat("one")
    assert q.following(0) == 0
    assert q.following(0, user=True) is None


@pytest.mark.parametrize("mode", REPEAT_MODES)
def test_following_in_an_empty_queue_is_none(mode: str) -> None:
    q = PlayQueue()
    q.set_repeat(mode)
    assert q.following(-1) is None
    assert q.following(0) is None
    assert q.following(0, user=True) is None


# --- previous ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position_ms", "expected"),
    [(0, 1), (2999, 1), (3000, 1), (3001, 2), (60_000, 2)],
)
def test_previous_restarts_the_track_after_3_s_else_goes_back(
    position_ms: int, expected: int
) -> None:
    q = queue(5, 2)
    assert q.previous(position_ms) == expected
    assert q.index == 2  # previous only answers; the controller moves


@pytest.mark.parametrize("position_ms", [0, 1000, 3001, 60_000])
def test_previous_on_the_first_track_stays_on_it(position_ms: int) -> None:
    q = queue(5, 0)
    assert q.previous(position_ms) == 0


def test_previous_with_nothing_current_yet_goes_to_the_first_track() -> None:
    q = PlayQueue()
    q.replace(tracks(3), 0)
    assert q.index == -1
    assert q.previous(0) == 0
    assert q.previous(10_000) == 0


def test_previous_ignores_repeat() -> None:
    q = queue(3, 0, repeat="all")
    assert q.previous(0) == 0  # no wrap to the last track


def test_previous_in_an_empty_queue_is_a_conflict() -> None:
    q = PlayQueue()
    with pytest.raises(Conflict, match="empty") as info:
        q.previous(0)
    assert info.value.http_status == 409
    q = queue(3, 1)
    q.clear(playing=False)
    with pytest.raises(Conflict):
        q.previous(5000)


# --- repeat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "all", "one", Repeat.ALL])
def test_set_repeat(mode: str) -> None:
    q = queue(3, 0)
    q.set_repeat(mode)
    assert q.repeat == Repeat(mode)
    assert isinstance(q.repeat, Repeat)


@pytest.mark.parametrize("mode", ["loop", "", "ALL", "One", "true", None, 1, True])
def test_set_repeat_with_a_bad_value_is_a_bad_request_naming_the_field(mode: Any) -> None:
    q = queue(3, 0, repeat="all")
    with pytest.raises(BadRequest) as info:
        q.set_repeat(mode)
    err = info.value
    assert err.field == "repeat"
    assert err.http_status == 400
    assert isinstance(err, CadenzaError)
    assert "off, all, one" in str(err)
    assert repr(mode) in str(err)
    assert q.repeat == Repeat.ALL  # unchanged


# --- shuffle -----------------------------------------------------------------------------------


def test_set_shuffle_shuffles_only_the_upcoming_tracks_and_off_restores_their_order() -> None:
    q = queue(10, 3, seed=5)
    original = list(q.tracks)
    assert q.set_shuffle(True) is True
    assert q.shuffle is True
    assert q.index == 3
    assert same(q.tracks[:4], original[:4])  # played and current: untouched
    upcoming = q.tracks[4:]
    assert {id(t) for t in upcoming} == {id(t) for t in original[4:]}
    assert len(upcoming) == 6
    assert not same(upcoming, original[4:])  # seed 5 does move them
    assert q.set_shuffle(False) is True
    assert q.shuffle is False
    assert same(q.tracks, original)
    assert q.index == 3


def test_set_shuffle_to_what_it_is_changes_nothing() -> None:
    q = queue(8, 0, seed=2)
    original = list(q.tracks)
    assert q.set_shuffle(False) is False
    assert same(q.tracks, original)
    assert q.set_shuffle(True) is True
    shuffled = list(q.tracks)
    assert q.set_shuffle(True) is False  # not shuffled again
    assert same(q.tracks, shuffled)


def test_shuffle_off_restores_the_order_with_tracks_inserted_meanwhile() -> None:
    q = queue(8, 2, seed=9)
    original = list(q.tracks)
    q.set_shuffle(True)
    late = tracks(2, "late")
    assert q.insert(late, None) == 0  # at the end
    middle = tracks(1, "mid")
    assert q.insert(middle, 5) == 0  # among the shuffled ones
    early = tracks(1, "early")
    assert q.insert(early, 0) == 1  # before the current one
    assert q.index == 3 and q.tracks[3] is original[2]
    q.set_shuffle(False)
    assert q.index == 3 and q.tracks[3] is original[2]
    assert same(q.tracks[:4], [early[0], *original[:3]])
    rest = q.tracks[4:]
    # The upcoming tracks of before: in their original order again.
    assert same(among(rest, original), original[3:])
    # Every inserted track is still there, once, those inserted together in their order.
    assert sorted(ids(rest)) == sorted(ids(original[3:] + late + middle))
    assert same(among(rest, late), late)
    assert len(q) == 8 + 4


def test_shuffle_off_drops_tracks_removed_meanwhile_and_keeps_those_played() -> None:
    q = queue(8, 0, seed=4)
    original = list(q.tracks)
    q.set_shuffle(True)
    played = q.tracks[1:3]
    gone = q.tracks[5]
    q.remove(5, playing=True)
    q.index = 2  # two shuffled tracks played since
    q.set_shuffle(False)
    assert q.index == 2
    assert same(q.tracks[:3], [original[0], *played])
    assert same(q.tracks[3:], [t for t in original[1:] if t is not gone and not among([t], played)])
    assert all(t is not gone for t in q.tracks)
    assert len(q) == 7


def test_set_shuffle_on_an_empty_queue_then_replace() -> None:
    q = PlayQueue(random.Random(1))
    assert q.set_shuffle(True) is True
    assert q.tracks == []
    ts = tracks(4)
    q.index = q.replace(ts, 2)
    assert q.tracks[0] is ts[2] and q.index == 0


# --- insert ------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 3])
def test_insert_at_or_before_the_current_entry_shifts_the_index(position: int) -> None:
    q = queue(5, 3)
    current = q.tracks[3]
    new = tracks(2, "n")
    assert q.insert(new, position) == 2
    assert q.index == 5
    assert q.tracks[q.index] is current
    assert same(q.tracks[position : position + 2], new)
    assert len(q) == 7


@pytest.mark.parametrize("position", [4, 5, None, 100])
def test_insert_after_the_current_entry_leaves_the_index(position: int | None) -> None:
    q = queue(5, 3)
    current = q.tracks[3]
    original = list(q.tracks)
    new = tracks(2, "n")
    assert q.insert(new, position) == 0
    assert q.index == 3
    assert q.tracks[3] is current
    at = 4 if position == 4 else 5  # None and past the end: at the end
    assert same(q.tracks[at : at + 2], new)
    assert same([t for t in q.tracks if t not in new], original)


def test_insert_at_a_negative_position_clamps_to_the_front() -> None:
    q = queue(3, 1)
    current = q.tracks[1]
    new = tracks(1, "n")
    assert q.insert(new, -5) == 1
    assert q.tracks[0] is new[0]
    assert q.index == 2 and q.tracks[2] is current


def test_insert_with_nothing_current_never_shifts() -> None:
    q = PlayQueue()
    a = tracks(2, "a")
    assert q.insert(a, None) == 0
    assert q.index == -1 and same(q.tracks, a)
    b = tracks(1, "b")
    assert q.insert(b, 0) == 0
    assert q.index == -1 and same(q.tracks, [b[0], *a])


def test_insert_copies_the_tracks_it_is_given() -> None:
    q = queue(2, 0)
    new = tracks(2, "n")
    q.insert(new, None)
    new.append({"id": "later"})
    assert len(q) == 4
    assert ids(q.tracks) == ["t0", "t1", "n0", "n1"]


def test_insert_the_same_track_twice_gives_two_entries() -> None:
    q = queue(2, 0)
    song = {"id": "song"}
    q.insert([song], None)
    q.insert([song], None)
    assert ids(q.tracks) == ["t0", "t1", "song", "song"]
    assert q.following(2) == 3


# --- move --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "index"),
    [
        (0, 4, 1),  # from before the current to after it
        (4, 0, 3),  # from after to before
        (0, 1, 2),  # from before to before
        (1, 2, 1),  # from before onto the current's place: it moves up
        (3, 2, 3),  # from after onto the current's place: it moves down
        (3, 5, 2),  # after to after
        (2, 0, 0),  # the current itself, to the front
        (2, 5, 5),  # ... to the end
        (2, 2, 2),  # nowhere
    ],
)
def test_move_keeps_the_current_entry_current(source: int, target: int, index: int) -> None:
    q = queue(6, 2)
    original = list(q.tracks)
    current = q.tracks[2]
    q.move(source, target, current)
    assert q.index == index
    assert q.tracks[q.index] is current
    expected = list(original)
    expected.insert(target, expected.pop(source))
    assert same(q.tracks, expected)


def test_move_keeps_the_current_entry_among_duplicate_records() -> None:
    """The same song queued twice: two records equal in content; the current is the one
    playing, by identity, not the first equal one."""
    song = {"id": "song", "title": "Song"}
    a, b = dict(song), dict(song)
    c, d = {"id": "c"}, {"id": "d"}
    q = PlayQueue()
    q.index = q.replace([a, c, b, d], 2)  # b plays
    assert a == b and a is not b
    q.move(0, 3, b)  # [c, b, d, a]
    assert ids(q.tracks) == ["c", "song", "d", "song"]
    assert q.index == 1 and q.tracks[1] is b
    q.move(3, 0, b)  # [a, c, b, d]
    assert q.index == 2 and q.tracks[2] is b
    q.move(2, 3, b)  # [a, c, d, b]
    assert q.index == 3 and q.tracks[3] is b


def test_move_with_nothing_playing_leaves_the_index() -> None:
    q = queue(4, 1)
    q.move(0, 3, None)
    assert q.index == 1
    assert ids(q.tracks) == ["t1", "t2", "t3", "t0"]


@pytest.mark.parametrize(("source", "target"), [(6, 0), (0, 6), (-1, 2), (2, -1), (99, 99)])
def test_move_with_a_bad_position_is_bad_position_giving_the_range(
    source: int, target: int
) -> None:
    q = queue(6, 2)
    before = snapshot(q)
    with pytest.raises(BadPosition) as info:
        q.move(source, target, q.tracks[2])
    msg = str(info.value)
    assert "0..5" in msg
    assert f"{source} and {target}" in msg
    assert info.value.http_status == 404
    assert snapshot(q) == before


def test_move_in_an_empty_queue_says_it_is_empty() -> None:
    q = PlayQueue()
    with pytest.raises(BadPosition, match=r"the queue is empty \(asked for position 0 and 0\)"):
        q.move(0, 0, None)


# --- remove ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_remove_before_the_current_entry_shifts_the_index(index: int) -> None:
    q = queue(5, 2)
    current = q.tracks[2]
    gone = q.tracks[index]
    q.remove(index, playing=True)
    assert q.index == 1
    assert q.tracks[1] is current
    assert all(t is not gone for t in q.tracks)
    assert len(q) == 4


@pytest.mark.parametrize("index", [3, 4])
def test_remove_after_the_current_entry_leaves_the_index(index: int) -> None:
    q = queue(5, 2)
    current = q.tracks[2]
    q.remove(index, playing=True)
    assert q.index == 2 and q.tracks[2] is current
    assert len(q) == 4


def test_removing_the_playing_entry_is_a_conflict_and_changes_nothing() -> None:
    q = queue(5, 2)
    before = snapshot(q)
    with pytest.raises(Conflict, match="playing") as info:
        q.remove(2, playing=True)
    assert info.value.http_status == 409
    assert snapshot(q) == before


def test_removing_the_current_entry_when_nothing_plays_is_allowed() -> None:
    q = queue(5, 2)
    after = q.tracks[3]
    q.remove(2, playing=False)
    assert q.index == 2 and q.tracks[2] is after
    assert ids(q.tracks) == ["t0", "t1", "t3", "t4"]


def test_remove_one_of_two_duplicate_records_removes_that_entry() -> None:
    song = {"id": "song"}
    q = PlayQueue()
    q.index = q.replace([dict(song), {"id": "x"}, dict(song)], 1)
    second = q.tracks[2]
    q.remove(0, playing=True)
    assert q.index == 0 and ids(q.tracks) == ["x", "song"]
    assert q.tracks[1] is second


@pytest.mark.parametrize("index", [5, 6, -1, -5])
def test_remove_with_a_bad_position_is_bad_position_giving_the_range(index: int) -> None:
    q = queue(5, 2)
    before = snapshot(q)
    with pytest.raises(BadPosition) as info:
        q.remove(index, playing=True)
    assert str(info.value) == f"no such queue position: {index} (positions are 0..4)"
    assert snapshot(q) == before


def test_remove_from_an_empty_queue_says_it_is_empty() -> None:
    q = PlayQueue()
    with pytest.raises(BadPosition) as info:
        q.remove(0, playing=False)
    assert str(info.value) == "the queue is empty (asked for position 0)"


# --- clear -------------------------------------------------------------------------------------


def test_clear_keeps_only_the_playing_entry() -> None:
    q = queue(6, 3)
    current = q.tracks[3]
    q.clear(playing=True)
    assert len(q) == 1
    assert q.tracks[0] is current
    assert q.index == 0
    assert q.following(0) is None


def test_clear_with_nothing_playing_empties_the_queue() -> None:
    q = queue(6, 3)
    q.clear(playing=False)
    assert q.tracks == [] and q.index == -1
    assert q.following(q.index) is None


def test_clear_with_no_current_entry_empties_the_queue_even_if_playing() -> None:
    q = PlayQueue()
    q.replace(tracks(3), 0)  # index still -1
    q.clear(playing=True)
    assert q.tracks == [] and q.index == -1


def test_clear_while_shuffled_then_shuffle_off_keeps_just_the_current() -> None:
    q = queue(6, 1, seed=3)
    current = q.tracks[1]
    q.set_shuffle(True)
    q.clear(playing=True)
    q.set_shuffle(False)
    assert same(q.tracks, [current]) and q.index == 0
    new = tracks(2, "n")
    q.insert(new, None)
    assert same(q.tracks, [current, *new])


# --- the errors --------------------------------------------------------------------------------


def test_every_queue_error_is_a_cadenza_error() -> None:
    q = queue(3, 1)
    calls: list[Callable[[], object]] = [
        lambda: q.replace([], 0),
        lambda: q.replace(tracks(2), 2),
        lambda: q.set_repeat("never"),
        lambda: q.move(3, 0, None),
        lambda: q.remove(-1, playing=True),
        lambda: q.remove(1, playing=True),
        lambda: PlayQueue().previous(0),
    ]
    for call in calls:
        with pytest.raises(CadenzaError):
            call()
