"""Hash trees and signed manifests: files named by content, every chunk checkable alone."""

from __future__ import annotations

import array
import hashlib
import re
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.protocol.certificate import key_id
from cadenza.protocol.errors import LocalProtocolError, RemoteProtocolError
from cadenza.protocol.manifest import (
    CHUNK_SIZE,
    MAX_FILE_SIZE,
    MAX_MANIFEST_SIZE,
    SIGNATURE_DOMAIN,
    ChunkError,
    Manifest,
    ManifestError,
    ManifestReason,
    ManifestSigner,
    ManifestVerifier,
    chunk_count,
    chunk_hashes,
    file_id_of,
    is_file_id,
    leaf_hash,
    node_hash,
    tree_root,
)

SERVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
SIGNER = ManifestSigner(SERVICE_KEY)


def raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def service_public_key() -> Ed25519PublicKey:
    # What a speaker holds: the raw public key, as configured or pinned.
    return Ed25519PublicKey.from_public_bytes(raw(SERVICE_KEY.public_key()))


def make_verifier() -> ManifestVerifier:
    return ManifestVerifier([service_public_key()])


def content(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from chunk to chunk (so a swapped chunk is noticed)."""
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


# Three chunks, the last short: the shape of every real file.
DATA = content(2 * CHUNK_SIZE + 1000)
MANIFEST = SIGNER.sign(DATA)
MANIFEST_BYTES = MANIFEST.to_bytes()


# Independent of the module: the definitions written out with hashlib.
def L(chunk: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + chunk).digest()


def N(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def body_fields(**changes: Any) -> dict[str, Any]:
    """The body of MANIFEST as a map, with some fields changed (None removes a field)."""
    fields: dict[str, Any] = {
        "f": bytes.fromhex(MANIFEST.file_id),
        "n": len(DATA),
        "c": CHUNK_SIZE,
        "h": b"".join(L(DATA[i : i + CHUNK_SIZE]) for i in range(0, len(DATA), CHUNK_SIZE)),
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


def refusal(data: bytes, *, file_id: str | None = None) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        make_verifier().verify(data, file_id=file_id)
    return info.value


def chunk_of(data: bytes, index: int) -> bytes:
    return data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]


# -- the hash tree ---------------------------------------------------------------------


def test_leaf_and_node_hashes_are_domain_separated_sha256() -> None:
    assert leaf_hash(b"abc") == L(b"abc")
    assert leaf_hash(memoryview(b"abc")) == L(b"abc")
    assert node_hash(b"a" * 32, b"b" * 32) == N(b"a" * 32, b"b" * 32)
    # A leaf can never pass for a node over the same bytes.
    assert leaf_hash(b"a" * 32 + b"b" * 32) != node_hash(b"a" * 32, b"b" * 32)


def test_empty_file_has_one_empty_leaf() -> None:
    assert chunk_hashes(b"") == [L(b"")]
    # RFC 6962's hash of an empty leaf, a published value.
    assert file_id_of(b"") == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    with pytest.raises(ValueError):
        tree_root([])


def test_tree_shapes_by_hand() -> None:
    a, b, c, d, e = (L(bytes([i])) for i in range(5))

    assert tree_root([a]) == a
    assert tree_root([a, b]) == N(a, b)
    assert tree_root([a, b, c]) == N(N(a, b), c)
    assert tree_root([a, b, c, d]) == N(N(a, b), N(c, d))
    assert tree_root([a, b, c, d, e]) == N(N(N(a, b), N(c, d)), e)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    # RFC 6962 section 2.1: split at the largest power of two below n. Pairing level by
    # level with an odd node promoted gives the same tree.
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return N(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


@pytest.mark.parametrize("n", [*range(1, 34), 63, 64, 65, 100, 257])
def test_tree_is_the_rfc6962_tree(n: int) -> None:
    leaves = [L(i.to_bytes(4, "big")) for i in range(n)]

    assert tree_root(leaves) == rfc6962_root(leaves)


@pytest.mark.parametrize(
    "size", [1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 4 * CHUNK_SIZE + 5]
)
def test_chunk_hashes_cut_16_kib_chunks(size: int) -> None:
    data = content(size)

    hashes = chunk_hashes(data)

    assert len(hashes) == chunk_count(size) == -(-size // CHUNK_SIZE)
    assert hashes == [L(chunk_of(data, i)) for i in range(len(hashes))]
    assert file_id_of(data) == rfc6962_root(hashes).hex()


def test_a_memoryview_of_wide_items_is_hashed_as_its_bytes() -> None:
    data = content(CHUNK_SIZE + 4)
    wide = array.array("I", data)

    assert chunk_hashes(memoryview(wide)) == chunk_hashes(data)
    assert file_id_of(memoryview(data)) == file_id_of(data)


def test_file_ids() -> None:
    assert is_file_id(MANIFEST.file_id)
    assert not is_file_id(MANIFEST.file_id.upper())
    assert not is_file_id(MANIFEST.file_id + "\n")
    assert not is_file_id(MANIFEST.file_id[:-1])
    assert not is_file_id("../../etc/passwd")
    assert not is_file_id(bytes.fromhex(MANIFEST.file_id))


# -- signing and verifying -------------------------------------------------------------


def test_second_party_with_only_the_public_key_accepts_it() -> None:
    manifest = make_verifier().verify(MANIFEST_BYTES, file_id=file_id_of(DATA))

    assert manifest == MANIFEST
    assert manifest.file_id == file_id_of(DATA)
    assert manifest.size == len(DATA)
    assert manifest.chunk_size == CHUNK_SIZE
    assert manifest.num_chunks == 3
    assert list(manifest.hashes) == chunk_hashes(DATA)
    assert manifest.signer == SIGNER.key_id == key_id(service_public_key())
    assert manifest.to_bytes() == MANIFEST_BYTES
    # Beyond the hash list: root, size, signer, signature and framing.
    assert len(MANIFEST_BYTES) - 32 * manifest.num_chunks < 160


def test_without_an_expected_id_any_trusted_manifest_is_accepted() -> None:
    assert make_verifier().verify(MANIFEST_BYTES) == MANIFEST


def test_every_chunk_verifies() -> None:
    for index in range(MANIFEST.num_chunks):
        start, end = MANIFEST.chunk_range(index)
        assert MANIFEST.chunk_length(index) == end - start
        MANIFEST.verify_chunk(index, DATA[start:end])
        MANIFEST.verify_chunk(index, memoryview(DATA)[start:end])

    assert [MANIFEST.chunk_range(i) for i in range(3)] == [
        (0, CHUNK_SIZE),
        (CHUNK_SIZE, 2 * CHUNK_SIZE),
        (2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1000),
    ]


def test_a_tampered_chunk_is_refused_naming_its_index() -> None:
    chunk = bytearray(chunk_of(DATA, 1))
    chunk[100] ^= 0x01

    with pytest.raises(ChunkError, match="chunk 1 ") as info:
        MANIFEST.verify_chunk(1, bytes(chunk))

    assert info.value.index == 1
    assert isinstance(info.value, RemoteProtocolError)


def test_a_chunk_offered_for_another_index_is_refused() -> None:
    with pytest.raises(ChunkError) as info:
        MANIFEST.verify_chunk(0, chunk_of(DATA, 1))

    assert info.value.index == 0


@pytest.mark.parametrize(
    ("index", "data"),
    [
        (2, chunk_of(DATA, 2)[:-1]),  # last chunk short by one
        (2, chunk_of(DATA, 2) + b"\x00"),  # last chunk long by one
        (2, chunk_of(DATA, 2).ljust(CHUNK_SIZE, b"\x00")),  # last chunk padded to full size
        (0, chunk_of(DATA, 0)[:-1]),
        (0, b""),
    ],
)
def test_a_chunk_of_the_wrong_length_is_refused(index: int, data: bytes) -> None:
    with pytest.raises(ChunkError, match="bytes, not") as info:
        MANIFEST.verify_chunk(index, data)

    assert info.value.index == index


@pytest.mark.parametrize("index", [-1, -3, 3, 1 << 40])
def test_a_chunk_index_out_of_range_is_refused(index: int) -> None:
    # -1 must not quietly mean the last chunk.
    last = chunk_of(DATA, 2)

    with pytest.raises(ChunkError, match=r"not in 0\.\.2") as info:
        MANIFEST.verify_chunk(index, last)

    assert info.value.index == index
    with pytest.raises(IndexError):
        MANIFEST.chunk_range(index)
    with pytest.raises(IndexError):
        MANIFEST.chunk_length(index)


def test_a_chunk_index_must_be_an_int() -> None:
    with pytest.raises(LocalProtocolError):
        MANIFEST.verify_chunk(True, chunk_of(DATA, 1))  # a bool is not an index
    with pytest.raises(LocalProtocolError):
        MANIFEST.verify_chunk(1.0, chunk_of(DATA, 1))  # type: ignore[arg-type]


def test_empty_file() -> None:
    manifest = make_verifier().verify(SIGNER.sign(b"").to_bytes(), file_id=file_id_of(b""))

    assert (manifest.size, manifest.num_chunks) == (0, 1)
    assert manifest.chunk_range(0) == (0, 0)
    manifest.verify_chunk(0, b"")
    with pytest.raises(ChunkError):
        manifest.verify_chunk(0, b"\x00")


@pytest.mark.parametrize("size", [1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE])
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = content(size, seed=size)

    manifest = make_verifier().verify(SIGNER.sign(data).to_bytes(), file_id=file_id_of(data))

    assert manifest.num_chunks == chunk_count(size)
    assert sum(manifest.chunk_length(i) for i in range(manifest.num_chunks)) == size
    for index in range(manifest.num_chunks):
        start, end = manifest.chunk_range(index)
        manifest.verify_chunk(index, data[start:end])


def test_sign_hashes_matches_sign() -> None:
    assert SIGNER.sign_hashes(chunk_hashes(DATA), len(DATA)) == MANIFEST


def test_the_largest_manifest_fits_its_bound() -> None:
    count = MAX_FILE_SIZE // CHUNK_SIZE
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(count)]

    manifest = SIGNER.sign_hashes(hashes, MAX_FILE_SIZE)
    data = manifest.to_bytes()

    assert len(data) <= MAX_MANIFEST_SIZE
    assert make_verifier().verify(data, file_id=manifest.file_id).num_chunks == count
    with pytest.raises(ManifestError, match="exceeds"):
        make_verifier().verify(data + b"\x00" * (MAX_MANIFEST_SIZE - len(data) + 1))


@pytest.mark.parametrize(
    ("hashes", "size"),
    [
        ([L(b"")] * 2, CHUNK_SIZE),  # one chunk too many
        ([L(b"")], CHUNK_SIZE + 1),  # one chunk too few
        ([], 0),
        ([b"\x00" * 31], 1),
        (["00" * 32], 1),
        ([L(b"")], -1),
        ([L(b"")] * (MAX_FILE_SIZE // CHUNK_SIZE + 1), MAX_FILE_SIZE + 1),
        ([L(b"")], 1.0),
    ],
)
def test_signer_refuses_what_it_would_not_accept(hashes: list[Any], size: Any) -> None:
    with pytest.raises(LocalProtocolError):
        SIGNER.sign_hashes(hashes, size)


def test_verifier_refuses_nonsense_arguments() -> None:
    verifier = make_verifier()
    with pytest.raises(LocalProtocolError):
        verifier.verify(MANIFEST_BYTES, file_id=MANIFEST.file_id.upper())
    with pytest.raises(LocalProtocolError):
        verifier.verify(MANIFEST_BYTES, file_id="../../etc")
    with pytest.raises(LocalProtocolError):
        verifier.verify("not bytes")  # type: ignore[arg-type]


# -- refusals --------------------------------------------------------------------------


def test_tampered_signature() -> None:
    data = bytearray(MANIFEST_BYTES)
    data[-1] ^= 0x80

    assert refusal(bytes(data)).reason is ManifestReason.BAD_SIGNATURE


def test_tampered_hash_in_the_body_breaks_the_signature() -> None:
    forged = sign(body_fields(h=b"\x00" * 32 + body_fields()["h"][32:]))
    good_signature = msgpack.unpackb(MANIFEST_BYTES)[2]
    envelope = msgpack.unpackb(forged)
    envelope[2] = good_signature

    error = refusal(msgpack.packb(envelope))

    assert error.reason is ManifestReason.BAD_SIGNATURE


def test_signature_without_domain_prefix_is_refused() -> None:
    body = msgpack.packb(body_fields())
    data = msgpack.packb([1, body, SERVICE_KEY.sign(body)])

    assert refusal(data).reason is ManifestReason.BAD_SIGNATURE


def test_a_membership_certificate_signature_does_not_make_a_manifest() -> None:
    body = msgpack.packb(body_fields())
    data = msgpack.packb([1, body, SERVICE_KEY.sign(b"cadenza/membership/v1\x00" + body)])

    assert refusal(data).reason is ManifestReason.BAD_SIGNATURE


def test_every_single_bit_flip_is_refused() -> None:
    verifier = make_verifier()
    for bit in range(len(MANIFEST_BYTES) * 8):
        data = bytearray(MANIFEST_BYTES)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ManifestError):
            verifier.verify(bytes(data))


def test_unknown_signer() -> None:
    other = ManifestSigner(OTHER_KEY).sign(DATA).to_bytes()

    error = refusal(other)

    assert error.reason is ManifestReason.UNKNOWN_SIGNER
    assert key_id(OTHER_KEY.public_key()).hex() in str(error)


def test_trust_can_be_added_and_removed() -> None:
    verifier = make_verifier()
    other = ManifestSigner(OTHER_KEY).sign(DATA).to_bytes()

    verifier.add_trusted(OTHER_KEY.public_key())
    assert verifier.verify(other).file_id == MANIFEST.file_id

    verifier.remove_trusted(OTHER_KEY.public_key())
    with pytest.raises(ManifestError):
        verifier.verify(other)


def test_forged_signature_under_a_trusted_key_id() -> None:
    # Signed by another key but naming the trusted key as its signer.
    assert refusal(sign(body_fields(), key=OTHER_KEY)).reason is ManifestReason.BAD_SIGNATURE


def test_signed_hashes_that_do_not_make_the_root_are_refused() -> None:
    # The trusted key signed it, and the count fits the size, but the hashes are not the
    # file's: a speaker must not check chunks against them.
    hashes = body_fields()["h"]
    swapped = hashes[32:64] + hashes[0:32] + hashes[64:]

    error = refusal(sign(body_fields(h=swapped)), file_id=MANIFEST.file_id)

    assert error.reason is ManifestReason.ROOT_MISMATCH
    assert refusal(sign(body_fields(h=swapped))).reason is ManifestReason.ROOT_MISMATCH


def test_a_root_that_is_not_the_hashes_root_is_refused() -> None:
    other_root = bytes.fromhex(file_id_of(b"other"))

    error = refusal(sign(body_fields(f=other_root)), file_id=other_root.hex())

    assert error.reason is ManifestReason.ROOT_MISMATCH


def test_a_manifest_for_another_file() -> None:
    error = refusal(MANIFEST_BYTES, file_id=file_id_of(b"another file"))

    assert error.reason is ManifestReason.WRONG_FILE
    assert MANIFEST.file_id in str(error)


def test_unknown_body_fields_are_ignored() -> None:
    fields = body_fields()
    fields["future"] = [1, 2, 3]
    data = sign(fields)

    manifest = make_verifier().verify(data, file_id=MANIFEST.file_id)

    assert manifest.hashes == MANIFEST.hashes
    assert manifest.to_bytes() == data


def test_checks_run_in_the_documented_order() -> None:
    # Malformed before unknown signer before bad signature before wrong file before root.
    unknown_and_malformed = sign(body_fields(c=1024, s=b"\x00" * 8), key=OTHER_KEY)
    assert refusal(unknown_and_malformed).reason is ManifestReason.MALFORMED

    unknown_and_forged = sign(body_fields(s=b"\x00" * 8), key=OTHER_KEY)
    assert refusal(unknown_and_forged).reason is ManifestReason.UNKNOWN_SIGNER

    forged_and_wrong = sign(body_fields(), key=OTHER_KEY)
    assert refusal(forged_and_wrong, file_id="00" * 32).reason is ManifestReason.BAD_SIGNATURE

    hashes = body_fields()["h"]
    wrong_and_mismatched = sign(body_fields(h=hashes[32:64] + hashes[:32] + hashes[64:]))
    assert refusal(wrong_and_mismatched, file_id="00" * 32).reason is ManifestReason.WRONG_FILE


def test_error_is_a_remote_protocol_error() -> None:
    error = refusal(b"\xc1")

    assert isinstance(error, RemoteProtocolError)
    assert error.reason is ManifestReason.MALFORMED
    assert error.reason.value == "malformed"


SIGNATURE = bytes(64)
BODY = msgpack.packb(body_fields())
EMPTY_BODY = {**body_fields(), "n": 0, "h": L(b""), "f": L(b"")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (MANIFEST_BYTES[:-1], "not valid msgpack"),
        (MANIFEST_BYTES + b"\x00", "not valid msgpack"),
        (msgpack.packb({"a": 1}), "not a \\[version, body, signature\\] array"),
        (msgpack.packb([]), "not a \\[version"),
        (msgpack.packb(["1", BODY, SIGNATURE]), "version is not an integer"),
        (msgpack.packb([2, BODY, SIGNATURE]), "unsupported manifest version 2"),
        (msgpack.packb([1, BODY]), "2 elements, not 3"),
        (msgpack.packb([1, BODY, SIGNATURE, 0]), "4 elements, not 3"),
        (msgpack.packb([1, "body", SIGNATURE]), "body is not a byte string"),
        (msgpack.packb([1, BODY, SIGNATURE[:63]]), "signature is not 64 bytes"),
        # The same array with the body's length in a needlessly wide header (bin32).
        (b"\x93\x01\xc6" + len(BODY).to_bytes(4, "big") + BODY + b"\xc4\x40" + SIGNATURE, "canon"),
        (sign(b"\xc1"), "body is not valid msgpack"),
        (sign(msgpack.packb([1, 2])), "body is not a map"),
        (sign(msgpack.packb({1: 2})), "not valid msgpack"),
        (sign(b"\x82\xa1n\x01\xa1n\x02"), "repeats field 'n'"),
        (sign(body_fields(f=None)), "root is not 32 bytes"),
        (sign(body_fields(f=b"\x00" * 31)), "root is not 32 bytes"),
        (sign(body_fields(f=MANIFEST.file_id)), "root is not 32 bytes"),
        (sign(body_fields(n=None)), "file size"),
        (sign(body_fields(n=-1)), "file size"),
        (sign(body_fields(n=True)), "file size"),
        (sign(body_fields(n=float(len(DATA)))), "file size"),
        (sign(body_fields(n=MAX_FILE_SIZE + 1)), "file size"),
        (sign(body_fields(c=None)), "chunk size is not 16384"),
        (sign(body_fields(c=1024)), "chunk size is not 16384"),
        (sign(body_fields(h=None)), "hash list is not a byte string"),
        (sign(body_fields(h=list(MANIFEST.hashes))), "hash list is not a byte string"),
        (sign(body_fields(n=len(DATA) + CHUNK_SIZE)), "does not fit a file"),
        (sign(body_fields(n=2 * CHUNK_SIZE)), "does not fit a file"),
        (sign(body_fields(h=body_fields()["h"][:-1])), "does not fit a file"),
        (sign({**EMPTY_BODY, "h": L(b"x")}), "empty file"),
        (sign(body_fields(s=None)), "signer key id is not 8 bytes"),
        (sign(body_fields(s=b"\x00" * 32)), "signer key id is not 8 bytes"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    error = refusal(data)

    assert error.reason is ManifestReason.MALFORMED
    assert re.search(message, str(error)), str(error)


def test_the_hand_built_empty_body_is_accepted() -> None:
    # The fixture the empty-file refusal above starts from is itself good.
    assert make_verifier().verify(sign(EMPTY_BODY)).size == 0


# -- fuzz: parse it or raise ManifestError, never anything else ------------------------


def verify_or_refuse(data: bytes) -> Manifest | None:
    try:
        return make_verifier().verify(data)
    except ManifestError:
        return None


@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert verify_or_refuse(data) is None


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(MANIFEST_BYTES)
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
    manifest = verify_or_refuse(data)

    assert manifest is None or data == MANIFEST_BYTES


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=100),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def signed_bodies(draw: st.DrawFn) -> dict[str, Any]:
    # Start from a good body and replace or drop some fields with anything at all, so the
    # fuzz gets past the signature and exercises the field checks.
    fields = body_fields()
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = draw(
                msgpack_values | st.sampled_from([0, 1, CHUNK_SIZE, len(DATA), b"\x00" * 32])
            )
    fields.update(
        draw(st.dictionaries(st.text(min_size=2, max_size=4), msgpack_values, max_size=2))
    )
    return fields


@settings(max_examples=300)
@given(signed_bodies())
def test_fuzz_signed_bodies_are_accepted_only_when_sound(fields: dict[str, Any]) -> None:
    data = sign(fields)

    manifest = verify_or_refuse(data)

    if manifest is not None:
        assert manifest.to_bytes() == data
        assert manifest.file_id == fields["f"].hex()
        assert tree_root(manifest.hashes) == fields["f"]
        assert manifest.size == fields["n"]
        assert manifest.num_chunks == chunk_count(fields["n"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6 * CHUNK_SIZE), st.integers(0, 1000))
def test_fuzz_any_file_round_trips_and_every_chunk_checks(size: int, seed: int) -> None:
    data = content(size, seed)

    manifest = make_verifier().verify(SIGNER.sign(data).to_bytes(), file_id=file_id_of(data))

    for index in range(manifest.num_chunks):
        start, end = manifest.chunk_range(index)
        manifest.verify_chunk(index, data[start:end])
        if end > start:
            tampered = bytearray(data[start:end])
            tampered[(seed * 7919) % len(tampered)] ^= 0x40
            with pytest.raises(ChunkError):
                manifest.verify_chunk(index, bytes(tampered))
