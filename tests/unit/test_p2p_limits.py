"""Serving and dialling limits: upload slots, the upload token bucket, the dial limiter."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cadenza.p2p.limits import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_DIAL_BURST,
    DEFAULT_DIAL_RATE,
    DEFAULT_MAX_UPLOADS,
    FORGET_AFTER_S,
    MAX_ENDPOINTS,
    DialLimiter,
    TokenBucket,
    UploadQueue,
)
from cadenza.protocol.messages import Priority

# -- UploadQueue -----------------------------------------------------------------------------


def test_default_is_four_slots() -> None:
    q: UploadQueue[str] = UploadQueue()
    assert q.max_active == DEFAULT_MAX_UPLOADS == 4
    assert [q.request(f"k{i}", Priority.PLAYING) for i in range(5)] == [True] * 4 + [False]
    assert (q.active, q.waiting) == (4, 1)
    assert not q.is_active("k4")
    assert q.release("k0") == ["k4"]
    assert q.is_active("k4") and not q.is_active("k0")


def test_most_urgent_first_then_fifo() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    assert q.request("busy", Priority.OFFLINE)
    queued = [
        ("a", Priority.OFFLINE),
        ("b", Priority.PREFETCH),
        ("c", Priority.PLAYING),
        ("d", Priority.PLAYING),
        ("e", Priority.CONTROL),
        ("f", Priority.PLAYING),
    ]
    for key, priority in queued:
        assert not q.request(key, priority)
    assert [q.position(k) for k, _ in queued] == [5, 4, 1, 2, 0, 3]
    order = []
    current = "busy"
    while True:
        granted = q.release(current)
        if not granted:
            break
        assert len(granted) == 1
        current = granted[0]
        order.append(current)
    assert order == ["e", "c", "d", "f", "b", "a"]
    assert (q.active, q.waiting) == (0, 0)


def test_urgent_request_does_not_preempt() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    assert q.request("slow", Priority.OFFLINE)
    assert not q.request("urgent", Priority.CONTROL)
    assert q.is_active("slow") and not q.is_active("urgent")
    assert q.release("slow") == ["urgent"]


def test_new_request_does_not_jump_the_queue_when_paused() -> None:
    q: UploadQueue[str] = UploadQueue(2)
    q.pause()
    assert not q.request("first", Priority.PLAYING)
    assert not q.request("second", Priority.PLAYING)
    assert q.resume() == ["first", "second"]


def test_duplicate_request_rejected() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    q.request("a", Priority.PLAYING)
    q.request("b", Priority.PLAYING)
    with pytest.raises(ValueError):
        q.request("a", Priority.CONTROL)
    with pytest.raises(ValueError):
        q.request("b", Priority.CONTROL)
    assert (q.active, q.waiting) == (1, 1)


def test_withdrawn_waiter_is_never_granted() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    q.request("a", Priority.PLAYING)
    q.request("b", Priority.CONTROL)
    q.request("c", Priority.PLAYING)
    assert q.cancel("b") == []  # a waiter leaving frees no slot
    assert q.position("b") is None and q.waiting == 1
    assert q.release("a") == ["c"]


def test_rerequest_after_withdrawal_queues_at_the_back() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    q.request("a", Priority.PLAYING)
    q.request("b", Priority.PLAYING)
    q.request("c", Priority.PLAYING)
    q.release("b")
    q.request("b", Priority.PLAYING)
    assert q.release("a") == ["c"]
    assert q.release("c") == ["b"]


def test_release_unknown_is_harmless() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    q.request("a", Priority.PLAYING)
    assert q.release("nobody") == []
    assert q.is_active("a") and q.active == 1


def test_many_withdrawals_keep_order() -> None:
    # Enough withdrawals to make the queue rebuild its internal heap.
    q: UploadQueue[int] = UploadQueue(1)
    q.request(-1, 0)
    for i in range(100):
        q.request(i, i % 3)
    for i in range(0, 100, 2):
        q.cancel(i)
    expected = sorted(range(1, 100, 2), key=lambda i: (i % 3, i))
    assert [q.position(i) for i in expected] == list(range(50))
    order = []
    current = -1
    while granted := q.release(current):
        current = granted[0]
        order.append(current)
    assert order == expected


def test_pause_grants_nothing_until_resume() -> None:
    q: UploadQueue[str] = UploadQueue(2)
    assert q.request("a", Priority.PLAYING)
    q.pause()
    assert q.paused
    assert not q.request("b", Priority.PLAYING)
    assert not q.request("c", Priority.CONTROL)
    assert q.release("a") == []
    assert (q.active, q.waiting) == (0, 2)
    assert q.resume() == ["c", "b"]
    assert not q.paused
    assert (q.active, q.waiting) == (2, 0)


def test_pause_keeps_active_uploads() -> None:
    q: UploadQueue[str] = UploadQueue(2)
    q.request("a", Priority.PLAYING)
    q.pause()
    assert q.is_active("a")
    assert q.resume() == []


def test_set_max_raising_grants() -> None:
    q: UploadQueue[str] = UploadQueue(1)
    for key in "abcd":
        q.request(key, Priority.PREFETCH)
    assert q.set_max(3) == ["b", "c"]
    assert (q.active, q.waiting) == (3, 1)


def test_set_max_lowering_revokes_nothing() -> None:
    q: UploadQueue[str] = UploadQueue(3)
    for key in "abcd":
        q.request(key, Priority.PREFETCH)
    assert q.set_max(1) == []
    assert (q.active, q.waiting) == (3, 1)
    assert q.release("a") == []  # still 2 active, above the new maximum
    assert q.release("b") == []  # 1 active: at the maximum
    assert q.release("c") == ["d"]
    assert q.active == 1


def test_zero_disables_serving() -> None:
    q: UploadQueue[str] = UploadQueue(0)
    assert not q.request("a", Priority.CONTROL)
    assert q.release("nobody") == []
    assert q.resume() == []
    assert (q.active, q.waiting) == (0, 1)
    assert q.set_max(1) == ["a"]
    assert q.set_max(0) == []
    assert q.is_active("a")
    assert q.release("a") == []
    assert not q.request("b", Priority.CONTROL)
    assert q.active == 0


def test_negative_max_rejected() -> None:
    with pytest.raises(ValueError):
        UploadQueue(-1)
    with pytest.raises(ValueError):
        UploadQueue(1).set_max(-1)


KEYS = st.sampled_from([f"k{i}" for i in range(8)])
PRIORITIES = st.sampled_from(list(Priority))


class UploadQueueMachine(RuleBasedStateMachine):
    """Drives a queue and a plain model (a list of waiters sorted on demand) through the same
    calls; every grant must go to the most urgent, longest waiting, waiter."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: UploadQueue[str] = UploadQueue(2)
        self.max = 2
        self.paused = False
        self.active: set[str] = set()
        self.waiters: list[tuple[int, int, str]] = []  # (priority, arrival, key)
        self.arrivals = 0

    def _expected_grants(self) -> list[str]:
        granted = []
        self.waiters.sort()
        while not self.paused and len(self.active) < self.max and self.waiters:
            _, _, key = self.waiters.pop(0)
            self.active.add(key)
            granted.append(key)
        return granted

    def _check_grants(self, granted: list[str]) -> None:
        expected = self._expected_grants()
        assert granted == expected
        if granted:
            assert self.queue.active <= self.queue.max_active

    @rule(key=KEYS, priority=PRIORITIES)
    def request(self, key: str, priority: Priority) -> None:
        if key in self.active or any(k == key for _, _, k in self.waiters):
            with pytest.raises(ValueError):
                self.queue.request(key, priority)
            return
        granted = self.queue.request(key, priority)
        self.arrivals += 1
        self.waiters.append((int(priority), self.arrivals, key))
        self._check_grants([key] if granted else [])

    @rule(key=KEYS)
    def release(self, key: str) -> None:
        granted = self.queue.release(key)
        self.active.discard(key)
        self.waiters = [w for w in self.waiters if w[2] != key]
        self._check_grants(granted)

    @rule(n=st.integers(0, 5))
    def set_max(self, n: int) -> None:
        granted = self.queue.set_max(n)
        self.max = n
        self._check_grants(granted)

    @rule()
    def pause(self) -> None:
        self.queue.pause()
        self.paused = True

    @rule()
    def resume(self) -> None:
        granted = self.queue.resume()
        self.paused = False
        self._check_grants(granted)

    @invariant()
    def same_state_as_model(self) -> None:
        keys = [f"k{i}" for i in range(8)]
        assert {k for k in keys if self.queue.is_active(k)} == self.active
        self.waiters.sort()
        assert [self.queue.position(k) for _, _, k in self.waiters] == list(
            range(len(self.waiters))
        )
        assert (self.queue.active, self.queue.waiting) == (len(self.active), len(self.waiters))

    @invariant()
    def no_key_both_active_and_waiting(self) -> None:
        for i in range(8):
            key = f"k{i}"
            assert not (self.queue.is_active(key) and self.queue.position(key) is not None)

    @invariant()
    def no_idle_slot_while_someone_waits(self) -> None:
        if not self.queue.paused and self.queue.waiting:
            assert self.queue.active >= self.queue.max_active


TestUploadQueueMachine = UploadQueueMachine.TestCase
TestUploadQueueMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


# -- TokenBucket -----------------------------------------------------------------------------


def test_bucket_starts_full_then_waits_nbytes_over_rate() -> None:
    b = TokenBucket(rate=1000, burst=4000)
    assert b.reserve(4000, now=10.0) == 0.0
    assert b.reserve(500, now=10.0) == pytest.approx(0.5)


def test_reservations_queue_up() -> None:
    b = TokenBucket(rate=100, burst=0)
    assert [b.reserve(50, now=0.0) for _ in range(4)] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert b.available(0.0) == pytest.approx(-200)
    # Waited out, the debt is gone, and nothing more was earned meanwhile.
    assert b.reserve(100, now=2.0) == pytest.approx(1.0)


def test_reservation_larger_than_burst_just_waits_longer() -> None:
    b = TokenBucket(rate=1000, burst=1000)
    assert b.reserve(3000, now=0.0) == pytest.approx(2.0)


def test_tokens_refill_but_never_above_burst() -> None:
    b = TokenBucket(rate=1000, burst=2000)
    b.reserve(2000, now=0.0)
    assert b.available(1.0) == pytest.approx(1000)
    assert b.reserve(1000, now=1.0) == 0.0
    assert b.reserve(1000, now=1.0) == pytest.approx(1.0)
    assert b.available(3600.0) == 2000  # an hour idle still earns only a burst
    assert b.reserve(2000, now=3600.0) == 0.0
    assert b.reserve(1000, now=3600.0) == pytest.approx(1.0)


def test_wait_time_reserves_nothing() -> None:
    b = TokenBucket(rate=100, burst=100)
    b.reserve(100, now=0.0)
    assert b.wait_time(50, now=0.0) == pytest.approx(0.5)
    assert b.wait_time(50, now=0.0) == pytest.approx(0.5)
    assert b.reserve(50, now=0.25) == pytest.approx(0.25)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(100, 1e7),
    burst=st.integers(0, 100_000),
    sizes=st.lists(st.integers(1, 200_000), min_size=1, max_size=200),
)
def test_long_run_throughput_is_the_rate(rate: float, burst: int, sizes: list[int]) -> None:
    # A sender that waits as told before each send, then reserves the next one at once.
    b = TokenBucket(rate, burst)
    now = 0.0
    for size in sizes:
        now += b.reserve(size, now)
    # The burst is free; every byte beyond it costs exactly 1/rate seconds.
    assert now == pytest.approx(max(0.0, (sum(sizes) - burst) / rate), rel=1e-9, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.floats(0, 1000), min_size=1, max_size=50),
    sizes=st.lists(st.integers(0, 10_000), min_size=1, max_size=50),
)
def test_never_sends_more_than_burst_plus_rate(times: list[float], sizes: list[int]) -> None:
    # Whatever the timing, bytes allowed out by time t are at most burst + rate * t.
    rate, burst = 1000.0, 5000
    b = TokenBucket(rate, burst)
    sends = []
    for now, size in zip(sorted(times), sizes, strict=False):
        sends.append((now + b.reserve(size, now), size))
    sends.sort()
    sent = 0
    for at, size in sends:
        sent += size
        assert sent <= burst + rate * at + 1e-6


@pytest.mark.parametrize("rate", [0, -1.0])
def test_unlimited(rate: float) -> None:
    b = TokenBucket(rate, burst=10)
    assert b.unlimited
    assert [b.reserve(10**9, now=0.0) for _ in range(3)] == [0.0] * 3
    assert b.wait_time(10**12, now=0.0) == 0.0


def test_time_running_backwards_adds_nothing() -> None:
    b = TokenBucket(rate=10, burst=10)
    assert b.reserve(10, now=100.0) == 0.0
    assert b.available(50.0) == 0  # not 10: no tokens for going back
    assert b.reserve(0, now=50.0) == 0.0
    # Had the bucket moved its clock back to 50, this would find it full again.
    assert b.reserve(10, now=100.0) == pytest.approx(1.0)
    # From a time before the bucket's own, the wait runs to when the tokens are really there.
    assert b.wait_time(10, now=90.0) == pytest.approx(12.0)


def test_set_rate_counts_earned_tokens_at_the_old_rate() -> None:
    b = TokenBucket(rate=100, burst=1000)
    b.reserve(1000, now=0.0)
    b.set_rate(200, now=2.0)  # 200 tokens earned at 100/s
    assert b.rate == 200
    assert b.available(2.0) == pytest.approx(200)
    assert b.reserve(600, now=2.0) == pytest.approx(2.0)  # 400 short at 200/s


def test_set_rate_to_unlimited_and_back_starts_full() -> None:
    b = TokenBucket(rate=100, burst=1000)
    b.reserve(5000, now=0.0)
    b.set_rate(0, now=1.0)
    assert b.reserve(10**6, now=1.0) == 0.0
    b.set_rate(100, now=2.0)
    assert b.reserve(1000, now=2.0) == 0.0
    assert b.reserve(100, now=2.0) == pytest.approx(1.0)


def test_bad_bucket_arguments_rejected() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=-1)
    b = TokenBucket(rate=1, burst=1)
    with pytest.raises(ValueError):
        b.reserve(-1, now=0.0)
    with pytest.raises(ValueError):
        b.wait_time(-1, now=0.0)


# -- DialLimiter -----------------------------------------------------------------------------


def ep(i: int) -> tuple[str, int]:
    return (f"10.0.{i // 256}.{i % 256}", 4070)


def test_dial_defaults() -> None:
    d = DialLimiter()
    assert (DEFAULT_DIAL_RATE, DEFAULT_DIAL_BURST) == (2.0, 8)
    assert (d.backoff_initial, d.backoff_max) == (DEFAULT_BACKOFF_INITIAL_S, DEFAULT_BACKOFF_MAX_S)
    assert (d.backoff_initial, d.backoff_max) == (5.0, 300.0)
    assert d.max_endpoints == MAX_ENDPOINTS == 4096
    # The burst: 8 dials at once, then one per half second.
    for i in range(8):
        assert d.wait_time(ep(i), now=0.0) == 0.0
        d.start(ep(i), now=0.0)
    assert d.wait_time(ep(8), now=0.0) == pytest.approx(0.5)


def test_global_rate() -> None:
    d = DialLimiter(rate=4.0, burst=2)
    d.start(ep(0), now=0.0)
    d.start(ep(1), now=0.0)
    assert d.wait_time(ep(2), now=0.0) == pytest.approx(0.25)
    assert d.wait_time(ep(2), now=0.1) == pytest.approx(0.15)
    with pytest.raises(ValueError):
        d.start(ep(2), now=0.1)
    now = 0.0
    for i in range(2, 42):
        now += d.wait_time(ep(i), now)
        d.start(ep(i), now)
    assert now == pytest.approx(10.0)  # 40 dials beyond the burst, at 4 per second


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.1, 10),
    burst=st.integers(1, 8),
    start=st.floats(0, 1e7),
)
def test_waiting_the_time_told_is_enough(rate: float, burst: int, start: float) -> None:
    # ``now + wait`` rounds; a caller that sleeps exactly the wait it was told must be let go.
    d = DialLimiter(rate=rate, burst=burst)
    now = start
    for i in range(200):
        now += d.wait_time(ep(i), now)
        d.start(ep(i), now)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.integers(0, 30)), max_size=100))
def test_starts_in_any_window_are_bounded(attempts: list[tuple[float, int]]) -> None:
    rate, burst = 2.0, 8
    d = DialLimiter(rate=rate, burst=burst)
    starts: list[float] = []
    for now, i in sorted(attempts):
        if d.wait_time(ep(i), now) == 0.0:
            d.start(ep(i), now)
            d.succeeded(ep(i), now)
            starts.append(now)
        else:
            with pytest.raises(ValueError):
                d.start(ep(i), now)
    for a, first in enumerate(starts):
        for b in range(a, len(starts)):
            assert b - a + 1 <= burst + rate * (starts[b] - first) + 1e-6


def test_one_dial_in_progress_per_endpoint() -> None:
    d = DialLimiter(rate=0)  # unlimited: only the per-endpoint rule applies
    d.start(ep(1), now=0.0)
    assert d.wait_time(ep(1), now=0.0) == math.inf
    assert d.wait_time(ep(1), now=1e6) == math.inf  # however long it takes
    with pytest.raises(ValueError):
        d.start(ep(1), now=1.0)
    assert d.wait_time(ep(2), now=1.0) == 0.0
    assert d.wait_time(("10.0.0.1", 4071), now=1.0) == 0.0  # another port, another endpoint
    d.succeeded(ep(1), now=2.0)
    assert d.wait_time(ep(1), now=2.0) == 0.0
    d.start(ep(1), now=2.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    d = DialLimiter(rate=0)
    now = 0.0
    waits = []
    for _ in range(9):
        d.start(ep(1), now)
        d.failed(ep(1), now)
        wait = d.wait_time(ep(1), now)
        waits.append(wait)
        assert d.wait_time(ep(1), now + wait - 0.01) > 0
        with pytest.raises(ValueError):
            d.start(ep(1), now + wait - 0.01)
        now += wait
    assert waits == pytest.approx([5, 10, 20, 40, 80, 160, 300, 300, 300])


def test_backoff_counts_the_global_rate_too() -> None:
    d = DialLimiter(rate=0.01, burst=1, backoff_initial=5, backoff_max=60)
    d.start(ep(1), now=0.0)
    d.failed(ep(1), now=1.0)
    assert d.wait_time(ep(1), now=1.0) == pytest.approx(99.0)  # the bucket, not the back-off


def test_success_resets_backoff() -> None:
    d = DialLimiter(rate=0)
    now = 0.0
    for _ in range(4):
        d.start(ep(1), now)
        d.failed(ep(1), now)
        now += d.wait_time(ep(1), now)
    d.start(ep(1), now)
    d.succeeded(ep(1), now)
    assert ep(1) not in d
    d.start(ep(1), now)
    d.failed(ep(1), now)
    assert d.wait_time(ep(1), now) == pytest.approx(5.0)


def test_cancelled_dial_neither_fails_nor_succeeds() -> None:
    d = DialLimiter(rate=0)
    d.start(ep(1), now=0.0)
    d.failed(ep(1), now=0.0)
    d.start(ep(1), now=5.0)
    d.cancelled(ep(1))
    assert d.wait_time(ep(1), now=5.0) == 0.0  # not in progress, no new back-off
    d.start(ep(1), now=5.0)
    d.failed(ep(1), now=5.0)
    assert d.wait_time(ep(1), now=5.0) == pytest.approx(10.0)  # the failure count survived
    d.start(ep(2), now=5.0)
    d.cancelled(ep(2))
    assert ep(2) not in d  # nothing worth remembering


def test_old_failures_are_forgotten() -> None:
    d = DialLimiter(rate=0)
    d.start(ep(1), now=0.0)
    d.failed(ep(1), now=0.0)  # back-off until 5
    d.start(ep(1), now=5.0)
    d.failed(ep(1), now=5.0)  # back-off 10, until 15
    # Within FORGET_AFTER_S of the expiry the count survives: the next back-off is 20.
    d.start(ep(1), now=15.0 + FORGET_AFTER_S)
    d.failed(ep(1), now=15.0 + FORGET_AFTER_S)
    assert d.wait_time(ep(1), now=15.0 + FORGET_AFTER_S) == pytest.approx(20.0)
    # Beyond it the endpoint is forgotten, so its next failure backs off from scratch.
    later = 15.0 + FORGET_AFTER_S + 20.0 + FORGET_AFTER_S + 1
    assert d.wait_time(ep(1), now=later) == 0.0
    assert ep(1) not in d
    d.start(ep(1), later)
    d.failed(ep(1), later)
    assert d.wait_time(ep(1), later) == pytest.approx(5.0)


def test_memory_is_bounded_dropping_the_oldest_expired_first() -> None:
    d = DialLimiter(rate=0, max_endpoints=16)
    d.start(ep(1000), now=0.0)  # in progress throughout: never dropped
    for i in range(100):
        d.start(ep(i), now=float(i))
        d.failed(ep(i), now=float(i))  # back-off expires at i + 5
        assert len(d) <= 16
    assert ep(1000) in d
    assert d.wait_time(ep(1000), now=100.0) == math.inf
    kept = [i for i in range(100) if ep(i) in d]
    assert kept == list(range(100 - len(kept), 100)), "dropped a later expiry before an earlier"
    assert len(kept) >= 16 - 16 // 8 - 1
    assert d.wait_time(ep(99), now=100.0) == pytest.approx(4.0)  # the newest still back off


def test_default_memory_bound() -> None:
    d = DialLimiter(rate=0)
    for i in range(MAX_ENDPOINTS + 1000):
        d.start(ep(i), now=0.0)
        d.failed(ep(i), now=0.0)
    assert MAX_ENDPOINTS * 7 // 8 <= len(d) <= MAX_ENDPOINTS


def test_bad_dial_arguments_rejected() -> None:
    with pytest.raises(ValueError):
        DialLimiter(burst=0)
    with pytest.raises(ValueError):
        DialLimiter(backoff_initial=0)
    with pytest.raises(ValueError):
        DialLimiter(backoff_initial=10, backoff_max=5)
    with pytest.raises(ValueError):
        DialLimiter(max_endpoints=0)
