"""Membership certificates: the service's word that a peer may join the overlay.

The access point issues each speaker a short-lived certificate binding a
per-session peer id to the Noise static key the speaker will handshake with,
the endpoint the service saw it connect from, and the overlay it may join.
Peers present it as their Noise handshake payload; the other side accepts the
connection only if :meth:`CertificateVerifier.verify` accepts the certificate
for the static key the handshake actually proved.

Wire format (all msgpack)::

    envelope  = [version: int = 1, body: bin, signature: bin(64)]
    body      = map {"p": peer id bin(16), "k": Noise static key bin(32),
                     "e": [host: str, port: int] | nil (optional),
                     "o": overlay id str, "i": issued-at int, "x": expires-at int,
                     "s": signer key id bin(8)}
    signature = Ed25519(signer, b"cadenza/membership/v1\\x00" + body)

The signature covers the body bytes exactly as sent, so body fields this
version does not know are ignored without breaking it. The envelope itself
must be in msgpack's shortest encoding: a certificate that verifies has exactly
one byte string.

Pure and sans-IO: time is passed in as ``now`` (unix seconds), and decoding
arbitrary bytes raises :class:`CertificateError` and nothing else.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadenza.protocol import envelope
from cadenza.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CERT_LIFETIME",
    "CLOCK_SKEW",
    "CertificateError",
    "CertificateIssuer",
    "CertificateVerifier",
    "MembershipCertificate",
    "Reason",
    "fingerprint",
    "key_id",
]

# Short enough that a ban or a retired signing key takes effect within the hour
# without revocation lists; long enough that renewing over the session (which
# stays open anyway) is rare.
CERT_LIFETIME = 3600
# Speakers are often boards without a real-time clock; tolerate the drift of an
# NTP-synced clock (Kerberos's traditional 5 minutes) but not a clock left in 1970.
CLOCK_SKEW = 300
# A real certificate is about 200 bytes and under 500 with the longest host and
# overlay id; checked before any decoding, so hostile input costs nothing.
MAX_CERT_SIZE = 1024
# Certificates a verifier remembers having checked the signature of (at most 1 KiB each).
VERIFIED_KEPT = 1024

VERSION = 1
# Keeps a membership signature from being valid as any other message the
# service key signs (chunk hash lists, future certificate versions).
SIGNATURE_DOMAIN = b"cadenza/membership/v1\x00"

PEER_ID_SIZE = 16
NOISE_KEY_SIZE = 32
KEY_ID_SIZE = 8
SIGNATURE_SIZE = envelope.SIGNATURE_SIZE
PUBLIC_KEY_SIZE = 32
MAX_HOST_LENGTH = 255  # a DNS name is at most 253; an IPv6 literal far less
MAX_OVERLAY_ID_LENGTH = 64
MAX_TIMESTAMP = 2**63 - 1  # int64, so other implementations can read it

_PEER_ID = "p"
_NOISE_STATIC = "k"
_ENDPOINT = "e"
_OVERLAY_ID = "o"
_ISSUED_AT = "i"
_EXPIRES_AT = "x"
_SIGNER = "s"


class Reason(enum.Enum):
    """Why a certificate was refused; the value is what logs and reports carry."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    KEY_MISMATCH = "key-mismatch"
    WRONG_OVERLAY = "wrong-overlay"
    BANNED = "banned"


class CertificateError(RemoteProtocolError):
    """The peer's certificate does not admit it; ``reason`` says why."""

    code = ErrorCode.AUTHENTICATION_FAILED

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """The 8-byte id naming a signing key in certificates: SHA-256 of the raw key, truncated."""
    return hashlib.sha256(_raw(public_key)).digest()[:KEY_ID_SIZE]


def fingerprint(public_bytes: bytes) -> str:
    """A fingerprint of a raw 32-byte public key for people to compare.

    SHA-256 of the key, first 16 bytes, as lower-case hex in groups of four
    separated by colons: ``"3f2a:91c0:…"`` (8 groups).
    """
    if not isinstance(public_bytes, bytes) or len(public_bytes) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError(f"a public key is {PUBLIC_KEY_SIZE} raw bytes")
    digest = hashlib.sha256(public_bytes).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


@dataclass(frozen=True)
class MembershipCertificate:
    """A decoded certificate. Only trust one returned by :meth:`CertificateVerifier.verify`.

    ``body`` and ``signature`` are the signed bytes exactly as received; the
    other fields are decoded from ``body``.
    """

    peer_id: bytes
    noise_static: bytes
    endpoint: tuple[str, int] | None
    overlay_id: str
    issued_at: int
    expires_at: int
    signer: bytes
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """The signed envelope as it goes on the wire (the bytes it was decoded from)."""
        return _pack_envelope(self.body, self.signature)

    @classmethod
    def decode_unverified(cls, data: bytes) -> MembershipCertificate:
        """Parse a certificate WITHOUT checking its signature, time or anything else.

        For a speaker reading its own certificate (say, to renew it before
        ``expires_at``). Raises :class:`CertificateError` (``MALFORMED``) on
        anything that is not a well-formed certificate.
        """
        return _decode(data)


class CertificateIssuer:
    """The service's side: signs certificates for peers it has admitted."""

    def __init__(
        self, signing_key: Ed25519PrivateKey, overlay_id: str, lifetime: int = CERT_LIFETIME
    ) -> None:
        _check_overlay_id(overlay_id)
        if type(lifetime) is not int or lifetime <= 0:
            raise LocalProtocolError(
                f"certificate lifetime must be a positive int, not {lifetime!r}"
            )
        self._signing_key = signing_key
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        self.key_id: bytes = key_id(self.public_key)
        self.overlay_id = overlay_id
        self.lifetime = lifetime

    def issue(
        self,
        *,
        peer_id: bytes,
        noise_static: bytes,
        endpoint: tuple[str, int] | None,
        now: float,
    ) -> bytes:
        """A signed certificate valid from ``now`` (rounded down) for ``lifetime`` seconds."""
        _check_now(now)
        issued_at = math.floor(now)
        body_fields: dict[str, Any] = {
            _PEER_ID: peer_id,
            _NOISE_STATIC: noise_static,
            _OVERLAY_ID: self.overlay_id,
            _ISSUED_AT: issued_at,
            _EXPIRES_AT: issued_at + self.lifetime,
            _SIGNER: self.key_id,
        }
        if endpoint is not None:
            body_fields[_ENDPOINT] = endpoint
        problem = _field_problem(body_fields)
        if problem is not None:
            raise LocalProtocolError(f"cannot issue certificate: {problem}")
        body = msgpack.packb(body_fields, use_bin_type=True)
        signature = self._signing_key.sign(SIGNATURE_DOMAIN + body)
        data = _pack_envelope(body, signature)
        if len(data) > MAX_CERT_SIZE:  # unreachable with the field bounds above; keeps them honest
            raise LocalProtocolError(f"certificate of {len(data)} bytes exceeds {MAX_CERT_SIZE}")
        return data


class CertificateVerifier:
    """A peer's side: decides whether a presented certificate admits its holder."""

    def __init__(
        self,
        trusted: Iterable[Ed25519PublicKey],
        overlay_id: str,
        *,
        clock_skew: int = CLOCK_SKEW,
    ) -> None:
        _check_overlay_id(overlay_id)
        if type(clock_skew) is not int or clock_skew < 0:
            raise LocalProtocolError(f"clock skew must be a non-negative int, not {clock_skew!r}")
        self.overlay_id = overlay_id
        self.clock_skew = clock_skew
        self._trusted: dict[bytes, Ed25519PublicKey] = {}
        self._banned: set[bytes] = set()
        # Certificates whose signature verified, by their bytes, with the key that verified
        # them: a speaker meets the same neighbours' certificates again at every connection
        # (an Ed25519 verification each). Only decoding and the signature are skipped; every
        # other check runs each time.
        self._verified: OrderedDict[bytes, tuple[MembershipCertificate, Ed25519PublicKey]] = (
            OrderedDict()
        )
        for key in trusted:
            self.add_trusted(key)

    def add_trusted(self, key: Ed25519PublicKey) -> None:
        """Accept certificates signed by ``key`` from now on."""
        self._trusted[key_id(key)] = key

    def remove_trusted(self, key: Ed25519PublicKey) -> None:
        """Stop accepting certificates signed by ``key`` (a retired service key)."""
        self._trusted.pop(key_id(key), None)
        self._verified.clear()

    def ban(self, peer_id: bytes) -> None:
        """Refuse ``peer_id`` even with a valid certificate."""
        self._banned.add(_check_peer_id(peer_id))

    def unban(self, peer_id: bytes) -> None:
        """Lift a ban; no error if ``peer_id`` was not banned."""
        self._banned.discard(_check_peer_id(peer_id))

    def verify(
        self, data: bytes, *, noise_static: bytes | None, now: float
    ) -> MembershipCertificate:
        """The certificate in ``data`` if it admits its holder at ``now``.

        ``noise_static`` is the static key the Noise handshake proved the peer
        holds; the certificate must name that key. ``None`` skips only that
        check (for a holder inspecting its own certificate). Raises
        :class:`CertificateError` with the first failing check's reason, in
        this order: MALFORMED, UNKNOWN_SIGNER, BAD_SIGNATURE, WRONG_OVERLAY,
        NOT_YET_VALID / EXPIRED, KEY_MISMATCH, BANNED.
        """
        _check_now(now)
        if noise_static is not None and (
            not isinstance(noise_static, bytes) or len(noise_static) != NOISE_KEY_SIZE
        ):
            raise LocalProtocolError(f"a Noise static key is {NOISE_KEY_SIZE} bytes")
        known = self._verified.get(data) if type(data) is bytes else None
        if known is not None and self._trusted.get(known[0].signer) is known[1]:
            cert = known[0]
            self._verified.move_to_end(data)
        else:
            cert = _decode(data)
            signing_key = envelope.signed_by(
                self._trusted,
                cert.signer,
                cert.signature,
                SIGNATURE_DOMAIN + cert.body,
                unknown=lambda: CertificateError(
                    Reason.UNKNOWN_SIGNER,
                    f"certificate signed by unknown key {cert.signer.hex()}",
                ),
                bad=lambda: CertificateError(
                    Reason.BAD_SIGNATURE,
                    f"certificate signature does not verify with key {cert.signer.hex()}",
                ),
            )
            if type(data) is bytes:
                self._verified[data] = (cert, signing_key)
                if len(self._verified) > VERIFIED_KEPT:
                    self._verified.popitem(last=False)

        if cert.overlay_id != self.overlay_id:
            raise CertificateError(
                Reason.WRONG_OVERLAY,
                f"certificate is for overlay {cert.overlay_id!r}, not {self.overlay_id!r}",
            )
        if now + self.clock_skew < cert.issued_at:
            raise CertificateError(
                Reason.NOT_YET_VALID,
                f"certificate not valid for another {math.ceil(cert.issued_at - now)} s"
                f" (clock skew allowed: {self.clock_skew} s)",
            )
        if now - self.clock_skew >= cert.expires_at:
            raise CertificateError(
                Reason.EXPIRED,
                f"certificate expired {math.floor(now - cert.expires_at)} s ago"
                f" (clock skew allowed: {self.clock_skew} s)",
            )
        if noise_static is not None and cert.noise_static != noise_static:
            raise CertificateError(
                Reason.KEY_MISMATCH,
                "certificate names a different Noise static key than the peer proved",
            )
        if cert.peer_id in self._banned:
            raise CertificateError(Reason.BANNED, f"peer {cert.peer_id.hex()} is banned")
        return cert


# -- decoding ---------------------------------------------------------------------------


def _decode(data: bytes) -> MembershipCertificate:
    body, signature, fields = _ENVELOPE.open(data)
    raw_endpoint = fields.get(_ENDPOINT)
    return MembershipCertificate(
        peer_id=fields[_PEER_ID],
        noise_static=fields[_NOISE_STATIC],
        endpoint=None if raw_endpoint is None else (raw_endpoint[0], raw_endpoint[1]),
        overlay_id=fields[_OVERLAY_ID],
        issued_at=fields[_ISSUED_AT],
        expires_at=fields[_EXPIRES_AT],
        signer=fields[_SIGNER],
        body=body,
        signature=signature,
    )


def _field_problem(fields: dict[str, Any]) -> str | None:
    """What is wrong with a body's fields, or ``None``; shared by issuer and decoder."""
    peer_id = fields.get(_PEER_ID)
    if type(peer_id) is not bytes or len(peer_id) != PEER_ID_SIZE:
        return f"peer id is not {PEER_ID_SIZE} bytes"
    noise_static = fields.get(_NOISE_STATIC)
    if type(noise_static) is not bytes or len(noise_static) != NOISE_KEY_SIZE:
        return f"Noise static key is not {NOISE_KEY_SIZE} bytes"
    endpoint = fields.get(_ENDPOINT)
    if endpoint is not None:
        if not isinstance(endpoint, list | tuple) or len(endpoint) != 2:
            return "endpoint is not a (host, port) pair"
        host, port = endpoint
        if type(host) is not str or not 1 <= len(host) <= MAX_HOST_LENGTH:
            return f"endpoint host is not a string of 1 to {MAX_HOST_LENGTH} characters"
        if type(port) is not int or not 1 <= port <= 65535:
            return f"endpoint port {port!r} is not in 1..65535"
    overlay_id = fields.get(_OVERLAY_ID)
    if type(overlay_id) is not str or not 1 <= len(overlay_id) <= MAX_OVERLAY_ID_LENGTH:
        return f"overlay id is not a string of 1 to {MAX_OVERLAY_ID_LENGTH} characters"
    issued_at = fields.get(_ISSUED_AT)
    if not _is_timestamp(issued_at):
        return "issued-at is not a unix time in whole seconds"
    expires_at = fields.get(_EXPIRES_AT)
    if not _is_timestamp(expires_at):
        return "expiry is not a unix time in whole seconds"
    if expires_at <= issued_at:
        return f"expires ({expires_at}) no later than it is issued ({issued_at})"
    signer = fields.get(_SIGNER)
    if type(signer) is not bytes or len(signer) != KEY_ID_SIZE:
        return f"signer key id is not {KEY_ID_SIZE} bytes"
    return None


# -- helpers ----------------------------------------------------------------------------


def _pack_envelope(body: bytes, signature: bytes) -> bytes:
    return envelope.pack(VERSION, body, signature)


def _is_timestamp(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_TIMESTAMP


def _malformed(message: str) -> CertificateError:
    return CertificateError(Reason.MALFORMED, message)


_ENVELOPE = envelope.Kind("certificate", VERSION, MAX_CERT_SIZE, _field_problem, _malformed)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_now(now: float) -> None:
    # NaN compares false with everything and would slip through every time check.
    if not isinstance(now, int | float) or not math.isfinite(now):
        raise LocalProtocolError(f"now must be a finite unix time, not {now!r}")


def _check_peer_id(peer_id: bytes) -> bytes:
    if not isinstance(peer_id, bytes) or len(peer_id) != PEER_ID_SIZE:
        raise LocalProtocolError(f"a peer id is {PEER_ID_SIZE} bytes")
    return peer_id


def _check_overlay_id(overlay_id: str) -> None:
    if not isinstance(overlay_id, str) or not 1 <= len(overlay_id) <= MAX_OVERLAY_ID_LENGTH:
        raise LocalProtocolError(
            f"an overlay id is a string of 1 to {MAX_OVERLAY_ID_LENGTH} characters"
        )
