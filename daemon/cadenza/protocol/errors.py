"""Protocol errors that say whose fault they are.

``LocalProtocolError``: this side asked for something the protocol does not
allow (a programming error or misuse of the API). ``RemoteProtocolError``: the
peer sent something invalid; the connection cannot continue. Everything the
decoders raise on bad input is a ``RemoteProtocolError`` and nothing else.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Reasons carried in GOAWAY and RESET frames."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    CANCELLED = 4
    REFUSED = 5
    TOO_MANY_CHANNELS = 6
    AUTHENTICATION_FAILED = 7
    TIMEOUT = 8
    MESSAGE_TOO_LARGE = 9
    OVER_BUDGET = 10  # the peer made us hold more than its budget allows


class ProtocolError(Exception):
    """Base class; ``code`` is what goes on the wire when the error ends a connection."""

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol (or the connection's state) forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""
