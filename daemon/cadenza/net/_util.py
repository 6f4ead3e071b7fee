"""Small helpers shared by the trio layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def single_errors() -> AsyncIterator[None]:
    """Raise a lone error out of the connection's nursery as itself, not as a group of one.

    The connection's own background tasks never raise (they record the error and close),
    so a group of one holds the caller's error, or HandshakeFailed, alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
