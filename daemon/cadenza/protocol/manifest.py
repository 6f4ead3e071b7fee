"""Content-addressed files: the hash tree that names a file and the signed list of its chunk hashes.

A track's encoded file is cut into 16 KiB chunks (the last may be short). Each chunk is a
leaf of a binary SHA-256 tree; the root, in hex, is the file's id. The service signs the
list of leaf hashes (a *manifest*), so a speaker that holds a verified manifest can check
every chunk on its own, whoever sent it: the service, a peer or its own cache.

Hashing (RFC 6962-style domain separation, so a leaf can never pass for an inner node)::

    leaf = SHA-256(0x00 || chunk)
    node = SHA-256(0x01 || left || right)

The tree is built level by level, pairing neighbours; an odd last node is promoted to the
next level unchanged (never duplicated, which would give two files one root). An empty
file has one leaf, ``leaf_hash(b"")``.

Wire format (all msgpack)::

    envelope  = [version: int = 1, body: bin, signature: bin(64)]
    body      = map {"f": root bin(32), "n": size int, "c": chunk size int (16384),
                     "h": leaf hashes, concatenated, bin(32 * chunks), "s": signer key id bin(8)}
    signature = Ed25519(signer, b"cadenza/manifest/v1\\x00" + body)

As with membership certificates, the signature covers the body bytes exactly as sent (body
fields this version does not know are ignored), and the envelope must be in msgpack's
shortest encoding.

Pure and sans-IO; decoding arbitrary bytes raises :class:`ManifestError` and nothing else.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cadenza.protocol import envelope
from cadenza.protocol.certificate import KEY_ID_SIZE, key_id
from cadenza.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CHUNK_SIZE",
    "FILE_ID_LENGTH",
    "HASH_SIZE",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST_SIZE",
    "SIGNATURE_DOMAIN",
    "ChunkError",
    "Manifest",
    "ManifestError",
    "ManifestReason",
    "ManifestSigner",
    "ManifestVerifier",
    "chunk_count",
    "chunk_hashes",
    "file_id_of",
    "is_file_id",
    "leaf_hash",
    "node_hash",
    "tree_root",
]

# The unit of transfer, caching and verification (seed: 16 KiB chunks).
CHUNK_SIZE = 16 * 1024
# An encoded track is a few MB (20 minutes at 320 kbps is about 48 MB); 1 GiB leaves room
# for anything real while bounding a manifest at 65536 hashes (2 MiB).
MAX_FILE_SIZE = 1 << 30
HASH_SIZE = 32
FILE_ID_LENGTH = 2 * HASH_SIZE
# The largest manifest's hash list plus room for the rest of the body and the envelope
# (about 150 bytes today; the remainder for fields a later version may add). Checked
# before any decoding, so hostile input costs nothing.
MAX_MANIFEST_SIZE = (MAX_FILE_SIZE // CHUNK_SIZE) * HASH_SIZE + 4096

VERSION = 1
# Keeps a manifest signature from being valid as any other message the service key
# signs (membership certificates, future manifest versions).
SIGNATURE_DOMAIN = b"cadenza/manifest/v1\x00"

_ROOT = "f"
_SIZE = "n"
_CHUNK_SIZE = "c"
_HASHES = "h"
_SIGNER = "s"

_FILE_ID_RE = re.compile(r"[0-9a-f]{64}")
# Hashing the one-byte prefix once and copying the state saves a 16 KiB concatenation
# per chunk on the hot path.
_LEAF_PREFIX = hashlib.sha256(b"\x00")
_NODE_PREFIX = b"\x01"


class ManifestReason(enum.Enum):
    """Why a manifest was refused; the value is what logs and reports carry."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    ROOT_MISMATCH = "root-mismatch"
    WRONG_FILE = "wrong-file"


class ManifestError(RemoteProtocolError):
    """A manifest that must not be trusted; ``reason`` says why."""

    def __init__(self, reason: ManifestReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ChunkError(RemoteProtocolError):
    """Chunk ``index`` does not match the manifest (wrong hash, wrong length, no such chunk)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


# -- the hash tree ----------------------------------------------------------------------


def leaf_hash(chunk: bytes | memoryview) -> bytes:
    """SHA-256 of ``0x00 || chunk``: the hash of one chunk as a leaf of the tree."""
    h = _LEAF_PREFIX.copy()
    h.update(chunk)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256 of ``0x01 || left || right``: an inner node of the tree."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaves``, paired level by level, an odd last node promoted.

    A single leaf is its own root. Raises ``ValueError`` for no leaves: every file,
    even an empty one, has at least one.
    """
    if not leaves:
        raise ValueError("a hash tree has at least one leaf (an empty file has leaf_hash(b''))")
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def chunk_count(size: int) -> int:
    """How many chunks a file of ``size`` bytes has (one for an empty file)."""
    return max(1, -(-size // CHUNK_SIZE))


def chunk_hashes(data: bytes | memoryview) -> list[bytes]:
    """The leaf hash of every 16 KiB chunk of ``data`` (``[leaf_hash(b"")]`` if empty)."""
    view = _byte_view(data)
    if not view:
        return [leaf_hash(b"")]
    return [leaf_hash(view[i : i + CHUNK_SIZE]) for i in range(0, len(view), CHUNK_SIZE)]


def file_id_of(data: bytes | memoryview) -> str:
    """The id of the file holding ``data``: the tree root as 64 lower-case hex digits."""
    return tree_root(chunk_hashes(data)).hex()


def is_file_id(value: object) -> bool:
    """Whether ``value`` is a well-formed file id (64 lower-case hex digits)."""
    return isinstance(value, str) and _FILE_ID_RE.fullmatch(value) is not None


# -- manifests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A file's signed chunk hash list. Only trust one from :meth:`ManifestVerifier.verify`
    or :meth:`ManifestSigner.sign`.

    ``body`` and ``signature`` are the signed bytes exactly as received; the other fields
    are decoded from ``body``.
    """

    file_id: str
    size: int
    chunk_size: int
    hashes: tuple[bytes, ...] = field(repr=False)
    signer: bytes
    signature: bytes = field(repr=False)
    body: bytes = field(repr=False, compare=False)

    @property
    def num_chunks(self) -> int:
        return len(self.hashes)

    def chunk_length(self, index: int) -> int:
        """The length in bytes of chunk ``index`` (only the last one may be short)."""
        start, end = self.chunk_range(index)
        return end - start

    def chunk_range(self, index: int) -> tuple[int, int]:
        """The byte offsets ``(start, end)`` of chunk ``index`` in the file, end exclusive.

        Raises ``IndexError`` for an index outside ``0 <= index < num_chunks``.
        """
        if type(index) is not int or not 0 <= index < len(self.hashes):
            raise IndexError(f"chunk {index!r} not in 0..{len(self.hashes) - 1}")
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def verify_chunk(self, index: int, data: bytes | memoryview) -> None:
        """Return if ``data`` is chunk ``index`` of this file; raise :class:`ChunkError` if not."""
        if type(index) is not int:
            raise LocalProtocolError(f"a chunk index is an int, not {type(index).__name__}")
        count = len(self.hashes)
        if not 0 <= index < count:
            raise ChunkError(index, f"chunk {index} not in 0..{count - 1} of file {self.file_id}")
        expected = min(self.chunk_size, self.size - index * self.chunk_size)
        length = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if length != expected:
            raise ChunkError(
                index,
                f"chunk {index} of file {self.file_id} is {length} bytes, not {expected}",
            )
        if leaf_hash(data) != self.hashes[index]:
            raise ChunkError(index, f"chunk {index} of file {self.file_id} does not match its hash")

    def to_bytes(self) -> bytes:
        """The signed envelope as it goes on the wire (the bytes it was decoded from)."""
        return _pack_envelope(self.body, self.signature)


class ManifestSigner:
    """The service's side: hashes files and signs their chunk hash lists."""

    def __init__(self, signing_key: Ed25519PrivateKey) -> None:
        self._signing_key = signing_key
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        self.key_id: bytes = key_id(self.public_key)

    def sign(self, data: bytes | memoryview) -> Manifest:
        """Hash the whole file in ``data`` and sign its manifest."""
        view = _byte_view(data)
        if len(view) > MAX_FILE_SIZE:
            raise LocalProtocolError(f"file of {len(view)} bytes exceeds {MAX_FILE_SIZE}")
        return self.sign_hashes(chunk_hashes(view), len(view))

    def sign_hashes(self, hashes: Sequence[bytes], size: int) -> Manifest:
        """Sign the manifest of a file of ``size`` bytes whose chunk leaf hashes are ``hashes``.

        For callers that hashed the file as it streamed past. The hashes are trusted to be
        right; only their number and shape are checked.
        """
        if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
            raise LocalProtocolError(f"file size {size!r} not in 0..{MAX_FILE_SIZE}")
        if len(hashes) != chunk_count(size):
            raise LocalProtocolError(
                f"a file of {size} bytes has {chunk_count(size)} chunks, not {len(hashes)}"
            )
        if not all(type(h) is bytes and len(h) == HASH_SIZE for h in hashes):
            raise LocalProtocolError(f"every chunk hash must be {HASH_SIZE} bytes")
        root = tree_root(hashes)
        body: bytes = msgpack.packb(
            {
                _ROOT: root,
                _SIZE: size,
                _CHUNK_SIZE: CHUNK_SIZE,
                _HASHES: b"".join(hashes),
                _SIGNER: self.key_id,
            },
            use_bin_type=True,
        )
        signature = self._signing_key.sign(SIGNATURE_DOMAIN + body)
        return Manifest(
            file_id=root.hex(),
            size=size,
            chunk_size=CHUNK_SIZE,
            hashes=tuple(hashes),
            signer=self.key_id,
            signature=signature,
            body=body,
        )


class ManifestVerifier:
    """A receiver's side: decides whether a manifest can be trusted to check chunks."""

    def __init__(self, trusted: Iterable[Ed25519PublicKey]) -> None:
        self._trusted: dict[bytes, Ed25519PublicKey] = {}
        for key in trusted:
            self.add_trusted(key)

    def add_trusted(self, key: Ed25519PublicKey) -> None:
        """Accept manifests signed by ``key`` from now on."""
        self._trusted[key_id(key)] = key

    def remove_trusted(self, key: Ed25519PublicKey) -> None:
        """Stop accepting manifests signed by ``key`` (a retired service key)."""
        self._trusted.pop(key_id(key), None)

    def verify(self, data: bytes, *, file_id: str | None = None) -> Manifest:
        """The manifest in ``data`` if a trusted key signed it and its hashes make its root.

        ``file_id`` is the file the caller asked for; the manifest must name it. Raises
        :class:`ManifestError` with the first failing check's reason, in this order:
        MALFORMED (including a hash count that does not fit the size), UNKNOWN_SIGNER,
        BAD_SIGNATURE, WRONG_FILE, ROOT_MISMATCH.
        """
        if file_id is not None and not is_file_id(file_id):
            raise LocalProtocolError(f"{file_id!r} is not a file id (64 lower-case hex digits)")
        manifest = _decode(data)

        envelope.signed_by(
            self._trusted,
            manifest.signer,
            manifest.signature,
            SIGNATURE_DOMAIN + manifest.body,
            unknown=lambda: ManifestError(
                ManifestReason.UNKNOWN_SIGNER,
                f"manifest of {manifest.file_id} signed by unknown key {manifest.signer.hex()}",
            ),
            bad=lambda: ManifestError(
                ManifestReason.BAD_SIGNATURE,
                f"manifest signature does not verify with key {manifest.signer.hex()}",
            ),
        )

        if file_id is not None and manifest.file_id != file_id:
            raise ManifestError(
                ManifestReason.WRONG_FILE,
                f"manifest is for file {manifest.file_id}, not {file_id}",
            )
        # Last because it is the dearest check (a hash per chunk); it is what makes the
        # signed hash list agree with the name the file is asked for by.
        root = tree_root(manifest.hashes).hex()
        if root != manifest.file_id:
            raise ManifestError(
                ManifestReason.ROOT_MISMATCH,
                f"manifest hashes make root {root}, not the file id {manifest.file_id}",
            )
        return manifest


# -- decoding ---------------------------------------------------------------------------


def _decode(data: bytes) -> Manifest:
    body, signature, fields = _ENVELOPE.open(data)
    packed: bytes = fields[_HASHES]
    return Manifest(
        file_id=fields[_ROOT].hex(),
        size=fields[_SIZE],
        chunk_size=fields[_CHUNK_SIZE],
        hashes=tuple(packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)),
        signer=fields[_SIGNER],
        signature=signature,
        body=body,
    )


def _field_problem(fields: dict[str, Any]) -> str | None:
    root = fields.get(_ROOT)
    if type(root) is not bytes or len(root) != HASH_SIZE:
        return f"root is not {HASH_SIZE} bytes"
    size = fields.get(_SIZE)
    if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
        return f"file size is not an integer in 0..{MAX_FILE_SIZE}"
    chunk_size = fields.get(_CHUNK_SIZE)
    # File ids are defined over 16 KiB chunks; another size would name a different tree.
    if type(chunk_size) is not int or chunk_size != CHUNK_SIZE:
        return f"chunk size is not {CHUNK_SIZE}"
    hashes = fields.get(_HASHES)
    if type(hashes) is not bytes:
        return "hash list is not a byte string"
    expected = chunk_count(size) * HASH_SIZE
    if len(hashes) != expected:
        return (
            f"hash list of {len(hashes)} bytes does not fit a file of {size} bytes"
            f" ({chunk_count(size)} hashes of {HASH_SIZE} bytes)"
        )
    if size == 0 and hashes != leaf_hash(b""):
        return "hash of an empty file is not leaf_hash(b'')"
    signer = fields.get(_SIGNER)
    if type(signer) is not bytes or len(signer) != KEY_ID_SIZE:
        return f"signer key id is not {KEY_ID_SIZE} bytes"
    return None


# -- helpers ----------------------------------------------------------------------------


def _pack_envelope(body: bytes, signature: bytes) -> bytes:
    return envelope.pack(VERSION, body, signature)


def _byte_view(data: bytes | memoryview) -> memoryview:
    # A memoryview of wider items (say, an array of int32) would slice and measure in
    # items; chunking is defined on bytes.
    return memoryview(data).cast("B")


def _malformed(message: str) -> ManifestError:
    return ManifestError(ManifestReason.MALFORMED, message)


_ENVELOPE = envelope.Kind("manifest", VERSION, MAX_MANIFEST_SIZE, _field_problem, _malformed)
