"""The errors users and clients meet, in one vocabulary (issue 23).

Each class says what went wrong in terms a client can act on, and carries both ways of
saying it: ``http_status``, what the speaker's control API answers, and ``code``, the
:class:`ApiErrorCode` an access point or a peer puts in an ``ErrorReply``. The control API
turns a :class:`CadenzaError` into its status and anything else into a 500 (a bug), so a
stray ``KeyError`` can no longer pass for "not found". The hierarchy::

    CadenzaError                   500  internal
    ├── BadRequest (ValueError)    400  bad-request   the request is wrong; ``field`` names
    │   │                                             the part of it, when there is one
    │   ├── Unsupported            400  unsupported   well-formed, but not served here
    │   ├── links.LinkError        400  bad-request   not a Cadenza link
    │   │   └── IdOutOfRange       404  not-found     well-formed, but no id is that large
    │   └── control.http.ApiError  413, 421           refusals only HTTP has (body size, Host)
    ├── NotFound (LookupError)     404  not-found     no such thing (the message names it)
    │   ├── UnknownLink            404  not-found     a link the service does not know
    │   └── BadPosition            404  not-found     a queue position not in the queue
    ├── Conflict                   409  conflict      not possible now (nothing is playing)
    ├── Unauthenticated            401  unauthenticated  log in, or pair, first
    ├── AuthFailed                 401  auth-failed   wrong password or device credential
    │   └── Revoked                401  revoked       the device credential was revoked
    ├── Forbidden                  403  forbidden     known, but not allowed to do that
    ├── Banned                     403  banned        this device or account is banned
    ├── Throttled                  429  throttled     too many, too fast: ``retry_after``
    │   └── control.auth.PairingRefused               no room for another pairing request
    ├── Unavailable                503  unavailable   the service is needed, not reachable
    │   └── Busy                   503  busy          reachable, but no capacity right now
    └── BadReply                   502  bad-reply     the other side answered nonsense

The three drawn with a module (relative to ``cadenza``) live beside what raises them. The
classes named after a wire code the speaker only receives (``AuthFailed``, ``Banned``, ...)
give those codes their HTTP meaning; the access point answers with ``ErrorReply`` and an
:class:`ApiErrorCode` directly.

``BadRequest`` is also a ``ValueError`` and ``NotFound`` a ``LookupError``, as the
exceptions they replace were: code that validates with ``except ValueError`` keeps
working. The converse is what matters: a plain ``ValueError`` or ``KeyError`` is not a
``CadenzaError``, so it is never mistaken for the user's fault.

:class:`ApiErrorCode` versus :class:`cadenza.protocol.errors.ErrorCode`: they are two
layers. ``ErrorCode`` (numeric) is the connection's: it rides in RESET and GOAWAY frames
and ends a channel or the whole connection (a protocol violation, a timeout, a handler
that crashed: ``INTERNAL_ERROR``). ``ApiErrorCode`` (text) is the request's: it rides in
an ``ErrorReply`` message on a channel that works, and says the request was understood
and refused; the connection carries on (though a refused login may then be followed by a
GOAWAY with ``AUTHENTICATION_FAILED``). A crash in a request handler is a RESET, never an
``ErrorReply`` with ``internal``.

Just above the protocol (tests/unit/test_layering.py): this module imports only the standard
library and ``cadenza.protocol``.
"""

from __future__ import annotations

import enum


class ApiErrorCode(enum.StrEnum):
    """What an ``ErrorReply`` says went wrong with a request, on the wire as these strings.

    A ``StrEnum``: members are ``str``, compare and hash as their text (so a code received
    from the wire, a plain ``str``, equals its member), and the message encoder sends their
    value, so the bytes are those of the plain strings old peers send and expect. A code
    received may be one this version does not know: keep received codes as ``str`` and
    compare them with members; do not convert them.
    """

    BAD_REQUEST = "bad-request"
    UNSUPPORTED = "unsupported"  # a request (or link) of a kind the peer does not serve
    NOT_FOUND = "not-found"
    UNAUTHENTICATED = "unauthenticated"  # a request before the login (or from a stranger)
    AUTH_FAILED = "auth-failed"
    REVOKED = "revoked"
    BANNED = "banned"
    THROTTLED = "throttled"
    BUSY = "busy"
    # Never sent by peers: what a requester calls an answer of the wrong message type.
    BAD_REPLY = "bad-reply"
    # Not sent by any version yet: the control API's own cases, named for completeness.
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CadenzaError(Exception):
    """Base class of the errors a user or client meets; ``str()`` is the message for people.

    ``http_status`` and ``code`` are class attributes (an instance may override them, as
    :class:`cadenza.control.http.ApiError` does). Raised as such, it is a 500: something
    that is nobody's fault but ours.
    """

    http_status: int = 500
    code: ApiErrorCode = ApiErrorCode.INTERNAL


class BadRequest(CadenzaError, ValueError):
    """The request is wrong; the message says how and ``field`` names the part of it
    (a JSON field, a query parameter, a setting) when there is one, for a client to point
    at the right input."""

    http_status = 400
    code = ApiErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unsupported(BadRequest):
    """A well-formed request this side does not serve (a message type, a kind of link)."""

    code = ApiErrorCode.UNSUPPORTED


class NotFound(CadenzaError, LookupError):
    """No such thing; the message names what was looked for."""

    http_status = 404
    code = ApiErrorCode.NOT_FOUND


class UnknownLink(NotFound):
    """A link the service does not know (or one that names nothing to play)."""


class BadPosition(NotFound):
    """A queue position that is not in the queue."""


class Conflict(CadenzaError):
    """Not possible in the current state (nothing is playing, the queue is empty, ...):
    the same request may succeed later."""

    http_status = 409
    code = ApiErrorCode.CONFLICT


class Unauthenticated(CadenzaError):
    """Who is asking is not known: log in (the service) or pair (the control API) first."""

    http_status = 401
    code = ApiErrorCode.UNAUTHENTICATED


class AuthFailed(CadenzaError):
    """The password or the device credential is wrong."""

    http_status = 401
    code = ApiErrorCode.AUTH_FAILED


class Revoked(AuthFailed):
    """The device credential was revoked: the device must log in with the password again."""

    code = ApiErrorCode.REVOKED


class Forbidden(CadenzaError):
    """Who is asking is known, and may not do this (a token's scope, a foreign page)."""

    http_status = 403
    code = ApiErrorCode.FORBIDDEN


class Banned(CadenzaError):
    """This device (or a device of its account) is banned for a while."""

    http_status = 403
    code = ApiErrorCode.BANNED


class Throttled(CadenzaError):
    """Too many requests, too fast; ``retry_after`` (seconds), when known, is how long to
    wait (the control API sends it as ``Retry-After``)."""

    http_status = 429
    code = ApiErrorCode.THROTTLED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(CadenzaError):
    """The service is needed and not reachable (or did not answer in time)."""

    http_status = 503
    code = ApiErrorCode.UNAVAILABLE


class Busy(Unavailable):
    """Reachable, but without capacity now (upload slots, a queue): ask again, or elsewhere."""

    code = ApiErrorCode.BUSY


class BadReply(CadenzaError):
    """The other side answered with something that is not an answer to the request."""

    http_status = 502
    code = ApiErrorCode.BAD_REPLY
