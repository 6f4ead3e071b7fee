"""The handshake payload: a ``Hello`` that may carry a membership certificate.

Both ends of every connection put a :class:`~cadenza.protocol.messages.Hello` in
the Noise handshake. Between peers it must carry a membership certificate that the
service signed for exactly the static key the handshake proved; towards the
access point (which issues certificates) it may carry none.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import messages
from .certificate import CertificateVerifier, MembershipCertificate
from .errors import ErrorCode, RemoteProtocolError
from .messages import Hello

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Admitted:
    hello: Hello
    certificate: MembershipCertificate | None


def hello_payload(
    agent: str, *, certificate: bytes | None = None, features: tuple[str, ...] = ()
) -> bytes:
    return messages.encode(
        Hello(agent=agent, protocol=PROTOCOL_VERSION, certificate=certificate, features=features)
    )


def read_hello(payload: bytes) -> Hello:
    """Decode a peer's handshake payload; RemoteProtocolError unless it is a Hello we speak."""
    if not payload:
        raise RemoteProtocolError("no Hello in the handshake", code=ErrorCode.AUTHENTICATION_FAILED)
    msg = messages.decode(payload)
    if not isinstance(msg, Hello):
        raise RemoteProtocolError(f"handshake payload is {type(msg).__name__}, not Hello")
    if msg.protocol != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"peer speaks protocol {msg.protocol}, we speak {PROTOCOL_VERSION}"
        )
    return msg


def admit_peer(
    payload: bytes, remote_static: bytes, verifier: CertificateVerifier, *, now: float
) -> Admitted:
    """A peer's Hello with a valid certificate for ``remote_static``, or CertificateError."""
    hello = read_hello(payload)
    if hello.certificate is None:
        raise RemoteProtocolError("no membership certificate", code=ErrorCode.AUTHENTICATION_FAILED)
    cert = verifier.verify(hello.certificate, noise_static=remote_static, now=now)
    return Admitted(hello, cert)
