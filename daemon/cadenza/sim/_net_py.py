"""The parts of :mod:`cadenza.sim.net` that mypyc cannot compile (:mod:`cadenza.sim.native`):
an exception class deriving from a built-in one, and an async generator. Import them from
:mod:`cadenza.sim.net`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from cadenza.sim.net import SimNetwork


class Unreachable(ConnectionRefusedError):
    """``connect`` got no answer: the host is offline, or behind a NAT with no mapping for us."""


@asynccontextmanager
async def running(net: SimNetwork) -> AsyncIterator[SimNetwork]:
    """``async with net.running():`` runs ``net.run`` for the duration of the block."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            yield net
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # run() never fails: the block's error, alone
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
