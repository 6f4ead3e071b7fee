"""Limits a speaker applies to the overlay: upload slots, upload bandwidth, outgoing dials.

* :class:`UploadQueue` grants a few simultaneous uploads, most urgent request first; the rest
  wait. It never preempts: an upload is a short range of chunks, so the next free slot comes soon.
* :class:`TokenBucket` (:mod:`cadenza.system.ratelimit`) caps upload bandwidth: each send
  reserves its bytes and is told how long to wait first, so a household's uplink is never
  saturated by serving peers.
* :class:`DialLimiter` paces outgoing connections: a global rate, one dial at a time per
  endpoint, and an exponential back-off per endpoint after a failure.

Pure: no I/O, no clock; every call that depends on time takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

# The token bucket lives in the system layer, where the control plane's rate limits use it too;
# these names stay importable from here.
from cadenza.system.ratelimit import TIME_EPSILON_S as TIME_EPSILON_S
from cadenza.system.ratelimit import TokenBucket as TokenBucket
from cadenza.system.ratelimit import snap as _snap

K = TypeVar("K", bound=Hashable)  # an upload's key (peer, request, ...)
Endpoint = tuple[str, int]  # (host, port)

# The Spotify P2P paper's figure: a client serves at most 4 peers at a time. More slots split the
# uplink finer without serving anyone sooner; fewer leave it idle between one range and the next.
DEFAULT_MAX_UPLOADS = 4
# Dials per second, sustained. A speaker dials a handful of peers per track (the tracker answers
# with up to 10, the neighbour table holds 30), so 2/s is plenty in normal use, yet bounds the
# damage of a bug or of hostile answers naming thousands of endpoints to 120 dials a minute.
DEFAULT_DIAL_RATE = 2.0
# Dials allowed at once after a quiet spell: enough for a track start to reach all the peers it
# wants to try at once without waiting on the rate.
DEFAULT_DIAL_BURST = 8
# First back-off after a failed dial: long enough not to hammer a peer that is restarting, short
# enough that a transient failure (a lost SYN, a busy peer) costs little.
DEFAULT_BACKOFF_INITIAL_S = 5.0
# Back-off doubles per consecutive failure up to 5 minutes: a peer that is down for good is then
# tried about 12 times an hour, a negligible cost, and one that comes back is found soon enough.
DEFAULT_BACKOFF_MAX_S = 300.0
# A failure record is forgotten an hour after its back-off expired with no further dial: by then
# the peer may have restarted or moved, so its next failure starts the back-off afresh.
FORGET_AFTER_S = 3600.0
# Endpoints remembered at most: bounds memory under a spray of addresses. 4096 records are a few
# hundred KiB, far more than the peers a speaker meets between two restarts.
MAX_ENDPOINTS = 4096


class UploadQueue(Generic[K]):
    """At most ``max_active`` simultaneous uploads; the rest wait, most urgent first.

    Priorities are ints, lower is more urgent (:class:`cadenza.protocol.messages.Priority`);
    within a priority, waiters are granted in request order. A more urgent request never preempts
    an active upload. ``max_active`` 0 disables serving: nothing is granted. While paused (our
    own playback buffer is critically low) nothing new is granted either.
    """

    def __init__(self, max_active: int = DEFAULT_MAX_UPLOADS) -> None:
        if max_active < 0:
            raise ValueError(f"max_active must be >= 0, got {max_active}")
        self._max = max_active
        self._paused = False
        self._active: set[K] = set()
        self._waiting: dict[K, tuple[int, int]] = {}  # key -> (priority, sequence)
        self._heap: list[tuple[int, int, K]] = []  # may hold stale entries (cancelled waiters)
        self._seq = itertools.count()

    @property
    def max_active(self) -> int:
        return self._max

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def active(self) -> int:
        """Uploads in progress (above ``max_active`` for a while after it was lowered)."""
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def is_active(self, key: K) -> bool:
        return key in self._active

    def position(self, key: K) -> int | None:
        """``key``'s place among the waiters (0: granted next), or None if it is not waiting."""
        if key not in self._waiting:
            return None
        rank = self._waiting[key]
        return sum(1 for other in self._waiting.values() if other < rank)

    def request(self, key: K, priority: int) -> bool:
        """Ask for a slot: True if granted now, False if queued.

        Raises ValueError if ``key`` is already active or waiting.
        """
        if key in self._active or key in self._waiting:
            raise ValueError(f"upload {key!r} already requested")
        if not self._paused and len(self._active) < self._max and not self._waiting:
            self._active.add(key)
            return True
        seq = next(self._seq)
        self._waiting[key] = (priority, seq)
        heapq.heappush(self._heap, (priority, seq, key))
        return False

    def release(self, key: K) -> list[K]:
        """``key``'s upload finished, or its request is withdrawn; no error if unknown.

        Returns the keys granted a slot as a result, in grant order.
        """
        if key in self._active:
            self._active.discard(key)
        elif self._waiting.pop(key, None) is not None:
            self._compact()
        return self._grant()

    def cancel(self, key: K) -> list[K]:
        """Same as :meth:`release` (reads better for a request withdrawn before it finished)."""
        return self.release(key)

    def set_max(self, max_active: int) -> list[K]:
        """Change the number of slots; returns the keys granted as a result.

        Lowering it revokes nothing: no new slot is granted until uploads fall below it.
        """
        if max_active < 0:
            raise ValueError(f"max_active must be >= 0, got {max_active}")
        self._max = max_active
        return self._grant()

    def pause(self) -> None:
        """Grant nothing new until :meth:`resume` (active uploads carry on)."""
        self._paused = True

    def resume(self) -> list[K]:
        """Grant again; returns the keys granted now."""
        self._paused = False
        return self._grant()

    def _grant(self) -> list[K]:
        granted: list[K] = []
        while not self._paused and len(self._active) < self._max and self._waiting:
            priority, seq, key = heapq.heappop(self._heap)
            if self._waiting.get(key) != (priority, seq):
                continue  # stale: withdrawn (and maybe requested again since)
            del self._waiting[key]
            self._active.add(key)
            granted.append(key)
        return granted

    def _compact(self) -> None:
        # Withdrawn waiters leave stale heap entries; rebuild once they are the majority.
        if len(self._heap) > 2 * len(self._waiting) + 16:
            self._heap = [(p, s, k) for k, (p, s) in self._waiting.items()]
            heapq.heapify(self._heap)


@dataclass
class _DialRecord:
    """One endpoint's dialling state."""

    in_progress: bool = False
    failures: int = 0  # consecutive
    retry_at: float = -math.inf  # end of the back-off


class DialLimiter:
    """Paces outgoing dials: a global token bucket of attempts, at most one dial in progress per
    endpoint, and after a failure an exponential back-off for that endpoint (``backoff_initial``,
    doubling per consecutive failure, at most ``backoff_max``); a success resets it.

    Memory is bounded: a failure record is forgotten ``forget_after`` seconds after its back-off
    expired, and beyond ``max_endpoints`` records those whose back-off expired first are dropped
    (dials in progress are never dropped; their number is bounded by the caller's concurrency).
    """

    def __init__(
        self,
        rate: float = DEFAULT_DIAL_RATE,
        burst: int = DEFAULT_DIAL_BURST,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max: float = DEFAULT_BACKOFF_MAX_S,
        *,
        max_endpoints: int = MAX_ENDPOINTS,
        forget_after: float = FORGET_AFTER_S,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial <= backoff_max, got {backoff_initial}, {backoff_max}"
            )
        if max_endpoints < 1:
            raise ValueError(f"max_endpoints must be >= 1, got {max_endpoints}")
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_endpoints = max_endpoints
        self.forget_after = forget_after
        self._bucket = TokenBucket(rate, burst)
        self._records: dict[Endpoint, _DialRecord] = {}

    def __len__(self) -> int:
        """Endpoints remembered (in progress or backing off, or not yet forgotten)."""
        return len(self._records)

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._records

    def backoff(self, failures: int) -> float:
        """The back-off after ``failures`` consecutive failures (0.0 for none)."""
        if failures <= 0:
            return 0.0
        # The exponent is capped so the float cannot overflow after very many failures.
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 64))

    def _record(self, endpoint: Endpoint, now: float) -> _DialRecord | None:
        record = self._records.get(endpoint)
        if record is not None and self._stale(record, now):
            del self._records[endpoint]
            return None
        return record

    def _stale(self, record: _DialRecord, now: float) -> bool:
        return not record.in_progress and now - record.retry_at > self.forget_after

    def wait_time(self, endpoint: Endpoint, now: float) -> float:
        """Seconds until a dial to ``endpoint`` may start (0.0: now; ``inf`` while one is in
        progress to it)."""
        record = self._record(endpoint, now)
        if record is not None and record.in_progress:
            return math.inf
        backoff = 0.0 if record is None else record.retry_at - now
        return _snap(max(backoff, self._bucket.wait_time(1, now)))

    def start(self, endpoint: Endpoint, now: float) -> None:
        """A dial to ``endpoint`` starts; raises ValueError unless :meth:`wait_time` is 0."""
        wait = self.wait_time(endpoint, now)
        if wait > 0:
            raise ValueError(f"dial to {endpoint} must wait {wait:.3f} s")
        self._bucket.reserve(1, now)
        record = self._record(endpoint, now)
        if record is None:
            record = self._records[endpoint] = _DialRecord()
        record.in_progress = True
        self._prune(now)

    def succeeded(self, endpoint: Endpoint, now: float) -> None:
        """The dial (or connection) to ``endpoint`` succeeded: its back-off is reset."""
        self._records.pop(endpoint, None)

    def failed(self, endpoint: Endpoint, now: float) -> None:
        """The dial to ``endpoint`` failed: it backs off, longer for each consecutive failure."""
        record = self._record(endpoint, now)
        if record is None:
            record = self._records[endpoint] = _DialRecord()
        record.in_progress = False
        record.failures += 1
        record.retry_at = now + self.backoff(record.failures)
        self._prune(now)

    def cancelled(self, endpoint: Endpoint) -> None:
        """The dial to ``endpoint`` was abandoned (neither success nor failure, e.g. shutdown):
        it is no longer in progress and its back-off is unchanged."""
        record = self._records.get(endpoint)
        if record is None:
            return
        record.in_progress = False
        if record.failures == 0:
            del self._records[endpoint]

    def _prune(self, now: float) -> None:
        if len(self._records) <= self.max_endpoints:
            return
        for endpoint in [e for e, r in self._records.items() if self._stale(r, now)]:
            del self._records[endpoint]
        if len(self._records) <= self.max_endpoints:
            return
        # Drop down to 7/8 of the bound, so the sort is paid once per max_endpoints/8 insertions.
        target = self.max_endpoints - self.max_endpoints // 8
        droppable = sorted(
            (r.retry_at, i, e)
            for i, (e, r) in enumerate(self._records.items())
            if not r.in_progress
        )
        for _, _, endpoint in droppable[: len(self._records) - target]:
            del self._records[endpoint]
