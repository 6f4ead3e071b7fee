"""Domain errors of the trio layer: transport errors never leak out raw."""

from __future__ import annotations

from typing import TypeVar

from cadenza.protocol.errors import ErrorCode

_E = TypeVar("_E", bound=BaseException)


class NetError(Exception):
    """Base class of everything cadenza.net raises."""


class HandshakeFailed(NetError):
    """No connection: the peer is unreachable, timed out, or one side refused the other."""


class ConnectionLost(NetError):
    """The connection ended (peer vanished, protocol error, idle timeout, or closed)."""


class ChannelReset(NetError):
    """The peer (or we) abandoned this channel; ``code`` says why."""

    def __init__(self, code: ErrorCode, reason: str = "") -> None:
        super().__init__(f"channel reset ({code.name}){': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason


class ChannelEnded(NetError):
    """receive() on a channel the peer has finished sending on."""


class RequestFailed(NetError):
    """The peer answered a request with an error reply."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class RequestError(Exception):
    """Raised by a request handler: the requester gets an ErrorReply with this code and message."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def fresh(exc: _E) -> _E:
    """A copy of a kept error (same type, arguments and attributes) to raise once more.

    Raising the kept instance itself would add the raiser's frames to its traceback, and
    those frames hold what keeps the error (a channel, its connection): a reference cycle,
    freed only by the cyclic collector, with everything the frames hold.
    """
    new = type(exc).__new__(type(exc))
    new.args = exc.args
    new.__dict__.update(exc.__dict__)
    return new
