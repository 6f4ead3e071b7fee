"""Long-term private keys, each a raw 32-byte file readable by its owner only.

``DATA/keys/signing.key`` is the Ed25519 key that signs membership certificates and
manifests; ``DATA/keys/static.key`` is the access point's Noise static key (X25519); a
speaker keeps its own Noise static key the same way (``static.key`` in its state directory).
The service and the speaker daemon both use this module, which is why it sits in the system
layer rather than in :mod:`cadenza.service` (:mod:`cadenza.service.keys` re-exports it).
A missing key is created; an existing one is never replaced, since every speaker and every
stored manifest trusts it. Creation is atomic and safe against a concurrent creator (the
service starting while ``cadenza ingest`` runs): the key is written to a private temp file
and hard-linked into place, so both processes end up with whichever key got there first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from cadenza.protocol.noise import KeyPair

from .files import fsync_dir, write_new

__all__ = ["KEY_SIZE", "KeyFileError", "load_or_create_signing_key", "load_or_create_static_key"]

KEY_SIZE = 32  # raw Ed25519 seed or X25519 scalar


class KeyFileError(Exception):
    """A key file that exists but cannot be used; the message names the file and the fault."""


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``, created (mode 0600) if the file does not exist."""
    raw = _load_or_create(Path(path), "Ed25519")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_or_create_static_key(path: Path) -> KeyPair:
    """The X25519 key pair whose private half is in ``path``, created (0600) if missing."""
    raw = _load_or_create(Path(path), "X25519")
    return KeyPair.from_private(raw)


def _load_or_create(path: Path, kind: str) -> bytes:
    try:
        return _read(path, kind)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write_new(tmp, _generate(kind), 0o600)
        # link, unlike rename, refuses to replace a key another process just created.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path, kind)


def _read(path: Path, kind: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(KEY_SIZE + 1)
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a {kind} key file") from None
    except PermissionError as e:
        raise KeyFileError(f"{path}: cannot read the {kind} key: {e.strerror}") from None
    if len(raw) != KEY_SIZE:
        size = f"{len(raw)} bytes" if len(raw) <= KEY_SIZE else f"more than {KEY_SIZE} bytes"
        raise KeyFileError(
            f"{path}: malformed {kind} private key: expected exactly {KEY_SIZE} raw bytes,"
            f" found {size} (move the file aside to create a new key; speakers will then"
            " have to trust the new one)"
        )
    return raw


def _generate(kind: str) -> bytes:
    if kind == "Ed25519":
        return Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
    return KeyPair.generate().private
