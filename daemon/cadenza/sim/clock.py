"""The simulator's clock: trio's virtual time, jumping straight to the next deadline.

:class:`VirtualClock` keeps the semantics of ``trio.testing.MockClock(autojump_threshold=0)``
(time stands still while any task can run; when none can, it jumps to the earliest deadline)
at a lower price per event. MockClock jumps in a separate turn of trio's loop: a turn finds
nothing runnable, polls for I/O, then jumps; the next turn wakes the sleepers. This clock jumps
when trio asks it how long to sleep with nothing runnable, so the same turn wakes them: one
turn per moment of simulated time instead of two, which is a tenth of the simulator's run.
It also reads the time without the real clock (MockClock at rate 0 still reads
``perf_counter`` and multiplies by zero), and it drives the simulated network's scheduler
(:meth:`VirtualClock.attach`): when no task can run and the network's next event comes before
trio's next deadline, the clock jumps there and processes it, waking the tasks it concerns, so
no task of the network's has to wake up (and be woken by a cancelled timer) for each event.

Only for a run in which nothing happens outside trio's tasks (no threads, no real sockets):
the simulator's. With nothing runnable and no deadline, trio would wait for I/O for ever, as
it would with a MockClock.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio
from trio._core._run import GLOBAL_RUN_CONTEXT as _RUN  # the runner's wait_all_tasks_blocked


class Scheduler(Protocol):
    """Events kept outside trio's deadlines (the simulated network's)."""

    def due(self) -> float: ...

    def advance(self, now: float) -> None: ...


class VirtualClock(trio.abc.Clock):
    def __init__(self) -> None:
        self._now = 0.0
        self._schedulers: list[Scheduler] = []

    def attach(self, scheduler: Scheduler) -> None:
        """Let ``scheduler`` process its events when it is their time and no task can run."""
        if scheduler not in self._schedulers:
            self._schedulers.append(scheduler)

    def detach(self, scheduler: Scheduler) -> None:
        if scheduler in self._schedulers:
            self._schedulers.remove(scheduler)

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called by trio's loop when no task is runnable: jump to whatever comes first (the
        # attached scheduler's next event or trio's next deadline) and sleep 0. The tasks the
        # scheduler wakes, and those whose deadline expires now, run in this turn's batch.
        if _RUN.runner.waiting_for_idle:
            # A task in wait_all_tasks_blocked goes first, time standing still (as MockClock's
            # autojump does): say how long until the deadline; trio wakes that task instead.
            return 999999999 if deadline == math.inf else max(0.0, deadline - self._now)
        schedulers = self._schedulers
        if schedulers:
            due = min(scheduler.due() for scheduler in schedulers)
            if due <= deadline:
                if due > self._now:
                    self._now = due
                for scheduler in schedulers:
                    if scheduler.due() <= self._now:
                        scheduler.advance(self._now)
                return 0
        if deadline == math.inf:
            return 999999999  # nothing will ever happen: trio waits for I/O, as with MockClock
        if deadline > self._now:
            self._now = deadline
        return 0

    def jump(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` (as MockClock.jump)."""
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds


class _SeldomPolls:
    """The runner's I/O manager, asked for events only every ``every``-th turn that must not
    wait (see :func:`poll_io_seldom`); everything else goes to the real one."""

    def __init__(self, real: object, every: int) -> None:
        self._real = real
        self._every = every
        self._turns = 0
        self._poll = real.get_events  # type: ignore[attr-defined]
        self.process_events = real.process_events  # type: ignore[attr-defined]

    def get_events(self, timeout: float) -> object:
        if timeout == 0:
            self._turns += 1
            if self._turns % self._every:
                return ()
        return self._poll(timeout)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def poll_io_seldom(every: int = 64) -> None:
    """In the current run, skip the poll for I/O (a system call) on all but one in ``every``
    turns of trio's loop that have tasks to run. Only for a run that does no I/O: the
    simulator's, whose only file descriptor is trio's own wake-up socket (a Ctrl-C, or a
    ``run_sync_soon`` from another thread, waits a few turns more). A turn that would wait
    (nothing to run) still polls. Every turn polled: a sixteenth of a swarm's run."""
    runner = _RUN.runner
    if not isinstance(runner.io_manager, _SeldomPolls):
        runner.io_manager = _SeldomPolls(runner.io_manager, every)  # type: ignore[assignment]
