"""A token bucket: a rate with bursts, for upload bandwidth, dials and request rates.

It sits in the system layer because both the overlay (:mod:`cadenza.p2p.limits`: upload
bandwidth, dial pacing) and the control plane (:mod:`cadenza.control.http`: request rates)
use it, and neither may import the other.

Pure: no I/O, no clock; every call that depends on time takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

__all__ = ["TIME_EPSILON_S", "TokenBucket", "snap"]

# Waits shorter than a microsecond are no wait: far below any timer's resolution, and it absorbs
# the rounding of ``now + wait`` (a caller that sleeps the wait it was told must then be let go).
TIME_EPSILON_S = 1e-6


def snap(wait: float) -> float:
    """``wait`` rounded down to 0.0 below :data:`TIME_EPSILON_S`."""
    return 0.0 if wait < TIME_EPSILON_S else wait


class TokenBucket:
    """A bandwidth cap of ``rate`` bytes per second with bursts of up to ``burst`` bytes.

    Debt model: :meth:`reserve` always takes the bytes, so the balance may go negative, and
    returns how long to wait before sending them: until the balance is back to zero. Successive
    reservations thus queue up behind each other, and one larger than ``burst`` just waits longer.
    The bucket starts full and never holds more than ``burst``; time running backwards adds
    nothing. ``rate`` <= 0 means unlimited.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated: float | None = None  # time of ``_tokens``; None: not used yet (full)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    @property
    def unlimited(self) -> bool:
        return self._rate <= 0

    def _balance(self, now: float) -> tuple[float, float]:
        """The balance and the time it is valid at (``now``, or later if time ran backwards)."""
        if self._updated is None or self.unlimited:
            return self._burst, now
        elapsed = now - self._updated
        if elapsed <= 0:
            return self._tokens, self._updated
        return min(self._burst, self._tokens + elapsed * self._rate), now

    def _wait(self, tokens: float, at: float, now: float) -> float:
        if tokens >= 0:
            return 0.0
        return snap(at - tokens / self._rate - now)

    def available(self, now: float) -> float:
        """Bytes that may be sent at ``now`` without waiting (negative: the debt)."""
        return self._balance(now)[0]

    def wait_time(self, nbytes: int, now: float) -> float:
        """What :meth:`reserve` would return, without reserving anything."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if self.unlimited:
            return 0.0
        tokens, at = self._balance(now)
        return self._wait(tokens - nbytes, at, now)

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes``; returns the seconds to wait before sending them (0.0: send now)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if self.unlimited:
            return 0.0
        tokens, at = self._balance(now)
        self._tokens, self._updated = tokens - nbytes, at
        return self._wait(self._tokens, at, now)

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate from ``now`` on (tokens earned until then count at the old rate).

        Switching to or from unlimited refills the bucket: no debt carries across.
        """
        rate = float(rate)
        if self.unlimited or rate <= 0:
            self._tokens = self._burst
            self._updated = now if self._updated is None else max(self._updated, now)
        else:
            self._tokens, self._updated = self._balance(now)
        self._rate = rate
