"""When to start playing: the Markov throughput model and the start policy.

Every test seeds its generator, so the outcomes are fixed; the bounds are wide enough that
they also hold for other seeds (the tests were tried with many). Timings are printed, never
asserted.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.player.start_threshold import (
    MAX_STEPS,
    SIMULATIONS,
    Chain,
    StartPolicy,
    ThroughputModel,
    _schedule,
)
from cadenza.protocol.manifest import CHUNK_SIZE

BITRATE = 20_000.0  # bytes per second: 160 kbit/s
TRACK = 4_000_000  # bytes: 200 s at BITRATE


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def steady(rate: float, seconds: float, *, step: float = 0.1, **options: float) -> ThroughputModel:
    """A model fed ``rate`` bytes/s in arrivals every ``step`` seconds."""
    model = ThroughputModel(**options)
    now = 0.0
    model.begin(now)
    for _ in range(round(seconds / step)):
        now += step
        model.record(round(rate * step), now)
    return model


def on_off(high: float, on: float, off: float, seconds: float) -> ThroughputModel:
    """Bursts at ``high`` bytes/s for ``on`` seconds, then nothing for ``off`` seconds."""
    model = ThroughputModel()
    now, step = 0.0, 0.1
    model.begin(now)
    while now < seconds - 1e-9:
        for _ in range(round(on / step)):
            now += step
            model.record(round(high * step), now)
        for _ in range(round(off / step)):
            now += step
            model.record(0, now)
    return model


def needed(model: ThroughputModel, seed: int = 0, total: int = TRACK, **policy: float) -> int:
    result = StartPolicy(**policy).bytes_needed(  # type: ignore[arg-type]
        model, total_bytes=total, bitrate_bytes_per_s=BITRATE, rng=rng(seed)
    )
    assert result is not None
    return result


# --- feeding the model


def test_arrivals_become_ticks_of_throughput() -> None:
    model = ThroughputModel()
    assert model.observed_seconds == 0 and model.mean_rate() is None
    model.begin(10.0)
    model.record(50_000, 11.0)  # 1 s at 50 kB/s
    assert model.observed_seconds == pytest.approx(1.0)
    assert model.mean_rate() == pytest.approx(50_000)
    model.record(1_000, 11.0)  # same instant: joins the tick in progress
    model.record(0, 11.05)
    assert model.observed_seconds == pytest.approx(1.05)


def test_first_arrival_without_begin_only_starts_the_clock() -> None:
    model = ThroughputModel()
    model.record(16_384, 5.0)
    assert model.observed_seconds == 0
    model.record(16_384, 5.5)
    assert model.mean_rate() == pytest.approx(16_384 / 0.5)


def test_idleness_is_not_a_stall() -> None:
    model = steady(40_000, 10)
    model.idle()
    model.record(16_384, 1000.0)  # the next track's first chunk, long after
    assert model.observed_seconds == pytest.approx(10)
    model.begin(2000.0)
    model.record(40_000, 2001.0)
    assert model.mean_rate() == pytest.approx(40_000)


def test_a_long_gap_counts_as_at_most_max_gap() -> None:
    model = steady(40_000, 10)
    before = model.observed_seconds
    model.record(0, 10 + 600.0)
    assert model.observed_seconds == pytest.approx(before + 5.0)


def test_history_is_bounded() -> None:
    model = steady(40_000, 200)
    assert model.observed_seconds == pytest.approx(60)


# --- the decisions


def test_nothing_known_means_do_not_start_unless_the_file_is_here() -> None:
    model = ThroughputModel()
    policy = StartPolicy(rng=rng())
    assert not policy.should_start(
        model, buffered_bytes=TRACK // 2, remaining_bytes=TRACK // 2, bitrate_bytes_per_s=BITRATE
    )
    assert policy.should_start(
        model, buffered_bytes=TRACK, remaining_bytes=0, bitrate_bytes_per_s=BITRATE
    )
    assert policy.bytes_needed(model, total_bytes=TRACK, bitrate_bytes_per_s=BITRATE) is None
    assert model.stutter_probability(1, 1, BITRATE, rng=rng()) == 1.0
    assert model.stutter_probability(1, 0, BITRATE, rng=rng()) == 0.0


def test_a_fast_link_starts_after_the_first_chunk() -> None:
    model = ThroughputModel()
    model.begin(0.0)
    model.record(CHUNK_SIZE, CHUNK_SIZE / (10 * BITRATE))  # one chunk, at 10x the bitrate
    policy = StartPolicy(rng=rng())
    assert not policy.should_start(
        model, buffered_bytes=0, remaining_bytes=TRACK, bitrate_bytes_per_s=BITRATE
    )
    assert policy.should_start(
        model,
        buffered_bytes=CHUNK_SIZE,
        remaining_bytes=TRACK - CHUNK_SIZE,
        bitrate_bytes_per_s=BITRATE,
    )
    assert needed(model) == CHUNK_SIZE
    # And the same after a minute of it.
    assert needed(steady(10 * BITRATE, 60)) == CHUNK_SIZE


def test_a_file_smaller_than_a_chunk_needs_only_itself() -> None:
    assert needed(steady(10 * BITRATE, 5), total=5_000) == 5_000


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.8])
def test_a_slow_steady_link_needs_the_analytic_buffer(fraction: float) -> None:
    """At ``fraction`` of the bitrate, playback catches up unless it starts with
    ``(1 - fraction)`` of the file: then the download ends just as playback does."""
    analytic = TRACK * (1 - fraction)
    # The chain alone (a negligible prior): the simulation reproduces the analytic value.
    exact = steady(fraction * BITRATE, 60, prior_weight=1e-6)
    assert needed(exact) == pytest.approx(analytic, rel=0.01)
    # With the default prior, some doubt that a minute of history holds for 200 s more: it
    # costs a few percent of the file (the 1% quantile of 500 futures varies with the seed).
    doubtful = [needed(steady(fraction * BITRATE, 60), seed) for seed in range(4)]
    print(f"\nlink at {fraction} x bitrate: analytic {analytic:.0f} B, model {doubtful}")
    assert all(analytic * 0.99 <= n <= analytic + 0.12 * TRACK for n in doubtful)


def test_a_slow_link_waits_then_starts() -> None:
    model = steady(0.5 * BITRATE, 30)
    policy = StartPolicy(rng=rng())
    for tenths, start in [(1, False), (5, False), (9, True)]:
        buffered = TRACK * tenths // 10
        assert start == policy.should_start(
            model,
            buffered_bytes=buffered,
            remaining_bytes=TRACK - buffered,
            bitrate_bytes_per_s=BITRATE,
        )


def test_a_bursty_link_needs_more_than_a_steady_one_of_the_same_mean() -> None:
    mean = 0.8 * BITRATE
    for on, off in [(2, 2), (5, 5)]:
        bursty = on_off(mean * (on + off) / on, on, off, 60)
        steady_link = steady(bursty.mean_rate() or 0, 60)
        for seed in range(3):
            assert needed(bursty, seed) > needed(steady_link, seed) + 5 * BITRATE, (on, off, seed)


def test_probability_falls_as_the_buffer_grows() -> None:
    for model in [on_off(1.6 * BITRATE, 3, 3, 60), steady(0.7 * BITRATE, 20)]:
        buffers = np.linspace(0, TRACK, 41).astype(int)
        chances = [
            model.stutter_probability(int(b), TRACK - int(b), BITRATE, rng=rng(5)) for b in buffers
        ]
        assert all(a >= b for a, b in itertools.pairwise(chances)), chances
        assert chances[0] == 1.0 and chances[-1] == 0.0


def test_bytes_needed_is_where_the_probability_meets_the_target() -> None:
    model = on_off(1.6 * BITRATE, 3, 3, 60)
    for target in (0.01, 0.05, 0.2):
        policy = StartPolicy(target=target)
        enough = needed(model, 7, target=target)
        at = model.stutter_probability(enough, TRACK - enough, BITRATE, rng=rng(7))
        below = model.stutter_probability(enough - 1, TRACK - enough + 1, BITRATE, rng=rng(7))
        assert at <= target < below
        assert policy.should_start(
            model,
            buffered_bytes=enough,
            remaining_bytes=TRACK - enough,
            bitrate_bytes_per_s=BITRATE,
            rng=rng(7),
        )


@pytest.mark.parametrize(("current", "expected"), [(1, 0.1 * BITRATE), (0, 0.0)])
def test_a_stall_in_the_first_tick_counts(current: int, expected: float) -> None:
    """A link that alternates, tick by tick, between nothing and twice the bitrate: from the
    fast level, the next tick is empty, and playback needs a tick's worth of buffer."""
    chain = Chain(
        transitions=np.array([[0.0, 1.0], [1.0, 0.0]]),
        level_rates=np.array([0.0, 2 * BITRATE]),
        current=current,
        tick=0.1,
    )
    need = chain.simulate(200.0, BITRATE, 50, rng())
    assert need == pytest.approx(np.full(50, expected), abs=1e-6)


def test_the_horizon_limits_the_look_ahead() -> None:
    model = steady(0.5 * BITRATE, 30)
    full = model.stutter_probability(TRACK // 10, TRACK, BITRATE, rng=rng())
    soon = model.stutter_probability(TRACK // 10, TRACK, BITRATE, horizon=5.0, rng=rng())
    assert full == 1.0 and soon == 0.0


def test_deterministic_given_the_seed() -> None:
    model = on_off(1.6 * BITRATE, 2, 3, 60)
    first = model.buffer_needs(200.0, BITRATE, rng=rng(42))
    again = model.buffer_needs(200.0, BITRATE, rng=rng(42))
    other = model.buffer_needs(200.0, BITRATE, rng=rng(43))
    assert first is not None and again is not None and other is not None
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert needed(model, 3) == needed(model, 3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 200_000), min_size=1, max_size=80),
    st.integers(1, 8_000_000),
    st.integers(0, 2**32 - 1),
)
def test_any_history_gives_a_probability_falling_with_buffer(
    rates: list[float], total: int, seed: int
) -> None:
    model = ThroughputModel()
    now = 0.0
    model.begin(now)
    for rate in rates:
        now += 0.25
        model.record(round(rate * 0.25), now)
    previous = 1.0
    for buffered in sorted({0, total // 7, total // 3, total // 2, total - 1, total}):
        chance = model.stutter_probability(
            buffered, total - buffered, BITRATE, simulations=64, rng=rng(seed)
        )
        assert 0.0 <= chance <= previous
        previous = chance
    enough = StartPolicy().bytes_needed(
        model, total_bytes=total, bitrate_bytes_per_s=BITRATE, rng=rng(seed)
    )
    assert enough is not None and min(CHUNK_SIZE, total) <= enough <= total


def test_schedule_is_fine_first_and_bounded() -> None:
    for ticks in [1, 7, 100, 2_400, 36_000, 10**6]:
        sizes = _schedule(ticks)
        assert sum(sizes) == ticks
        assert len(sizes) <= MAX_STEPS
        assert all(s & (s - 1) == 0 for s in sizes)  # powers of two
        fine = min(8 if ticks <= 36_000 else 4, ticks)  # an hour of ticks gets 8 single ones
        assert sizes[:fine] == [1] * fine


def test_speed_is_reported() -> None:
    """Not asserted: printed, for the record (``pytest -s``)."""
    for name, model in [
        ("steady", steady(0.8 * BITRATE, 60)),
        ("on/off", on_off(1.6 * BITRATE, 2, 2, 60)),
    ]:
        for seconds in (200.0, 3600.0):
            times = []
            for seed in range(30):
                start = time.perf_counter()
                model.buffer_needs(seconds, BITRATE, simulations=SIMULATIONS, rng=rng(seed))
                times.append(time.perf_counter() - start)
            print(
                f"\n{name}, {seconds:.0f} s track, {SIMULATIONS} simulations:"
                f" median {1000 * float(np.median(times)):.2f} ms,"
                f" max {1000 * max(times):.2f} ms"
            )
            assert all(math.isfinite(t) for t in times)
