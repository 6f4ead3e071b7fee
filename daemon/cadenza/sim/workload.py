"""A synthetic listening workload for the swarm simulation (bench/swarm).

What a thousand speakers play over a day, shaped after the measurements of Kreitz and Niemelä,
"Spotify -- Large Scale, Low Latency, P2P Music-on-Demand Streaming" (P2P'10):

* **Catalogue**: tracks grouped into albums, log-normal durations around 3.5 minutes, files at
  160 kbps (the paper's default quality).
* **Popularity**: Zipf over popularity ranks, the exponent tuned so that the 12% most popular
  tracks get 88% of the plays (the paper's figure); :func:`tune_exponent`.
* **Sessions**: each speaker is idle for exponential gaps (a Poisson process of session starts
  while idle, optionally diurnal: thinned by a daily cosine); a session lasts a heavy-tailed
  time (log-normal or Pareto, capped) and is a sequence of plays: the first is a Zipf draw, each
  next one follows the sequence (next track of the album) with probability 0.61 and is a new
  Zipf draw otherwise (the paper: 61% of plays are predictable, so can be prefetched); a play
  may be skipped part-way (at a uniform point), and the session's end cuts its last play.
  Time 0 is midnight; sessions start from t = 0 idle, so a warm-up period is not steady state.

Popularity is by album: albums are ranked by a random permutation (not catalogue order), the
tracks of an album take consecutive ranks in a random order. Ranking tracks independently of
their album cannot reproduce both figures: the track after a popular one would then be in the
top 12% with probability 0.12, so only about 0.39 * 0.88 + 0.61 * 0.12 = 42% of plays would be
in the top 12%. With album blocks, following the album stays in equally popular tracks, and the
measured share of plays in the top 12% stays at the Zipf figure (:meth:`Workload.stats`). At the
end of an album the sequence continues with a fixed "next album" (autoplay, or a playlist) of
similar popularity, so the continuation is as predictable as the next album track.

Pure and deterministic: :func:`generate` with the same configuration and seed returns the same
workload, in any process (every draw comes from ``random.Random`` instances seeded from the
seed; string seeds are hashed with SHA-512, not with the salted ``hash``). Each speaker has its
own generator, so speaker ``i``'s plays do not depend on how many speakers there are.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

DAY_S = 86_400.0

# The paper: "the 12% most popular tracks account for 88% of the plays".
TOP_FRACTION = 0.12
TOP_SHARE = 0.88
# The paper: 61% of plays follow the previous one in its album or playlist (predictable, so the
# client prefetches them); the other 39% are a new choice.
SEQUENTIAL_SHARE = 0.61
# The paper's default stream quality (Ogg Vorbis q5), 20 kB/s.
BITRATE_BPS = 160_000
# Albums and EPs on a streaming service: typically 8 to 14 tracks.
ALBUM_MIN_TRACKS = 8
ALBUM_MAX_TRACKS = 14
# Popular music: median track about 3.5 minutes; sigma 0.3 puts the middle 95% between about
# 1.9 and 6.3 minutes; clipped to 1..10 minutes (no interludes, no 20-minute suites).
TRACK_MEDIAN_S = 210.0
TRACK_SIGMA = 0.3
TRACK_MIN_S = 60.0
TRACK_MAX_S = 600.0
# A home speaker is used a few times a day: a session every 4 hours on average (off time).
MEAN_GAP_S = 4 * 3600.0
# Sessions: median 20 minutes (five or six tracks), heavy-tailed: log-normal sigma 1.2 gives a
# mean of about 41 minutes and a 99th percentile 16 times the median (an exponential: 6.6 times);
# the Pareto alternative defaults to alpha 1.5 (finite mean, infinite variance).
SESSION_MEDIAN_S = 20 * 60.0
SESSION_SIGMA = 1.2
SESSION_ALPHA = 1.5
# Nobody listens for more than 8 hours at a stretch (a party, a shop): the cap.
SESSION_MAX_S = 8 * 3600.0
# Share of plays the listener skips part-way (stops at a uniform point of the track): a guess in
# line with later studies of streaming skips (one play in four or five).
SKIP_SHARE = 0.2
# A session ending less than this into a track does not count that track as played.
MIN_LISTEN_S = 1.0
# The album played after another is one of those this many places above or below it in
# popularity: related music of similar popularity, so that the sequence stays in the same stratum.
NEXT_ALBUM_SPAN = 3
# Diurnal rhythm off by default; when on, session starts peak at 20:00 (time 0 is midnight).
DIURNAL_PEAK_HOUR = 20.0


def _top_count(n: int, top_fraction: float) -> int:
    return max(1, min(n, round(n * top_fraction)))


def zipf_share(n: int, s: float, top_fraction: float = TOP_FRACTION) -> float:
    """Share of Zipf(``s``) draws over ``n`` ranks that fall in the top ``top_fraction``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    k = _top_count(n, top_fraction)
    weights = [r**-s for r in range(1, n + 1)]
    return math.fsum(weights[:k]) / math.fsum(weights)


def tune_exponent(
    n: int, target_share: float = TOP_SHARE, top_fraction: float = TOP_FRACTION
) -> float:
    """The Zipf exponent giving ``target_share`` of the draws to the top ``top_fraction`` of
    ``n`` ranks (bisection; the share grows with the exponent, from k/n at 0 towards 1)."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be in (0, 1), got {top_fraction}")
    floor = _top_count(n, top_fraction) / n
    if not floor < target_share < 1:
        raise ValueError(f"target_share must be in ({floor:.4g}, 1) for n={n}, got {target_share}")
    lo, hi = 0.0, 1.0
    while zipf_share(n, hi, top_fraction) < target_share:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        if zipf_share(n, mid, top_fraction) < target_share:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class ZipfSampler:
    """Draws popularity ranks (0 = most popular) with P(rank r) proportional to (r + 1)^-s."""

    def __init__(self, n: int, exponent: float) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.exponent = exponent
        self._cumulative = list(itertools.accumulate(r**-exponent for r in range(1, n + 1)))
        self._total = self._cumulative[-1]

    def rank(self, rng: random.Random) -> int:
        return min(bisect.bisect_right(self._cumulative, rng.random() * self._total), self.n - 1)


@dataclass(frozen=True)
class WorkloadConfig:
    """Parameters of :func:`generate`; defaults follow the paper where it has a figure."""

    speakers: int = 1000
    tracks: int = 10_000
    duration_s: float = DAY_S
    album_min_tracks: int = ALBUM_MIN_TRACKS
    album_max_tracks: int = ALBUM_MAX_TRACKS
    track_median_s: float = TRACK_MEDIAN_S
    track_sigma: float = TRACK_SIGMA
    track_min_s: float = TRACK_MIN_S
    track_max_s: float = TRACK_MAX_S
    bitrate_bps: int = BITRATE_BPS
    # None: tuned so that top_share of the draws fall in the top top_fraction of the tracks.
    zipf_exponent: float | None = None
    top_fraction: float = TOP_FRACTION
    top_share: float = TOP_SHARE
    sequential_share: float = SEQUENTIAL_SHARE
    skip_share: float = SKIP_SHARE
    mean_gap_s: float = MEAN_GAP_S  # idle time from a session's end to the next's start
    # 0: sessions start at a constant rate; a: the rate varies by +-a over the day.
    diurnal_amplitude: float = 0.0
    diurnal_peak_hour: float = DIURNAL_PEAK_HOUR
    session_model: Literal["lognormal", "pareto"] = "lognormal"
    session_median_s: float = SESSION_MEDIAN_S
    session_sigma: float = SESSION_SIGMA
    session_alpha: float = SESSION_ALPHA
    session_max_s: float = SESSION_MAX_S

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"WorkloadConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("speakers", "tracks", "album_min_tracks", "bitrate_bps"):
            if getattr(self, name) < 1:
                raise bad(name, ">= 1")
        if self.album_max_tracks < self.album_min_tracks:
            raise bad("album_max_tracks", f">= album_min_tracks ({self.album_min_tracks})")
        positive = (
            "duration_s",
            "track_median_s",
            "track_min_s",
            "mean_gap_s",
            "session_median_s",
            "session_sigma",
            "session_alpha",
        )
        for name in positive:
            if not 0 < getattr(self, name) < math.inf:
                raise bad(name, "positive and finite")
        if not 0 <= self.track_sigma < math.inf:
            raise bad("track_sigma", ">= 0 and finite")
        if not self.track_min_s <= self.track_max_s < math.inf:
            raise bad("track_max_s", f"finite and >= track_min_s ({self.track_min_s})")
        if not self.session_max_s >= MIN_LISTEN_S:
            raise bad("session_max_s", f">= {MIN_LISTEN_S}")
        if self.zipf_exponent is not None and not 0 <= self.zipf_exponent < math.inf:
            raise bad("zipf_exponent", "None, or >= 0 and finite")
        if not 0 < self.top_fraction < 1:
            raise bad("top_fraction", "in (0, 1)")
        if self.zipf_exponent is None:
            floor = _top_count(self.tracks, self.top_fraction) / self.tracks
            if self.tracks < 2 or not floor < self.top_share < 1:
                raise bad("top_share", f"in ({floor:.4g}, 1) with {self.tracks} tracks")
        for name in ("sequential_share", "skip_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "in [0, 1]")
        if not 0 <= self.diurnal_amplitude < 1:
            raise bad("diurnal_amplitude", "in [0, 1)")
        if not 0 <= self.diurnal_peak_hour < 24:
            raise bad("diurnal_peak_hour", "in [0, 24)")
        if self.session_model not in ("lognormal", "pareto"):
            raise bad("session_model", "'lognormal' or 'pareto'")

    def exponent(self) -> float:
        """The Zipf exponent: the configured one, or the one tuned to the top share."""
        if self.zipf_exponent is not None:
            return self.zipf_exponent
        return tune_exponent(self.tracks, self.top_share, self.top_fraction)


@dataclass(frozen=True, slots=True)
class Track:
    id: int
    album: int
    position: int  # 0-based, in the album
    duration_s: float
    size: int  # bytes, at the configured bitrate


@dataclass(frozen=True)
class Catalogue:
    """Tracks (ids 0..n-1, albums contiguous), their popularity ranks, and album successors."""

    tracks: tuple[Track, ...]
    albums: tuple[range, ...]  # the track ids of each album, in order
    by_rank: tuple[int, ...]  # track id at popularity rank r (0 = most popular)
    rank_of: tuple[int, ...]  # popularity rank of track id t
    next_album: tuple[int, ...]  # the album that plays after each one (autoplay, playlist)

    @classmethod
    def generate(cls, config: WorkloadConfig, rng: random.Random) -> Catalogue:
        albums: list[range] = []
        first = 0
        while first < config.tracks:
            size = rng.randint(config.album_min_tracks, config.album_max_tracks)
            albums.append(range(first, min(first + size, config.tracks)))
            first += size
        tracks = []
        for album_id, album in enumerate(albums):
            for position, track_id in enumerate(album):
                duration = config.track_median_s * math.exp(rng.gauss(0.0, config.track_sigma))
                duration = min(max(duration, config.track_min_s), config.track_max_s)
                size = round(duration * config.bitrate_bps / 8)
                tracks.append(Track(track_id, album_id, position, duration, size))
        # Popularity: a random order of the albums, each album's tracks in a random order.
        album_order = rng.sample(range(len(albums)), len(albums))
        by_rank: list[int] = []
        for album_id in album_order:
            members = list(albums[album_id])
            rng.shuffle(members)
            by_rank.extend(members)
        rank_of = [0] * len(by_rank)
        for rank, track_id in enumerate(by_rank):
            rank_of[track_id] = rank
        # After an album: a "related" one, of similar popularity (within NEXT_ALBUM_SPAN places
        # in the album ranking). A successor drawn from the whole ranking would send the many
        # plays that continue after a top album to wherever it lands, often outside the top.
        next_album = [0] * len(albums)
        for i, album_id in enumerate(album_order):
            near = [
                album_order[j]
                for j in range(i - NEXT_ALBUM_SPAN, i + NEXT_ALBUM_SPAN + 1)
                if j != i and 0 <= j < len(albums)
            ]
            next_album[album_id] = rng.choice(near) if near else album_id
        return cls(tuple(tracks), tuple(albums), tuple(by_rank), tuple(rank_of), tuple(next_album))

    def next_track(self, track_id: int) -> int:
        """The track that follows ``track_id``: the next on its album, or the next album's first."""
        track = self.tracks[track_id]
        album = self.albums[track.album]
        if track.position + 1 < len(album):
            return track_id + 1
        return self.albums[self.next_album[track.album]][0]


@dataclass(frozen=True, slots=True)
class Play:
    track: int
    start: float  # seconds from the start of the workload
    listen: float  # seconds played (the whole track unless skipped or the session ended)
    sequential: bool  # follows the previous play in its album or playlist (prefetchable)
    skipped: bool


@dataclass(frozen=True, slots=True)
class Session:
    start: float
    end: float  # the end of its last play
    first: int  # index of its first play in the speaker's plays
    count: int  # number of plays


@dataclass(frozen=True)
class WorkloadStats:
    speakers: int
    plays: int
    sessions: int
    top_share: float  # share of plays in the top top_fraction of tracks by popularity rank
    sequential_share: float  # among the plays after a session's first
    skip_share: float
    mean_session_s: float
    mean_session_plays: float
    plays_per_speaker: float
    mean_gap_s: float  # from a session's end to the speaker's next session start


@dataclass(frozen=True)
class Workload:
    config: WorkloadConfig
    seed: int
    exponent: float
    catalogue: Catalogue
    plays: tuple[tuple[Play, ...], ...]  # per speaker, by start time
    sessions: tuple[tuple[Session, ...], ...]  # per speaker, by start time

    def timeline(self) -> Iterator[tuple[int, Play]]:
        """All plays as (speaker, play), by start time (ties by speaker)."""
        streams = [((p.start, s, p) for p in plays) for s, plays in enumerate(self.plays)]
        for _, speaker, play in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            yield speaker, play

    def stats(self) -> WorkloadStats:
        """Measured figures, to compare with the paper's (and the configuration's)."""
        top = _top_count(len(self.catalogue.tracks), self.config.top_fraction)
        rank_of = self.catalogue.rank_of
        plays = [p for speaker in self.plays for p in speaker]
        sessions = [s for speaker in self.sessions for s in speaker]
        followers = len(plays) - len(sessions)  # plays that are not a session's first
        gaps = [
            b.start - a.end for speaker in self.sessions for a, b in itertools.pairwise(speaker)
        ]
        n = max(len(plays), 1)
        return WorkloadStats(
            speakers=len(self.plays),
            plays=len(plays),
            sessions=len(sessions),
            top_share=sum(rank_of[p.track] < top for p in plays) / n,
            sequential_share=sum(p.sequential for p in plays) / max(followers, 1),
            skip_share=sum(p.skipped for p in plays) / n,
            mean_session_s=math.fsum(s.end - s.start for s in sessions) / max(len(sessions), 1),
            mean_session_plays=len(plays) / max(len(sessions), 1),
            plays_per_speaker=len(plays) / len(self.plays),
            mean_gap_s=math.fsum(gaps) / len(gaps) if gaps else math.nan,
        )


def session_length(config: WorkloadConfig, rng: random.Random) -> float:
    """One session's intended length in seconds (heavy-tailed, capped at session_max_s)."""
    if config.session_model == "pareto":
        # Median m: the scale is m / 2^(1/alpha).
        scale = config.session_median_s / 2 ** (1 / config.session_alpha)
        length = scale * rng.paretovariate(config.session_alpha)
    else:
        length = config.session_median_s * math.exp(rng.gauss(0.0, config.session_sigma))
    return min(length, config.session_max_s)


def _next_start(config: WorkloadConfig, after: float, rng: random.Random) -> float:
    """The first session start after ``after``: Poisson, thinned by the diurnal factor."""
    rate = 1 / config.mean_gap_s
    a = config.diurnal_amplitude
    if a == 0:
        return after + rng.expovariate(rate)
    t = after
    phase = config.diurnal_peak_hour / 24
    while True:
        t += rng.expovariate(rate * (1 + a))
        if rng.random() * (1 + a) <= 1 + a * math.cos(2 * math.pi * (t / DAY_S - phase)):
            return t


def _speaker(
    config: WorkloadConfig, catalogue: Catalogue, sampler: ZipfSampler, rng: random.Random
) -> tuple[tuple[Play, ...], tuple[Session, ...]]:
    plays: list[Play] = []
    sessions: list[Session] = []
    tracks = catalogue.tracks
    t = 0.0
    while True:
        start = _next_start(config, t, rng)
        if start >= config.duration_s:
            break
        stop = start + session_length(config, rng)
        now = start
        first = len(plays)
        previous: int | None = None
        while now < stop and now < config.duration_s:
            follow = rng.random() < config.sequential_share
            rank = sampler.rank(rng)
            skip = rng.random() < config.skip_share
            skip_point = rng.random()
            if follow and previous is not None:
                track, sequential = catalogue.next_track(previous), True
            else:
                track, sequential = catalogue.by_rank[rank], False
            duration = tracks[track].duration_s
            listen = max(MIN_LISTEN_S, skip_point * duration) if skip else duration
            if now + listen > stop:  # the listener stops here
                listen, skip = stop - now, False
                if listen < MIN_LISTEN_S:
                    break
            plays.append(Play(track, now, listen, sequential, skip))
            now += listen
            previous = track
        if len(plays) > first:
            sessions.append(Session(start, now, first, len(plays) - first))
        t = max(now, stop) if len(plays) == first else now
    return tuple(plays), tuple(sessions)


def generate(config: WorkloadConfig, seed: int) -> Workload:
    """The workload for ``config``; the same (config, seed) always gives the same workload."""
    exponent = config.exponent()
    catalogue = Catalogue.generate(config, random.Random(f"{seed}:catalogue"))
    sampler = ZipfSampler(len(catalogue.tracks), exponent)
    per_speaker = [
        _speaker(config, catalogue, sampler, random.Random(f"{seed}:speaker:{i}"))
        for i in range(config.speakers)
    ]
    return Workload(
        config=config,
        seed=seed,
        exponent=exponent,
        catalogue=catalogue,
        plays=tuple(p for p, _ in per_speaker),
        sessions=tuple(s for _, s in per_speaker),
    )


def past_plays(workload: Workload, days: float) -> tuple[tuple[Play, ...], ...]:
    """Each speaker's plays over ``days`` before the workload (same catalogue and popularity,
    other draws): what a speaker that has been in use for a while holds in its cache."""
    config = dataclasses.replace(workload.config, duration_s=days * DAY_S)
    sampler = ZipfSampler(len(workload.catalogue.tracks), workload.exponent)
    return tuple(
        _speaker(
            config,
            workload.catalogue,
            sampler,
            random.Random(f"{workload.seed}:past:{i}"),
        )[0]
        for i in range(config.speakers)
    )


__all__ = [
    "Catalogue",
    "Play",
    "Session",
    "Track",
    "Workload",
    "WorkloadConfig",
    "WorkloadStats",
    "ZipfSampler",
    "generate",
    "past_plays",
    "session_length",
    "tune_exponent",
    "zipf_share",
]
