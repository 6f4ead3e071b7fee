"""Small helpers shared by the trio layer."""

from __future__ import annotations

from types import TracebackType


class single_errors:
    """Raise a lone error out of the connection's nursery as itself, not as a group of one.

    The connection's own background tasks never raise (they record the error and close),
    so a group of one holds the caller's error, or HandshakeFailed, alone.

    The error is raised with no reference back to its group: raised while the group is being
    handled, it would take the group as its ``__context__`` (and the group holds it), a cycle
    that only the cyclic collector frees, with every frame of the traceback and what their
    locals hold (a track's stream and its buffer, say). A speaker cancels dials and searches
    all the time; the memory went back only when a full collection came by.
    """

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if not isinstance(value, BaseExceptionGroup) or len(value.exceptions) != 1:
            return False
        exc = value.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            exc.__suppress_context__ = True
            del exc, context, value, tb
