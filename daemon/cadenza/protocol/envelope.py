"""Signed envelopes: msgpack ``[version, body, signature]`` in canonical encoding.

Certificates and manifests travel this way: the signature covers the body bytes exactly
as sent (so fields a version does not know are ignored without breaking it), and the
envelope must be msgpack's shortest encoding, so a document that verifies has exactly one
byte string. Pure; every problem with received bytes is :class:`Malformed`, whose message
the caller turns into its own error type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import LocalProtocolError

SIGNATURE_SIZE = 64  # Ed25519


class Malformed(Exception):
    """The bytes are not a well-formed envelope; the message says what is wrong."""


def pack(version: int, body: bytes, signature: bytes) -> bytes:
    packed: bytes = msgpack.packb([version, body, signature], use_bin_type=True)
    return packed


def unpack(data: bytes, what: str) -> object:
    """Decode msgpack with string keys only and no repeated keys (Malformed otherwise)."""

    def pairs_hook(pairs: list[tuple[object, object]]) -> dict[str, object]:
        # A repeated key would let two decoders read different values from one signed
        # body; refuse the ambiguity rather than pick a winner.
        result: dict[str, object] = {}
        for key, value in pairs:
            if not isinstance(key, str):
                raise Malformed(f"{what} map key is not a string")
            if key in result:
                raise Malformed(f"{what} repeats field {key!r}")
            result[key] = value
        return result

    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=pairs_hook)
    except Malformed:
        raise
    # Everything msgpack raises on hostile input (truncation, trailing bytes, bad UTF-8,
    # bad ext data, nesting too deep) is a ValueError or its own exception.
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException):
        raise Malformed(f"{what} is not valid msgpack") from None


def open_envelope(
    data: object, *, what: str, version: int, max_size: int
) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(body, signature, body fields)`` of an envelope, checked for shape only (the caller
    checks the signature and the fields). LocalProtocolError if ``data`` is not bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{what} must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise Malformed(f"{what} of {len(data)} bytes exceeds the {max_size} limit")
    envelope = unpack(data, what)
    if not isinstance(envelope, list) or not envelope:
        raise Malformed(f"{what} is not a [version, body, signature] array")
    found = envelope[0]
    if type(found) is not int:
        raise Malformed(f"{what} version is not an integer")
    if found != version:
        raise Malformed(f"unsupported {what} version {found} (this side knows {version})")
    if len(envelope) != 3:
        raise Malformed(f"{what} envelope has {len(envelope)} elements, not 3")
    _, body, signature = envelope
    if type(body) is not bytes:
        raise Malformed(f"{what} body is not a byte string")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise Malformed(f"{what} signature is not {SIGNATURE_SIZE} bytes")
    if pack(version, body, signature) != data:
        raise Malformed(f"{what} envelope is not in canonical msgpack encoding")
    fields = unpack(body, f"{what} body")
    if not isinstance(fields, dict):
        raise Malformed(f"{what} body is not a map")
    return body, signature, fields


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of signed document: its name in messages, version and size limit, what is
    wrong with a body's fields (or ``None``), and the caller's error for bad bytes."""

    what: str
    version: int
    max_size: int
    field_problem: Callable[[dict[str, Any]], str | None]
    error: Callable[[str], Exception]

    def open(self, data: object) -> tuple[bytes, bytes, dict[str, Any]]:
        """:func:`open_envelope`, then the field check; every problem is ``error``."""
        try:
            body, signature, fields = open_envelope(
                data, what=self.what, version=self.version, max_size=self.max_size
            )
        except Malformed as exc:
            raise self.error(str(exc)) from None
        problem = self.field_problem(fields)
        if problem is not None:
            raise self.error(f"{self.what} {problem}")
        return body, signature, fields


def signed_by(
    trusted: Mapping[bytes, Ed25519PublicKey],
    signer: bytes,
    signature: bytes,
    signed: bytes,
    *,
    unknown: Callable[[], Exception],
    bad: Callable[[], Exception],
) -> Ed25519PublicKey:
    """The trusted key ``signer`` names, once ``signature`` over ``signed`` verifies with it;
    raises what ``unknown`` (no such trusted key) or ``bad`` (the signature does not verify)
    make, so each kind of envelope says it in its own words."""
    key = trusted.get(signer)
    if key is None:
        raise unknown()
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        raise bad() from None
    return key
