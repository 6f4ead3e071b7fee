"""Membership certificates: issue, verify, and refuse everything else for the right reason."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.protocol.certificate import (
    CERT_LIFETIME,
    CLOCK_SKEW,
    MAX_CERT_SIZE,
    SIGNATURE_DOMAIN,
    CertificateError,
    CertificateIssuer,
    CertificateVerifier,
    MembershipCertificate,
    Reason,
    fingerprint,
    key_id,
)
from cadenza.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

OVERLAY = "cadenza-main"
NOW = 1_700_000_000
SERVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
PEER_ID = bytes(range(16))
NOISE_STATIC = bytes(range(100, 132))
ENDPOINT = ("198.51.100.7", 4070)


def raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def service_public_key() -> Ed25519PublicKey:
    # What a speaker holds: the raw public key, as configured or pinned.
    return Ed25519PublicKey.from_public_bytes(raw(SERVICE_KEY.public_key()))


ISSUER = CertificateIssuer(SERVICE_KEY, OVERLAY)
CERT = ISSUER.issue(peer_id=PEER_ID, noise_static=NOISE_STATIC, endpoint=ENDPOINT, now=NOW)


def make_verifier(**kwargs: Any) -> CertificateVerifier:
    return CertificateVerifier([service_public_key()], OVERLAY, **kwargs)


def body_fields(**changes: Any) -> dict[str, Any]:
    """The body of CERT as a map, with some fields changed (None removes a field)."""
    fields: dict[str, Any] = {
        "p": PEER_ID,
        "k": NOISE_STATIC,
        "e": list(ENDPOINT),
        "o": OVERLAY,
        "i": NOW,
        "x": NOW + CERT_LIFETIME,
        "s": key_id(SERVICE_KEY.public_key()),
    }
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    return fields


def sign(body: bytes | dict[str, Any], key: Ed25519PrivateKey = SERVICE_KEY) -> bytes:
    """An envelope around ``body`` signed by ``key``, built independently of the module."""
    encoded: bytes = msgpack.packb(body) if isinstance(body, dict) else body
    signature = key.sign(SIGNATURE_DOMAIN + encoded)
    envelope: bytes = msgpack.packb([1, encoded, signature])
    return envelope


def refusal(
    data: bytes,
    *,
    noise_static: bytes | None = NOISE_STATIC,
    now: float = NOW,
    verifier: CertificateVerifier | None = None,
) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        (verifier or make_verifier()).verify(data, noise_static=noise_static, now=now)
    return info.value


# -- the good path ---------------------------------------------------------------------


def test_second_party_with_only_the_public_key_accepts_it() -> None:
    cert = make_verifier().verify(CERT, noise_static=NOISE_STATIC, now=NOW + 10)

    assert cert.peer_id == PEER_ID
    assert cert.noise_static == NOISE_STATIC
    assert cert.endpoint == ENDPOINT
    assert cert.overlay_id == OVERLAY
    assert cert.issued_at == NOW
    assert cert.expires_at == NOW + CERT_LIFETIME
    assert cert.signer == ISSUER.key_id == key_id(service_public_key())
    assert cert.to_bytes() == CERT


def test_round_trip_without_endpoint() -> None:
    data = ISSUER.issue(peer_id=PEER_ID, noise_static=NOISE_STATIC, endpoint=None, now=NOW)

    cert = make_verifier().verify(data, noise_static=NOISE_STATIC, now=NOW)

    assert cert.endpoint is None
    assert cert.to_bytes() == data


def test_ipv6_endpoint_and_fractional_now() -> None:
    data = ISSUER.issue(
        peer_id=PEER_ID, noise_static=NOISE_STATIC, endpoint=("2001:db8::1", 65535), now=NOW + 0.9
    )

    cert = make_verifier().verify(data, noise_static=NOISE_STATIC, now=NOW + 0.5)

    assert cert.endpoint == ("2001:db8::1", 65535)
    assert cert.issued_at == NOW


def test_lifetime_is_configurable() -> None:
    issuer = CertificateIssuer(SERVICE_KEY, OVERLAY, lifetime=60)
    data = issuer.issue(peer_id=PEER_ID, noise_static=NOISE_STATIC, endpoint=None, now=NOW)

    assert MembershipCertificate.decode_unverified(data).expires_at == NOW + 60


def test_unknown_body_fields_are_ignored() -> None:
    data = sign(body_fields(future={"anything": [1, 2.5, None]}, z=b"\x00"))

    cert = make_verifier().verify(data, noise_static=NOISE_STATIC, now=NOW)

    assert cert.peer_id == PEER_ID
    assert cert.to_bytes() == data  # unknown fields survive, so the signature still holds


def test_decode_unverified_reads_without_checking() -> None:
    cert = MembershipCertificate.decode_unverified(sign(body_fields(), key=OTHER_KEY))

    assert cert.peer_id == PEER_ID


def test_noise_static_none_skips_only_the_key_check() -> None:
    make_verifier().verify(CERT, noise_static=None, now=NOW)

    assert refusal(CERT, noise_static=None, now=NOW + 10 * CERT_LIFETIME).reason is Reason.EXPIRED


# -- time ------------------------------------------------------------------------------


def test_expired() -> None:
    error = refusal(CERT, now=NOW + CERT_LIFETIME + 42, verifier=make_verifier(clock_skew=0))

    assert error.reason is Reason.EXPIRED
    assert "certificate expired 42 s ago" in str(error)


def test_expired_but_within_clock_skew_is_accepted() -> None:
    verifier = make_verifier()
    last_moment = NOW + CERT_LIFETIME + CLOCK_SKEW - 0.5

    verifier.verify(CERT, noise_static=NOISE_STATIC, now=last_moment)
    assert refusal(CERT, now=last_moment + 0.5).reason is Reason.EXPIRED


def test_not_yet_valid() -> None:
    error = refusal(CERT, now=NOW - CLOCK_SKEW - 1)

    assert error.reason is Reason.NOT_YET_VALID
    assert "not valid for another" in str(error)


def test_issued_in_the_future_but_within_clock_skew_is_accepted() -> None:
    make_verifier().verify(CERT, noise_static=NOISE_STATIC, now=NOW - CLOCK_SKEW)


# -- who signed it ---------------------------------------------------------------------


def test_unknown_signer() -> None:
    verifier = CertificateVerifier([OTHER_KEY.public_key()], OVERLAY)

    error = refusal(CERT, verifier=verifier)

    assert error.reason is Reason.UNKNOWN_SIGNER
    assert ISSUER.key_id.hex() in str(error)


def test_trust_can_be_added_and_removed() -> None:
    verifier = CertificateVerifier([], OVERLAY)
    verifier.add_trusted(service_public_key())
    verifier.verify(CERT, noise_static=NOISE_STATIC, now=NOW)

    verifier.remove_trusted(service_public_key())

    assert refusal(CERT, verifier=verifier).reason is Reason.UNKNOWN_SIGNER


class CountingKey(Ed25519PublicKey):
    """The service's real public key, counting the signatures it is asked to verify."""

    def __init__(self) -> None:
        self.key = service_public_key()
        self.verified = 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.verified += 1
        self.key.verify(signature, data)

    def public_bytes(self, encoding: Encoding, format: PublicFormat) -> bytes:
        return self.key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self.key.public_bytes_raw()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __copy__(self) -> CountingKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> CountingKey:
        return self


def test_a_certificate_seen_before_skips_only_its_signature_check() -> None:
    """A speaker meets the same neighbours' certificates at every connection: the signature
    is verified once per certificate; validity, key, overlay and bans are checked each time."""
    key = CountingKey()
    verifier = CertificateVerifier([key], OVERLAY)
    for _ in range(3):
        assert verifier.verify(CERT, noise_static=NOISE_STATIC, now=NOW).peer_id == PEER_ID
    assert key.verified == 1
    expired = refusal(CERT, verifier=verifier, now=NOW + CERT_LIFETIME + CLOCK_SKEW)
    assert expired.reason is Reason.EXPIRED
    assert refusal(CERT, verifier=verifier, noise_static=bytes(32)).reason is Reason.KEY_MISMATCH
    verifier.ban(PEER_ID)
    assert refusal(CERT, verifier=verifier).reason is Reason.BANNED
    verifier.unban(PEER_ID)
    tampered = bytearray(CERT)
    tampered[CERT.index(PEER_ID)] ^= 1
    assert refusal(bytes(tampered), verifier=verifier).reason is Reason.BAD_SIGNATURE
    assert key.verified == 2
    # Trust withdrawn and given again (a new key object): verified anew.
    verifier.remove_trusted(key)
    assert refusal(CERT, verifier=verifier).reason is Reason.UNKNOWN_SIGNER
    again = CountingKey()
    verifier.add_trusted(again)
    verifier.verify(CERT, noise_static=NOISE_STATIC, now=NOW)
    assert again.verified == 1


def test_forged_signature_under_a_trusted_key_id() -> None:
    assert refusal(sign(body_fields(), key=OTHER_KEY)).reason is Reason.BAD_SIGNATURE


def test_signature_without_domain_prefix_is_refused() -> None:
    body = msgpack.packb(body_fields())
    data = msgpack.packb([1, body, SERVICE_KEY.sign(body)])

    assert refusal(data).reason is Reason.BAD_SIGNATURE


def test_tampered_peer_id_breaks_the_signature() -> None:
    offset = CERT.index(PEER_ID)
    tampered = bytearray(CERT)
    tampered[offset] ^= 0x01

    assert refusal(bytes(tampered)).reason is Reason.BAD_SIGNATURE


def test_every_single_bit_flip_is_refused() -> None:
    verifier = make_verifier()
    body_start = CERT.index(msgpack.packb(PEER_ID))
    reasons = set()
    for bit in range(len(CERT) * 8):
        tampered = bytearray(CERT)
        tampered[bit // 8] ^= 1 << (bit % 8)
        error = refusal(bytes(tampered), verifier=verifier)
        reasons.add(error.reason)
        if bit // 8 >= body_start:  # inside the body or the signature
            assert error.reason in {
                Reason.MALFORMED,
                Reason.BAD_SIGNATURE,
                Reason.UNKNOWN_SIGNER,  # the flip hit the signer's key id
            }, bit
    assert Reason.BAD_SIGNATURE in reasons and Reason.MALFORMED in reasons


# -- whom it is for --------------------------------------------------------------------


def test_key_mismatch() -> None:
    error = refusal(CERT, noise_static=bytes(32))

    assert error.reason is Reason.KEY_MISMATCH


def test_wrong_overlay() -> None:
    verifier = CertificateVerifier([service_public_key()], "cadenza-test")

    error = refusal(CERT, verifier=verifier)

    assert error.reason is Reason.WRONG_OVERLAY
    assert "'cadenza-main'" in str(error) and "'cadenza-test'" in str(error)


def test_banned_and_unbanned() -> None:
    verifier = make_verifier()
    verifier.ban(PEER_ID)

    assert refusal(CERT, verifier=verifier).reason is Reason.BANNED

    verifier.unban(PEER_ID)
    verifier.verify(CERT, noise_static=NOISE_STATIC, now=NOW)
    verifier.unban(PEER_ID)  # unbanning twice is fine


def test_checks_run_in_the_documented_order() -> None:
    verifier = CertificateVerifier([service_public_key()], "elsewhere")
    verifier.ban(PEER_ID)
    expired = NOW + 10 * CERT_LIFETIME

    def reason(data: bytes, **kwargs: Any) -> Reason:
        return refusal(
            data, verifier=verifier, noise_static=bytes(32), now=expired, **kwargs
        ).reason

    assert reason(b"\xc1") is Reason.MALFORMED
    unknown = sign(body_fields(s=b"\xff" * 8), key=OTHER_KEY)
    assert reason(unknown) is Reason.UNKNOWN_SIGNER
    assert reason(sign(body_fields(), key=OTHER_KEY)) is Reason.BAD_SIGNATURE
    assert reason(CERT) is Reason.WRONG_OVERLAY
    verifier = make_verifier()
    verifier.ban(PEER_ID)
    assert reason(CERT) is Reason.EXPIRED
    assert refusal(CERT, verifier=verifier, noise_static=bytes(32)).reason is Reason.KEY_MISMATCH
    assert refusal(CERT, verifier=verifier).reason is Reason.BANNED


def test_error_is_a_remote_protocol_error_that_fails_authentication() -> None:
    error = refusal(CERT, noise_static=bytes(32))

    assert isinstance(error, RemoteProtocolError)
    assert error.code is ErrorCode.AUTHENTICATION_FAILED


# -- malformed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid msgpack"),
        (b"\x00" * (MAX_CERT_SIZE + 1), "exceeds"),
        (msgpack.packb({"a": 1}), "not a [version, body, signature] array"),
        (msgpack.packb([]), "not a [version, body, signature] array"),
        (msgpack.packb([True, b"", bytes(64)]), "version is not an integer"),
        (msgpack.packb([2, b"", bytes(64)]), "unsupported certificate version 2"),
        (msgpack.packb([1, b"", bytes(64), 0]), "has 4 elements"),
        (msgpack.packb([1, "text", bytes(64)]), "body is not a byte string"),
        (msgpack.packb([1, b"", bytes(63)]), "signature is not 64 bytes"),
        (CERT + b"\x00", "not valid msgpack"),
        (CERT[:-1], "not valid msgpack"),
        (b"\x93\xd0\x01" + CERT[2:], "not in canonical msgpack encoding"),
        (sign(b"\x91\x01"), "body is not a map"),
        (sign(b"\x82\xa1p\x01\xa1p\x02"), "repeats field 'p'"),
        (sign(b"\x81\x01\x01"), "not valid msgpack"),
        (sign(body_fields(p=None)), "peer id"),
        (sign(body_fields(p=bytes(15))), "peer id"),
        (sign(body_fields(p="x" * 16)), "peer id"),
        (sign(body_fields(k=bytes(31))), "Noise static key"),
        (sign(body_fields(e=["h", 0])), "port 0 is not in 1..65535"),
        (sign(body_fields(e=["h", 65536])), "port"),
        (sign(body_fields(e=["h", True])), "port"),
        (sign(body_fields(e=["", 1])), "host"),
        (sign(body_fields(e=["h" * 256, 1])), "host"),
        (sign(body_fields(e=["h", 1, 2])), "(host, port) pair"),
        (sign(body_fields(e="h:1")), "(host, port) pair"),
        (sign(body_fields(o="")), "overlay id"),
        (sign(body_fields(o=b"cadenza-main")), "overlay id"),
        (sign(body_fields(i=1.5)), "issued-at"),
        (sign(body_fields(i=-1)), "issued-at"),
        (sign(body_fields(i=False)), "issued-at"),
        (sign(body_fields(x=2**64 - 1)), "expiry"),
        (sign(body_fields(x=NOW)), "no later than"),
        (sign(body_fields(s=bytes(7))), "signer key id"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    error = refusal(data)

    assert error.reason is Reason.MALFORMED
    assert message in str(error)


def test_host_of_255_characters_is_allowed() -> None:
    make_verifier().verify(sign(body_fields(e=["h" * 255, 1])), noise_static=NOISE_STATIC, now=NOW)


# -- misuse on this side ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peer_id": bytes(15)},
        {"noise_static": bytes(33)},
        {"endpoint": ("h", 0)},
        {"endpoint": ("", 80)},
        {"now": float("nan")},
        {"now": -5.0},
    ],
)
def test_issuer_refuses_what_it_would_not_accept(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "peer_id": PEER_ID,
        "noise_static": NOISE_STATIC,
        "endpoint": ENDPOINT,
        "now": NOW,
    }
    with pytest.raises(LocalProtocolError):
        ISSUER.issue(**(arguments | kwargs))


@pytest.mark.parametrize("lifetime", [0, -1, 1.5])
def test_issuer_refuses_a_bad_lifetime(lifetime: Any) -> None:
    with pytest.raises(LocalProtocolError):
        CertificateIssuer(SERVICE_KEY, OVERLAY, lifetime=lifetime)


def test_verifier_refuses_nonsense_arguments() -> None:
    verifier = make_verifier()
    with pytest.raises(LocalProtocolError):
        verifier.verify(CERT, noise_static=NOISE_STATIC, now=float("nan"))
    with pytest.raises(LocalProtocolError):
        verifier.verify(CERT, noise_static=bytes(31), now=NOW)
    with pytest.raises(LocalProtocolError):
        verifier.ban(b"short")
    with pytest.raises(LocalProtocolError):
        CertificateVerifier([], "")
    with pytest.raises(LocalProtocolError):
        CertificateVerifier([], OVERLAY, clock_skew=-1)


# -- key ids and fingerprints ----------------------------------------------------------


def test_key_id_is_truncated_sha256_of_the_raw_key() -> None:
    import hashlib

    public = SERVICE_KEY.public_key()

    assert key_id(public) == hashlib.sha256(raw(public)).digest()[:8]
    assert key_id(public) != key_id(OTHER_KEY.public_key())


def test_fingerprint_format() -> None:
    printed = fingerprint(raw(SERVICE_KEY.public_key()))

    assert re.fullmatch(r"[0-9a-f]{4}(:[0-9a-f]{4}){7}", printed)
    assert printed != fingerprint(raw(OTHER_KEY.public_key()))
    with pytest.raises(LocalProtocolError):
        fingerprint(bytes(31))


# -- fuzz ------------------------------------------------------------------------------

FUZZ_VERIFIER = make_verifier()


def verify_or_refuse(data: bytes) -> MembershipCertificate | None:
    """Parse it or raise CertificateError, never anything else."""
    try:
        return FUZZ_VERIFIER.verify(data, noise_static=NOISE_STATIC, now=NOW)
    except CertificateError:
        return None


@given(st.binary(max_size=2 * MAX_CERT_SIZE))
def test_fuzz_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert verify_or_refuse(data) is None


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(CERT)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@given(mutations())
def test_fuzz_mutations_are_refused_unless_unchanged(data: bytes) -> None:
    cert = verify_or_refuse(data)

    assert cert is None or data == CERT


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def signed_bodies(draw: st.DrawFn) -> dict[str, Any]:
    # Start from a good body and replace or drop some fields with anything at all,
    # so the fuzz gets past the signature and exercises the field checks.
    fields = body_fields()
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = draw(msgpack_values)
    fields.update(
        draw(st.dictionaries(st.text(min_size=2, max_size=4), msgpack_values, max_size=2))
    )
    return fields


@settings(max_examples=300)
@given(signed_bodies())
def test_fuzz_signed_bodies_are_accepted_only_when_well_formed(fields: dict[str, Any]) -> None:
    data = sign(fields)

    cert = verify_or_refuse(data)

    if cert is not None:
        assert cert.to_bytes() == data
        assert cert.peer_id == fields["p"] and cert.noise_static == fields["k"]
        assert cert.endpoint == (None if fields.get("e") is None else tuple(fields["e"]))
        assert (cert.issued_at, cert.expires_at) == (fields["i"], fields["x"])
