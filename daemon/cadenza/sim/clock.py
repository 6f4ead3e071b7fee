"""The simulator's clock: trio's virtual time, jumping straight to the next deadline.

:class:`VirtualClock` keeps the semantics of ``trio.testing.MockClock(autojump_threshold=0)``
(time stands still while any task can run; when none can, it jumps to the earliest deadline)
at a lower price per event. MockClock jumps in a separate turn of trio's loop: a turn finds
nothing runnable, polls for I/O, then jumps; the next turn wakes the sleepers. This clock jumps
when trio asks it how long to sleep with nothing runnable, so the same turn wakes them: one
turn per moment of simulated time instead of two, which is a tenth of the simulator's run.
It also reads the time without the real clock (MockClock at rate 0 still reads
``perf_counter`` and multiplies by zero).

Only for a run in which nothing happens outside trio's tasks (no threads, no real sockets):
the simulator's. With nothing runnable and no deadline, trio would wait for I/O for ever, as
it would with a MockClock.
"""

from __future__ import annotations

import math

import trio


class VirtualClock(trio.abc.Clock):
    def __init__(self) -> None:
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called by trio's loop when no task is runnable: jump to the deadline, sleep 0.
        if deadline == math.inf:
            return 999999999
        if deadline > self._now:
            self._now = deadline
        return 0

    def jump(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` (as MockClock.jump)."""
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
