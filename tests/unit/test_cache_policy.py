"""The cache's pure bookkeeping: default size, LRU order, victims, pins."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cadenza.cache.policy import MAX_DEFAULT_CAPACITY, LruPolicy, default_capacity

GB = 1000**3


# -- default_capacity ------------------------------------------------------------------------


def test_default_capacity_is_a_tenth_of_free_space() -> None:
    assert default_capacity(20 * GB, 64 * GB) == 2 * GB


def test_default_capacity_stops_at_10_gb() -> None:
    assert default_capacity(500 * GB, 1000 * GB) == 10 * GB == MAX_DEFAULT_CAPACITY


def test_default_capacity_obeys_a_configured_cap() -> None:
    assert default_capacity(20 * GB, 32 * GB, cap=GB) == GB
    assert default_capacity(20 * GB, 32 * GB, cap=5 * GB) == 2 * GB  # the cap only lowers it


def test_default_capacity_does_not_believe_more_free_than_total() -> None:
    assert default_capacity(50 * GB, 10 * GB) == GB


@pytest.mark.parametrize(("free", "total", "cap"), [(-1, 10, None), (10, -1, None), (10, 10, -1)])
def test_default_capacity_refuses_negative_sizes(free: int, total: int, cap: int | None) -> None:
    with pytest.raises(ValueError):
        default_capacity(free, total, cap)


@given(
    free=st.integers(0, 10**14),
    extra=st.integers(0, 10**14),
    cap=st.none() | st.integers(0, 10**14),
)
def test_default_capacity_is_the_smallest_bound(free: int, extra: int, cap: int | None) -> None:
    capacity = default_capacity(free, free + extra, cap)
    bounds = [free // 10, MAX_DEFAULT_CAPACITY] + ([] if cap is None else [cap])
    # int(free * 0.1) may differ from free // 10 by float rounding for huge values.
    assert abs(capacity - min(bounds)) <= 1
    assert capacity <= MAX_DEFAULT_CAPACITY
    assert cap is None or capacity <= cap


# -- LruPolicy: examples -------------------------------------------------------------------


def filled(capacity: int, *sizes: int) -> LruPolicy:
    """A policy holding files "a", "b", ... of ``sizes``, used in that order."""
    policy = LruPolicy(capacity)
    for now, size in enumerate(sizes):
        policy.add(chr(ord("a") + now), size, now)
    return policy


def test_iterates_least_recently_used_first() -> None:
    policy = filled(100, 10, 10, 10)
    policy.touch("a", 10)
    assert list(policy) == ["b", "c", "a"]
    assert policy.used == 30
    assert len(policy) == 3 and "a" in policy and "z" not in policy


def test_no_victims_while_there_is_room() -> None:
    assert filled(100, 30, 30).victims(40) == []


def test_victims_are_the_least_recently_used_and_no_more_than_needed() -> None:
    policy = filled(100, 30, 30, 30)
    policy.touch("a", 5)
    # used 90, need 25 more: 15 over, so the oldest file ("b") is enough.
    assert policy.victims(25) == ["b"]
    # 45 over: "b" and "c".
    assert policy.victims(55) == ["b", "c"]


def test_pinned_files_are_never_victims() -> None:
    policy = filled(100, 30, 30, 30)
    policy.pin("a")
    assert policy.victims(50) == ["b", "c"]
    policy.unpin("a")
    assert policy.victims(50) == ["a", "b"]


def test_no_victims_when_pinned_files_hold_the_room() -> None:
    policy = filled(100, 40, 40, 10)
    policy.pin("a")
    policy.pin("b")
    assert policy.victims(30) is None  # 80 pinned + 30 > 100
    assert policy.victims(20) == ["c"]


def test_no_victims_for_a_file_larger_than_the_capacity() -> None:
    assert LruPolicy(100).victims(101) is None
    assert LruPolicy(100).victims(100) == []


def test_pins_are_counted_and_may_precede_the_file() -> None:
    policy = LruPolicy(100)
    policy.pin("x")
    policy.pin("x")
    policy.add("x", 60, 1)
    policy.add("y", 30, 2)
    policy.unpin("x")
    assert policy.is_pinned("x")
    assert policy.victims(50) is None
    policy.unpin("x")
    assert not policy.is_pinned("x")
    assert policy.victims(50) == ["x"]
    with pytest.raises(ValueError, match="not pinned"):
        policy.unpin("x")


def test_remove_returns_the_size_and_keeps_pins() -> None:
    policy = filled(100, 30, 20)
    policy.pin("b")
    assert policy.remove("b") == 20
    assert policy.used == 30 and list(policy) == ["a"]
    assert policy.is_pinned("b")
    with pytest.raises(KeyError):
        policy.remove("b")
    with pytest.raises(KeyError):
        policy.touch("b", 9)


def test_adding_again_replaces_the_size_and_counts_as_a_use() -> None:
    policy = filled(100, 30, 20)
    policy.add("a", 25, 5)
    assert policy.used == 45 and list(policy) == ["b", "a"] and policy.size_of("a") == 25


def test_order_follows_now_not_call_order() -> None:
    # A rebuilt index may record uses out of order; equal stamps keep call order.
    policy = LruPolicy(100)
    policy.add("late", 1, 10)
    policy.add("early", 1, 2)
    policy.add("middle", 1, 5)
    policy.add("tie", 1, 5)
    assert list(policy) == ["early", "middle", "tie", "late"]
    policy.touch("early", 10)
    assert list(policy) == ["middle", "tie", "late", "early"]
    assert policy.last_used("early") == 10


def test_set_capacity_changes_the_victims() -> None:
    policy = filled(100, 30, 30, 30)
    policy.set_capacity(50)
    assert policy.capacity == 50
    assert policy.victims(0) == ["a", "b"]


def test_oldest_unpinned_frees_at_least_what_is_asked() -> None:
    policy = filled(1000, 10, 20, 30)
    policy.pin("b")
    assert policy.oldest_unpinned(0) == []
    assert policy.oldest_unpinned(10) == ["a"]
    assert policy.oldest_unpinned(11) == ["a", "c"]
    assert policy.oldest_unpinned(41) is None
    assert policy.evictable() == ["a", "c"]


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_sizes_must_be_non_negative_ints(bad: object) -> None:
    policy = LruPolicy(10)
    with pytest.raises(ValueError):
        policy.add("a", bad, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        policy.victims(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LruPolicy(bad)  # type: ignore[arg-type]


# -- LruPolicy: against a model, over random sequences -------------------------------------

IDS = st.sampled_from([f"f{i}" for i in range(8)])
SIZES = st.integers(0, 60)


class LruMachine(RuleBasedStateMachine):
    """Drives a policy and a plain model (a list in use order) through the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = LruPolicy(100)
        self.capacity = 100
        self.order: list[str] = []  # least recently used first
        self.sizes: dict[str, int] = {}
        self.pins: dict[str, int] = {}
        self.now = 0

    def _tick(self) -> int:
        self.now += 1
        return self.now

    def _use(self, file_id: str) -> None:
        if file_id in self.order:
            self.order.remove(file_id)
        self.order.append(file_id)

    @rule(file_id=IDS, size=SIZES)
    def add(self, file_id: str, size: int) -> None:
        self.policy.add(file_id, size, self._tick())
        self.sizes[file_id] = size
        self._use(file_id)

    @rule(file_id=IDS)
    def touch(self, file_id: str) -> None:
        if file_id in self.sizes:
            self.policy.touch(file_id, self._tick())
            self._use(file_id)
        else:
            with pytest.raises(KeyError):
                self.policy.touch(file_id, self._tick())

    @rule(file_id=IDS)
    def remove(self, file_id: str) -> None:
        if file_id in self.sizes:
            assert self.policy.remove(file_id) == self.sizes.pop(file_id)
            self.order.remove(file_id)
        else:
            with pytest.raises(KeyError):
                self.policy.remove(file_id)

    @rule(file_id=IDS)
    def pin(self, file_id: str) -> None:
        self.policy.pin(file_id)
        self.pins[file_id] = self.pins.get(file_id, 0) + 1

    @precondition(lambda self: bool(self.pins))
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        file_id = data.draw(st.sampled_from(sorted(self.pins)))
        self.policy.unpin(file_id)
        self.pins[file_id] -= 1
        if not self.pins[file_id]:
            del self.pins[file_id]

    @rule(capacity=st.integers(0, 300))
    def set_capacity(self, capacity: int) -> None:
        self.policy.set_capacity(capacity)
        self.capacity = capacity

    @rule(needed=st.integers(0, 200))
    def victims(self, needed: int) -> None:
        victims = self.policy.victims(needed)
        unpinned = [f for f in self.order if f not in self.pins]
        over = sum(self.sizes.values()) + needed - self.capacity
        if over > sum(self.sizes[f] for f in unpinned):
            assert victims is None
            return
        assert victims is not None
        assert not set(victims) & set(self.pins), "a pinned file was chosen"
        # The shortest least-recently-used prefix of the unpinned files that makes room.
        assert victims == unpinned[: len(victims)]
        freed = sum(self.sizes[f] for f in victims)
        assert freed >= over
        if victims:
            assert freed - self.sizes[victims[-1]] < over, "evicted more than needed"

    @invariant()
    def used_is_the_sum_of_sizes(self) -> None:
        assert self.policy.used == sum(self.sizes.values())

    @invariant()
    def iterates_in_use_order(self) -> None:
        assert list(self.policy) == self.order
        assert len(self.policy) == len(self.order)

    @invariant()
    def evictable_is_every_unpinned_file(self) -> None:
        assert self.policy.evictable() == [f for f in self.order if f not in self.pins]


TestLruMachine = LruMachine.TestCase
TestLruMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@settings(max_examples=200)
@given(st.lists(st.tuples(IDS, st.integers(0, 20)), max_size=40))
def test_order_is_by_now_then_by_call_order(uses: list[tuple[str, int]]) -> None:
    policy = LruPolicy(100)
    last: dict[str, tuple[int, int]] = {}  # id -> (now, call index)
    for call, (file_id, now) in enumerate(uses):
        policy.add(file_id, 1, now)
        last[file_id] = (now, call)
    assert list(policy) == sorted(last, key=lambda f: last[f])
    assert policy.used == len(last)
