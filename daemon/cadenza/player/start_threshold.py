"""When to start playing: the chance of a stutter, from a Markov model of recent throughput.

Seed: "model throughput as a Markov chain and simulate". :class:`ThroughputModel` turns the
arrival times of downloaded bytes into a series of rates, one per :data:`TICK`, and for a
given track bitrate files each rate under one of :data:`LEVELS` (multiples of the bitrate,
finest near 1x where the decision is made). From that series it estimates a transition
matrix between levels (recent ticks weigh more: :data:`HALF_LIFE`) and each level's mean
rate. :meth:`ThroughputModel.stutter_probability` then runs many futures of that chain from
the current level with numpy (all simulations at once, one step per loop) and counts those
in which playback, consuming ``bitrate`` bytes a second from the moment it starts, catches up
with the download before the track ends.

Two tricks keep that fast (about 1-3 ms for 500 futures of a four-minute track):

- Each simulated future yields the smallest starting buffer that would have carried it
  through (``max over t of played(t) - downloaded(t)``), so one simulation answers the
  question for every buffer size: the probability for a buffer ``b`` is the share of futures
  needing more than ``b``, and the buffer needed is a quantile (:meth:`StartPolicy.bytes_needed`).
- Steps are single ticks at first, where the buffer is thinnest and a short stall matters,
  then grow by doubling to blocks of ``2**j`` ticks, each drawn from the ``2**j``-step chain
  with the expected bytes over the block given its start and end levels (exact, by matrix
  algebra). A track of any length takes at most :data:`MAX_STEPS` steps.

With little data, a prior fills the gaps: a level lasts :data:`PRIOR_DWELL` seconds on
average and then moves one level up or down. With no data at all, nothing is known, and
:class:`StartPolicy` does not start (unless the whole file is there); the first chunk to
arrive is data.

Pure: no I/O, no clock; times are whatever clock the caller uses (``trio.current_time()``).
Deterministic given a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cadenza.protocol.manifest import CHUNK_SIZE
from cadenza.system.config import DEFAULT_STUTTER_TARGET

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

TICK = 0.1
"""Seconds per state of the chain: short enough to see a stall, long enough to hold a chunk
or so on a slow link."""

HISTORY = 60.0
"""Seconds of throughput kept; older ticks are dropped."""

HALF_LIFE = 20.0
"""Seconds after which an observation counts half: the model follows a link that changes."""

MAX_GAP = 5.0
"""Seconds: a longer pause between arrivals counts as only this much stall. Gaps between
tracks are idleness, not a stalled link (call :meth:`ThroughputModel.idle` when nothing is
wanted); a real stall longer than this is still recorded as a long stall."""

LEVELS = np.array([1 / 8, 1 / 4, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1, 5 / 4, 3 / 2, 2, 4, 8, 16])
"""Edges between throughput levels, in multiples of the track's bitrate: 14 levels, from
"almost stalled" (under 1/8) to "far faster than needed" (16 and up)."""

_CENTRES = np.array([1 / 16, *np.sqrt(LEVELS[:-1] * LEVELS[1:]), 32.0])
"""A level's rate (in bitrates) before anything was seen at it."""

PRIOR_WEIGHT = 0.5
"""Pseudo-transitions of prior per level. Data outweighs it within a second, but not
entirely: after a minute of a steady link, about one simulated future in 25 still
wanders off that level during a four-minute track, which costs a few percent more buffer
than the steady rate alone would need (that doubt is the point)."""

PRIOR_DWELL = 10.0
"""Seconds the prior expects a throughput level to last before it moves one level."""

SIMULATIONS = 500
"""Simulated futures per decision: the probability is known to about +-0.5% at 1%."""

MAX_STEPS = 120
"""Simulation steps for any track length (bounds the time per decision)."""

FINE_STEPS = 8
"""Steps at each block size before the blocks double."""


class ThroughputModel:
    """Recent download throughput of this speaker, as a Markov chain.

    Feed it every arrival of downloaded bytes (from the service and from peers alike, not
    from the cache) with :meth:`record`; call :meth:`begin` when a download starts after a
    pause (so that the wait for its first bytes counts) and :meth:`idle` when nothing is
    being downloaded any more (so that the pause does not count as a stall).
    """

    def __init__(
        self,
        *,
        tick: float = TICK,
        history: float = HISTORY,
        half_life: float = HALF_LIFE,
        max_gap: float = MAX_GAP,
        prior_weight: float = PRIOR_WEIGHT,
    ) -> None:
        if not (tick > 0 and history >= tick and half_life > 0 and max_gap > 0):
            raise ValueError("tick, history, half_life and max_gap must be positive")
        if prior_weight < 0:
            raise ValueError("prior_weight must be >= 0")
        self.tick = tick
        self.prior_weight = prior_weight
        self.half_life = half_life
        self.max_gap = max_gap
        self._ticks: deque[float] = deque(maxlen=round(history / tick))
        self._partial_bytes = 0.0
        self._partial_time = 0.0
        self._last: float | None = None  # time of the last arrival or begin(); None: idle

    # --- feeding

    def begin(self, now: float) -> None:
        """A download starts at ``now``: the time until its first bytes counts as waiting."""
        if self._last is None or now - self._last > self.max_gap:
            self._last = now

    def record(self, nbytes: int, now: float) -> None:
        """``nbytes`` arrived at ``now`` (seconds, any monotonic clock).

        The bytes are spread over the time since the previous arrival (or :meth:`begin`).
        The first arrival after idleness without :meth:`begin` only starts the clock.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        last, self._last = self._last, now
        if last is None:
            return
        gap = now - last
        if gap <= 0:
            self._partial_bytes += nbytes  # same instant: belongs to the tick in progress
            return
        self._spread(nbytes, min(gap, self.max_gap))

    def idle(self) -> None:
        """Nothing is being downloaded from now on (until the next :meth:`begin`/:meth:`record`)."""
        self._last = None

    def _spread(self, nbytes: float, seconds: float) -> None:
        rate = nbytes / seconds
        while seconds > 1e-12:
            take = min(self.tick - self._partial_time, seconds)
            self._partial_bytes += rate * take
            self._partial_time += take
            seconds -= take
            if self._partial_time >= self.tick * (1 - 1e-9):
                self._ticks.append(self._partial_bytes / self.tick)
                self._partial_bytes = self._partial_time = 0.0

    # --- what is known

    @property
    def observed_seconds(self) -> float:
        """Seconds of throughput the model holds (at most ``history``)."""
        return len(self._ticks) * self.tick + self._partial_time

    def mean_rate(self) -> float | None:
        """Recent throughput in bytes per second, recent ticks weighing more; None if unknown."""
        rates, weights = self._observations()
        if rates.size == 0:
            return None
        return float(np.dot(rates, weights) / weights.sum())

    def _observations(self) -> tuple[FloatArray, FloatArray]:
        """Rates (bytes/s) oldest first, and their weights (age, and share of a tick)."""
        rates = list(self._ticks)
        fractions = [1.0] * len(rates)
        if self._partial_time > 0:
            rates.append(self._partial_bytes / self._partial_time)
            fractions.append(self._partial_time / self.tick)
        count = len(rates)
        ages = np.arange(count - 1, -1, -1, dtype=np.float64) * self.tick
        weights = np.exp2(-ages / self.half_life) * np.array(fractions)
        return np.array(rates, dtype=np.float64), weights

    def chain(self, bitrate_bytes_per_s: float) -> Chain | None:
        """The chain for a track of this bitrate; None before any data."""
        rates, weights = self._observations()
        if rates.size == 0:
            return None
        count = len(LEVELS) + 1
        levels = np.searchsorted(LEVELS, rates / bitrate_bytes_per_s, side="right")
        mass = np.bincount(levels, weights, count)
        total = np.bincount(levels, weights * rates, count)
        level_rates = np.where(
            mass > 0, total / np.maximum(mass, 1e-300), _CENTRES * bitrate_bytes_per_s
        )
        counts = np.bincount(levels[:-1] * count + levels[1:], weights[1:], count * count).reshape(
            count, count
        )
        transitions = counts + self.prior_weight * _prior(count, self.tick)
        sums = transitions.sum(axis=1, keepdims=True)
        unseen = sums[:, 0] <= 0  # only without a prior: such a level keeps its rate
        transitions[unseen, unseen] = 1.0
        sums[unseen] = 1.0
        transitions /= sums
        return Chain(transitions, level_rates, int(levels[-1]), self.tick)

    # --- the question

    def stutter_probability(
        self,
        buffered_bytes: int,
        remaining_bytes: int,
        bitrate_bytes_per_s: float,
        *,
        horizon: float | None = None,
        simulations: int = SIMULATIONS,
        rng: np.random.Generator,
    ) -> float:
        """The chance that playback started now runs out of data before the track ends.

        ``buffered_bytes``: contiguous bytes from the playback position; ``remaining_bytes``:
        bytes after those still to download; ``horizon``: look no further than this many
        seconds (default: the end of the track). 1.0 when nothing is known yet, 0.0 when
        nothing remains to download.
        """
        if remaining_bytes <= 0:
            return 0.0
        need = self.buffer_needs(
            (buffered_bytes + remaining_bytes) / bitrate_bytes_per_s,
            bitrate_bytes_per_s,
            horizon=horizon,
            simulations=simulations,
            rng=rng,
        )
        if need is None:
            return 1.0
        return float(np.count_nonzero(need > buffered_bytes)) / simulations

    def buffer_needs(
        self,
        duration: float,
        bitrate_bytes_per_s: float,
        *,
        horizon: float | None = None,
        simulations: int = SIMULATIONS,
        rng: np.random.Generator,
    ) -> FloatArray | None:
        """For each of ``simulations`` simulated futures, the buffer (bytes) playback of
        ``duration`` seconds must start with not to stutter; None when nothing is known."""
        if bitrate_bytes_per_s <= 0 or simulations < 1:
            raise ValueError("bitrate_bytes_per_s and simulations must be positive")
        chain = self.chain(bitrate_bytes_per_s)
        if chain is None:
            return None
        seconds = duration if horizon is None else min(duration, horizon)
        return chain.simulate(seconds, bitrate_bytes_per_s, simulations, rng)


@dataclass(frozen=True, eq=False)
class Chain:
    """A throughput chain estimated for one bitrate: ``transitions[i, j]`` per tick,
    ``level_rates[i]`` in bytes per second, starting at level ``current``."""

    transitions: FloatArray
    level_rates: FloatArray
    current: int
    tick: float

    def simulate(
        self, seconds: float, bitrate: float, simulations: int, rng: np.random.Generator
    ) -> FloatArray:
        """Per simulated future, ``max(0, max over t <= seconds of played(t) - downloaded(t))``."""
        need = np.zeros(simulations)
        total_ticks = math.ceil(seconds / self.tick - 1e-9)
        if total_ticks <= 0:
            return need
        sizes = _schedule(total_ticks)
        tables = self._block_tables(max(sizes))
        count = len(self.level_rates)
        uniforms = rng.random((len(sizes), simulations))
        state = np.full(simulations, self.current, dtype=np.intp)
        downloaded = np.zeros(simulations)
        elapsed = 0
        for step, size in enumerate(sizes):
            cumulative, mean_bytes = tables[size]
            base = state * count
            flat = np.searchsorted(cumulative, state + uniforms[step], side="right")
            flat = np.minimum(flat, base + count - 1)  # rounding at u -> 1
            downloaded += mean_bytes[flat]
            state = flat - base
            elapsed += size
            played = bitrate * min(elapsed * self.tick, seconds)
            np.maximum(need, played - downloaded, out=need)
        return need

    def _block_tables(self, largest: int) -> dict[int, tuple[FloatArray, FloatArray]]:
        """For each block size 1, 2, 4, ... ``largest`` ticks: the k-step chain as flat
        row-offset cumulative sums (for one ``searchsorted`` over all simulations) and the
        expected bytes over the block given its start and end levels, flattened alike.

        With P the one-tick matrix and D the bytes per tick of each level,
        ``H_k = sum_{t=1..k} P^t D P^(k-t)`` holds the expected bytes times the probability
        of each (start, end) pair; ``H_2k = H_k P^k + P^k H_k`` doubles it.
        """
        count = len(self.level_rates)
        offsets = np.arange(count, dtype=np.float64)[:, None]
        power = self.transitions
        weighted = self.transitions * (self.level_rates * self.tick)[None, :]
        tables: dict[int, tuple[FloatArray, FloatArray]] = {}
        size = 1
        while True:
            cumulative = np.cumsum(power, axis=1)
            cumulative[:, -1] = 1.0
            mean = np.divide(weighted, power, out=np.zeros_like(weighted), where=power > 1e-300)
            tables[size] = ((cumulative + offsets).ravel(), mean.ravel())
            if size >= largest:
                return tables
            weighted = weighted @ power + power @ weighted
            power = power @ power
            power /= power.sum(axis=1, keepdims=True)  # keep rows stochastic despite rounding
            size *= 2


def _prior(count: int, tick: float) -> FloatArray:
    """Per tick: stay, or (rarely) move one level up or down."""
    move = -math.expm1(-tick / PRIOR_DWELL)
    prior = np.eye(count) * (1 - move)
    for level in range(count):
        neighbours = [n for n in (level - 1, level + 1) if 0 <= n < count]
        for n in neighbours:
            prior[level, n] += move / len(neighbours)
    return prior


def _schedule(total_ticks: int) -> list[int]:
    """Block sizes (powers of two, in ticks) adding up to ``total_ticks``: single ticks first,
    doubling every :data:`FINE_STEPS` blocks (fewer for very long tracks) up to the smallest
    cap that keeps the count within :data:`MAX_STEPS`."""
    repeat = FINE_STEPS
    while True:
        cap = 1
        while cap <= total_ticks:
            if _block_count(total_ticks, repeat, cap) <= MAX_STEPS:
                return _blocks(total_ticks, repeat, cap)
            cap *= 2
        if repeat == 1:
            raise ValueError(f"{total_ticks} ticks do not fit in {MAX_STEPS} steps")
        repeat //= 2


def _block_count(total_ticks: int, repeat: int, cap: int) -> int:
    # ``repeat`` blocks of each size 1, 2, ... cap/2 (repeat * (cap - 1) ticks), then blocks
    # of ``cap``, then the rest in powers of two.
    fine = repeat * (cap - 1)
    if total_ticks <= fine:
        return len(_blocks(total_ticks, repeat, cap))  # short: at most repeat per size
    whole, rest = divmod(total_ticks - fine, cap)
    return repeat * (cap.bit_length() - 1) + whole + rest.bit_count()


def _blocks(total_ticks: int, repeat: int, cap: int) -> list[int]:
    sizes: list[int] = []
    size, left = 1, total_ticks
    while left >= size:
        sizes.append(size)
        left -= size
        if size < cap and len(sizes) % repeat == 0:
            size *= 2
    while left:  # the rest, largest piece first
        piece = 1 << (left.bit_length() - 1)
        sizes.append(piece)
        left -= piece
    return sizes


@dataclass
class StartPolicy:
    """Start playing once the chance of a stutter is at most ``target``.

    Never before ``min_buffer`` bytes (the first chunk: the decoder needs the stream's
    headers) unless the file is smaller; never before any throughput was seen, unless the
    whole file is there.
    """

    target: float = DEFAULT_STUTTER_TARGET
    simulations: int = SIMULATIONS
    min_buffer: int = CHUNK_SIZE
    horizon: float | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise ValueError("target must be between 0 and 1")

    def should_start(
        self,
        model: ThroughputModel,
        *,
        buffered_bytes: int,
        remaining_bytes: int,
        bitrate_bytes_per_s: float,
        rng: np.random.Generator | None = None,
    ) -> bool:
        """Whether to start now with ``buffered_bytes`` contiguous bytes from the playback
        position and ``remaining_bytes`` after them still to come."""
        if remaining_bytes <= 0:
            return True
        if buffered_bytes < self.min_buffer:
            return False
        probability = model.stutter_probability(
            buffered_bytes,
            remaining_bytes,
            bitrate_bytes_per_s,
            horizon=self.horizon,
            simulations=self.simulations,
            rng=self.rng if rng is None else rng,
        )
        return probability <= self.target

    def bytes_needed(
        self,
        model: ThroughputModel,
        *,
        total_bytes: int,
        bitrate_bytes_per_s: float,
        rng: np.random.Generator | None = None,
    ) -> int | None:
        """The smallest buffer (bytes from the playback position, of ``total_bytes`` to the
        end) that meets the target; None before any throughput was seen."""
        need = model.buffer_needs(
            total_bytes / bitrate_bytes_per_s,
            bitrate_bytes_per_s,
            horizon=self.horizon,
            simulations=self.simulations,
            rng=self.rng if rng is None else rng,
        )
        if need is None:
            return None
        allowed = math.floor(self.target * self.simulations + 1e-9)  # futures that may stutter
        ordered = np.sort(need)[::-1]
        enough = float(ordered[allowed]) if allowed < len(ordered) else 0.0
        return min(total_bytes, max(math.ceil(enough), self.min_buffer))
