"""Blocking calls (disk, SQLite, password hashing, hardware, zeroconf) off the event loop.

Everywhere in the daemon and the service a blocking call goes through :func:`run_sync`, which
is ``trio.to_thread.run_sync``. The swarm simulator (:mod:`cadenza.sim`) runs a thousand
speakers on trio's virtual clock, where a worker thread would let the clock jump while it
works; it calls :func:`run_inline` once, and the same calls then run on the event loop's thread
(its disks are in memory, so they do not block). A call that *waits* on the world outside the
process (a GPIO edge, the audio thread, multicast announcements) says so with ``waits=True``
and keeps its worker thread even then: inline it would stall every simulated speaker, and the
simulator has no such world to wait for anyway, so it never reaches one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

_inline = False


def run_inline(on: bool = True) -> None:
    """Run blocking calls on the event loop's thread from now on (the simulator only)."""
    global _inline
    _inline = on


async def run_sync(
    fn: Callable[..., T],
    *args: object,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
    waits: bool = False,
) -> T:
    """``fn(*args)`` in a worker thread (inline in the simulator), a checkpoint either way.

    ``limiter`` and ``abandon_on_cancel`` are ``trio.to_thread.run_sync``'s; ``waits``: ``fn``
    waits on something outside the process, so it runs in a thread even in the simulator.
    """
    if _inline and not waits:
        await trio.lowlevel.checkpoint()
        return fn(*args)
    return await trio.to_thread.run_sync(
        fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
    )
