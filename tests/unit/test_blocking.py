"""cadenza.blocking: worker threads, or inline in the simulator unless the call waits."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

from cadenza import blocking


@pytest.fixture
def inline() -> Iterator[None]:
    blocking.run_inline()
    try:
        yield
    finally:
        blocking.run_inline(False)


def _thread() -> int:
    return threading.get_ident()


async def test_runs_in_a_worker_thread() -> None:
    assert not blocking._inline, "a test before this one left the simulator's inline mode on"
    assert await blocking.run_sync(_thread) != threading.get_ident()
    limiter = trio.CapacityLimiter(1)
    assert await blocking.run_sync(_thread, limiter=limiter) != threading.get_ident()
    assert await blocking.run_sync(_thread, abandon_on_cancel=True) != threading.get_ident()


async def test_inline_in_the_simulator(inline: None) -> None:
    assert await blocking.run_sync(_thread) == threading.get_ident()
    assert await blocking.run_sync(divmod, 7, 2) == (3, 1)


async def test_a_call_that_waits_keeps_its_thread(inline: None) -> None:
    assert await blocking.run_sync(_thread, waits=True) != threading.get_ident()
