"""The swarm simulation's synthetic workload: Zipf tuning, sessions, plays, determinism."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics

import pytest

from cadenza.sim.workload import (
    DAY_S,
    NEXT_ALBUM_SPAN,
    Catalogue,
    Workload,
    WorkloadConfig,
    ZipfSampler,
    generate,
    session_length,
    tune_exponent,
    zipf_share,
)

# The 12% most popular tracks get 88% of the plays; 61% of plays follow the previous one.
TOP_FRACTION = 0.12
TOP_SHARE = 0.88
SEQUENTIAL = 0.61
# An exponential's 99th percentile over its median: ln(100) / ln(2).
EXPONENTIAL_P99_OVER_MEDIAN = math.log(100) / math.log(2)


def album_place(cat: Catalogue, track: int) -> int:
    """The place of the track's album in the album popularity ranking."""
    first_ranks = sorted({min(cat.rank_of[t] for t in album) for album in cat.albums})
    album = cat.albums[cat.tracks[track].album]
    return first_ranks.index(min(cat.rank_of[t] for t in album))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


@pytest.fixture(scope="module")
def day() -> Workload:
    """1,000 speakers over a day with 10,000 tracks: about 60,000 plays."""
    return generate(WorkloadConfig(), seed=1)


# --- Zipf ---


def test_zipf_share_grows_with_the_exponent() -> None:
    shares = [zipf_share(1000, s) for s in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert shares[0] == pytest.approx(0.12)
    assert shares == sorted(shares)
    assert shares[-1] < 1


@pytest.mark.parametrize("n", [1000, 10_000])
def test_tuned_exponent_puts_88_percent_of_plays_in_the_top_12_percent(n: int) -> None:
    s = tune_exponent(n)
    assert zipf_share(n, s, TOP_FRACTION) == pytest.approx(TOP_SHARE, abs=1e-6)
    sampler = ZipfSampler(n, s)
    rng = random.Random(n)
    draws = [sampler.rank(rng) for _ in range(50_000)]
    measured = sum(r < round(n * TOP_FRACTION) for r in draws) / len(draws)
    print(f"n={n}: exponent {s:.4f}, measured top-12% share {measured:.4f}")
    assert measured == pytest.approx(TOP_SHARE, abs=0.015)
    assert min(draws) >= 0 and max(draws) < n


def test_tune_exponent_refuses_unreachable_targets() -> None:
    with pytest.raises(ValueError, match="target_share"):
        tune_exponent(1000, target_share=0.10)  # below the uniform share (0.12)
    with pytest.raises(ValueError, match="target_share"):
        tune_exponent(1000, target_share=1.0)


# --- catalogue ---


def test_catalogue_albums_durations_sizes_and_popularity() -> None:
    config = WorkloadConfig(tracks=5000)
    cat = Catalogue.generate(config, random.Random(3))
    assert [t.id for t in cat.tracks] == list(range(5000))
    sizes = [len(a) for a in cat.albums]
    assert all(8 <= n <= 14 for n in sizes[:-1]) and 1 <= sizes[-1] <= 14
    assert sum(sizes) == 5000
    durations = [t.duration_s for t in cat.tracks]
    assert min(durations) >= 60 and max(durations) <= 600
    assert statistics.median(durations) == pytest.approx(210, rel=0.05)
    assert all(t.size == round(t.duration_s * 20_000) for t in cat.tracks)  # 160 kbps
    # Popularity: a permutation, each album on consecutive ranks, albums not in catalogue order.
    assert sorted(cat.by_rank) == list(range(5000))
    assert all(cat.by_rank[cat.rank_of[t]] == t for t in range(5000))
    for album in cat.albums:
        ranks = sorted(cat.rank_of[t] for t in album)
        assert ranks == list(range(ranks[0], ranks[0] + len(album)))
    album_order = [cat.tracks[t].album for t in cat.by_rank[:: config.album_max_tracks]]
    assert album_order != sorted(album_order)
    # The sequence: the next track on the album, then the first track of a related album, of
    # similar popularity (a few places away in the album ranking).
    for album_id, album in enumerate(cat.albums):
        following = cat.albums[cat.next_album[album_id]]
        assert cat.next_track(album[0]) == (album[1] if len(album) > 1 else following[0])
        assert cat.next_track(album[-1]) == following[0]
        assert cat.next_album[album_id] != album_id
        places = abs(album_place(cat, following[0]) - album_place(cat, album[0]))
        assert 1 <= places <= NEXT_ALBUM_SPAN


# --- the workload's figures ---


@pytest.mark.parametrize("tracks", [1000, 10_000])
def test_workload_reproduces_the_papers_shares(tracks: int) -> None:
    w = generate(WorkloadConfig(tracks=tracks), seed=7)
    stats = w.stats()
    print(
        f"{tracks} tracks: exponent {w.exponent:.4f}, {stats.plays} plays, "
        f"top-12% share {stats.top_share:.4f}, sequential {stats.sequential_share:.4f}, "
        f"skipped {stats.skip_share:.4f}, {stats.mean_session_plays:.1f} plays per session"
    )
    assert stats.plays >= 50_000
    assert stats.top_share == pytest.approx(TOP_SHARE, abs=0.015)
    assert stats.sequential_share == pytest.approx(SEQUENTIAL, abs=0.02)
    # Slightly under 0.2: a session's last play ends with the session, not with a skip.
    assert stats.skip_share == pytest.approx(0.2, abs=0.02)


def test_plays_follow_sessions_and_sequences(day: Workload) -> None:
    cat = day.catalogue
    for plays, sessions in zip(day.plays, day.sessions, strict=True):
        for a, b in itertools.pairwise(plays):
            assert a.start + a.listen <= b.start + 1e-6  # one thing at a time
        for session in sessions:
            mine = plays[session.first : session.first + session.count]
            assert mine[0].start == session.start and not mine[0].sequential
            assert session.end == pytest.approx(mine[-1].start + mine[-1].listen)
            for a, b in itertools.pairwise(mine):
                assert b.start == pytest.approx(a.start + a.listen)
                if b.sequential:
                    assert b.track == cat.next_track(a.track)
        for p in plays:
            assert 0 < p.listen <= cat.tracks[p.track].duration_s + 1e-9
            assert p.start < day.config.duration_s
    timeline = [p.start for _, p in day.timeline()]
    assert timeline == sorted(timeline)
    assert len(timeline) == day.stats().plays


def test_session_starts_are_poisson() -> None:
    config = WorkloadConfig(speakers=100, tracks=1000, duration_s=60 * DAY_S)
    w = generate(config, seed=3)
    gaps = [b.start - a.end for s in w.sessions for a, b in itertools.pairwise(s)]
    mean = statistics.fmean(gaps)
    cv = statistics.pstdev(gaps) / mean
    print(f"{len(gaps)} gaps: mean {mean / 3600:.3f} h, coefficient of variation {cv:.3f}")
    assert mean == pytest.approx(config.mean_gap_s, rel=0.03)
    assert cv == pytest.approx(1.0, abs=0.05)
    assert w.stats().mean_gap_s == pytest.approx(mean)


def test_diurnal_factor_shifts_sessions_towards_the_evening() -> None:
    config = WorkloadConfig(speakers=100, tracks=1000, duration_s=30 * DAY_S, diurnal_amplitude=0.5)
    w = generate(config, seed=3)
    hours = [int(s.start % DAY_S // 3600) for speaker in w.sessions for s in speaker]
    evening = sum(18 <= h < 22 for h in hours)
    morning = sum(6 <= h < 10 for h in hours)
    assert evening > 1.5 * morning


@pytest.mark.parametrize("model", ["lognormal", "pareto"])
def test_session_lengths_are_heavy_tailed(model: str) -> None:
    config = WorkloadConfig(session_model=model, session_max_s=1e9)  # type: ignore[arg-type]
    rng = random.Random(11)
    lengths = [session_length(config, rng) for _ in range(20_000)]
    median = statistics.median(lengths)
    ratio = quantile(lengths, 0.99) / median
    print(f"{model}: median {median / 60:.1f} min, p99/median {ratio:.1f}")
    assert median == pytest.approx(config.session_median_s, rel=0.05)
    assert ratio > 1.5 * EXPONENTIAL_P99_OVER_MEDIAN
    if model == "pareto":
        # Hill estimator of the tail index on the top 2%: alpha.
        top = sorted(lengths, reverse=True)[:400]
        hill = 1 / statistics.fmean(math.log(x / top[-1]) for x in top[:-1])
        assert hill == pytest.approx(config.session_alpha, rel=0.12)


def test_session_lengths_are_capped() -> None:
    config = WorkloadConfig(session_max_s=3600)
    rng = random.Random(1)
    assert max(session_length(config, rng) for _ in range(10_000)) == 3600


def test_realised_sessions_are_heavy_tailed(day: Workload) -> None:
    lengths = [s.end - s.start for speaker in day.sessions for s in speaker]
    ratio = quantile(lengths, 0.99) / statistics.median(lengths)
    assert ratio > 1.5 * EXPONENTIAL_P99_OVER_MEDIAN
    stats = day.stats()
    assert stats.mean_session_s == pytest.approx(statistics.fmean(lengths))
    assert stats.plays_per_speaker == pytest.approx(stats.plays / 1000)


# --- determinism and validation ---


def test_same_seed_same_workload_different_seed_different() -> None:
    config = WorkloadConfig(speakers=50, tracks=2000)
    a, b, c = generate(config, 42), generate(config, 42), generate(config, 43)
    assert a == b
    assert a.plays != c.plays
    assert a.catalogue != c.catalogue
    # A speaker's plays do not depend on how many speakers there are.
    more = generate(dataclasses.replace(config, speakers=60), 42)
    assert more.plays[:50] == a.plays


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("speakers", 0),
        ("tracks", 0),
        ("album_min_tracks", 0),
        ("album_max_tracks", 7),
        ("duration_s", math.inf),
        ("track_median_s", 0),
        ("track_sigma", -1),
        ("track_max_s", 30),
        ("bitrate_bps", 0),
        ("zipf_exponent", -0.5),
        ("top_fraction", 1.0),
        ("top_share", 0.05),
        ("sequential_share", 1.5),
        ("skip_share", -0.1),
        ("mean_gap_s", 0),
        ("diurnal_amplitude", 1.0),
        ("diurnal_peak_hour", 24),
        ("session_model", "weibull"),
        ("session_median_s", -1),
        ("session_sigma", 0),
        ("session_alpha", 0),
        ("session_max_s", 0.5),
    ],
)
def test_config_errors_name_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"WorkloadConfig\.{name} "):
        WorkloadConfig(**{name: value})  # type: ignore[arg-type]


def test_fixed_exponent_is_used_as_is() -> None:
    config = WorkloadConfig(speakers=5, tracks=100, zipf_exponent=0.8, top_share=0.5)
    assert config.exponent() == 0.8
    assert generate(config, 1).exponent == 0.8
