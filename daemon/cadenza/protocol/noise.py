"""The Noise Protocol Framework (revision 34), sans-IO.

Three layers, as in the specification: :class:`CipherState` (one AEAD key and
its nonce), a private ``_SymmetricState`` (chaining key and handshake hash) and
:class:`HandshakeState` (runs a handshake pattern). :class:`NoiseTransport` is
what the connection uses once the handshake is done.

Handshake patterns are data: every pattern is written below exactly as the
specification prints it and parsed once at import. Supported names are
``Noise_<pattern>[psk<n>[+psk<m>...]]_25519_<ChaChaPoly|AESGCM>_<SHA256|BLAKE2s>``
for every fundamental, one-way and deferred pattern of the specification.

Errors say whose fault they are: misuse of this API (wrong turn, missing keys,
oversized payloads, nonce exhaustion) raises :class:`LocalProtocolError` and
leaves the state untouched; anything wrong with received bytes raises
:class:`RemoteProtocolError` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DH_LEN",
    "MAX_MESSAGE",
    "REKEY_INTERVAL",
    "TAG_LEN",
    "CipherState",
    "HandshakeState",
    "KeyPair",
    "NoiseTransport",
]

# X25519 public keys and shared secrets are 32 bytes.
DH_LEN: Final = 32
# The specification caps every Noise message (handshake or transport) at 65535 bytes.
MAX_MESSAGE: Final = 65535
# Poly1305 and GCM tags are 16 bytes.
TAG_LEN: Final = 16
# Rekeying bounds how much traffic one key (if ever lifted from memory) can decrypt;
# it costs one AEAD key setup, so every ~1M messages per direction is free in practice.
REKEY_INTERVAL: Final = 1 << 20

# Both supported hashes have a 32-byte digest and a 64-byte block.
_HASH_LEN: Final = 32
# Cipher keys are 32 bytes for both ciphers.
_KEY_LEN: Final = 32
# Nonce 2**64-1 is reserved by the specification for rekey; it must never encrypt a message.
_MAX_NONCE: Final = (1 << 64) - 1
# ChaChaPoly: 32 zero bits then the counter little-endian; AESGCM: the counter big-endian.
_CHACHA_NONCE: Final = struct.Struct("<4xQ")
_AESGCM_NONCE: Final = struct.Struct(">4xQ")
_ZEROS_32: Final = bytes(32)
_NO_ENCRYPTION: Final = NoEncryption()

Buffer: TypeAlias = bytes | bytearray | memoryview
_Aead: TypeAlias = ChaCha20Poly1305 | AESGCM

_CIPHERS: Final[dict[str, tuple[Callable[[bytes], _Aead], Callable[[int], bytes]]]] = {
    "ChaChaPoly": (ChaCha20Poly1305, _CHACHA_NONCE.pack),
    "AESGCM": (AESGCM, _AESGCM_NONCE.pack),
}
_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "SHA256": hashes.SHA256,
    "BLAKE2s": lambda: hashes.BLAKE2s(_HASH_LEN),
}


def _nbytes(data: Buffer) -> int:
    # len() of a memoryview counts items, not bytes.
    return data.nbytes if isinstance(data, memoryview) else len(data)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair. ``repr`` never shows the private half."""

    private: bytes = field(repr=False)
    public: bytes
    # The private key as an object, made once: making it from bytes computes the public key
    # again (a scalar multiplication, as dear as the Diffie-Hellman it is made for).
    _key: X25519PrivateKey | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls._from_key(X25519PrivateKey.generate())

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DH_LEN:
            raise LocalProtocolError(f"X25519 private key must be {DH_LEN} bytes")
        return cls._from_key(X25519PrivateKey.from_private_bytes(bytes(private)))

    @classmethod
    def _from_key(cls, key: X25519PrivateKey) -> KeyPair:
        pair = cls(
            private=key.private_bytes(Encoding.Raw, PrivateFormat.Raw, _NO_ENCRYPTION),
            public=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )
        object.__setattr__(pair, "_key", key)
        return pair

    def key(self) -> X25519PrivateKey:
        if self._key is None:
            object.__setattr__(self, "_key", X25519PrivateKey.from_private_bytes(self.private))
        assert self._key is not None
        return self._key


def _dh(local: KeyPair, remote_public: bytes) -> bytes:
    """X25519, refusing low-order remote points (an all-zero shared secret)."""
    try:
        return local.key().exchange(X25519PublicKey.from_public_bytes(remote_public))
    except ValueError:
        # The only remote-controlled failure: a low-order point gives no shared secret.
        raise RemoteProtocolError(
            "peer sent a low-order X25519 public key", code=ErrorCode.AUTHENTICATION_FAILED
        ) from None


# ------------------------------------------------------------------ CipherState


class CipherState:
    """One AEAD key ``k`` and its nonce ``n`` (section 5.1).

    Without a key, encryption is the identity (as during the first handshake
    messages). A state made by :meth:`HandshakeState.split` for the direction a
    one-way pattern never uses refuses to do anything.
    """

    __slots__ = ("_aead", "_cipher", "_disabled", "_key", "_n", "_pack")

    def __init__(self, key: bytes | None = None, cipher: str = "ChaChaPoly") -> None:
        try:
            factory, pack = _CIPHERS[cipher]
        except KeyError:
            raise LocalProtocolError(f"unsupported cipher {cipher!r}") from None
        if key is not None and len(key) != _KEY_LEN:
            raise LocalProtocolError(f"cipher key must be {_KEY_LEN} bytes")
        self._cipher = cipher
        self._pack = pack
        self._key = bytes(key) if key is not None else None
        # Built once per key: constructing the AEAD object is the expensive part.
        self._aead: _Aead | None = factory(self._key) if self._key is not None else None
        self._n = 0
        self._disabled = False

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def n(self) -> int:
        """The nonce the next message will use."""
        return self._n

    def set_nonce(self, n: int) -> None:
        if not 0 <= n <= _MAX_NONCE:
            raise LocalProtocolError("nonce out of range")
        self._n = n

    def encrypt_with_ad(self, ad: Buffer, plaintext: Buffer) -> bytes:
        """Encrypt and advance the nonce; :class:`LocalProtocolError` once nonces run out."""
        aead = self._aead
        if aead is None:
            self._check_enabled()
            return bytes(plaintext)
        n = self._n
        if n == _MAX_NONCE:
            raise LocalProtocolError("nonces exhausted; the session must be rekeyed or replaced")
        ciphertext = aead.encrypt(self._pack(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: Buffer, ciphertext: Buffer) -> bytes:
        """Decrypt and advance the nonce; the nonce stays put if authentication fails."""
        aead = self._aead
        if aead is None:
            self._check_enabled()
            return bytes(ciphertext)
        n = self._n
        if n == _MAX_NONCE:
            # The peer could not have encrypted this legitimately: nonce 2**64-1 is reserved.
            raise RemoteProtocolError("peer sent past the last nonce")
        try:
            plaintext = aead.decrypt(self._pack(n), ciphertext, ad)
        except InvalidTag:
            raise RemoteProtocolError(
                "message failed authentication", code=ErrorCode.AUTHENTICATION_FAILED
            ) from None
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """Replace the key with REKEY(k) (section 4.2); the nonce is kept."""
        if self._aead is None:
            raise LocalProtocolError("cannot rekey a cipher state without a key")
        new_key = self._aead.encrypt(self._pack(_MAX_NONCE), _ZEROS_32, b"")[:_KEY_LEN]
        self._key = new_key
        self._aead = _CIPHERS[self._cipher][0](new_key)

    def _check_enabled(self) -> None:
        if self._disabled:
            raise LocalProtocolError("a one-way pattern has no transport in this direction")

    @classmethod
    def _unusable(cls, cipher: str) -> CipherState:
        state = cls(None, cipher)
        state._disabled = True
        return state


# ---------------------------------------------------------------- SymmetricState


class _SymmetricState:
    """Chaining key ``ck``, handshake hash ``h`` and the current cipher state (section 5.2)."""

    __slots__ = ("_algorithm", "_cipher", "ck", "cs", "h")

    def __init__(self, protocol_name: bytes, cipher: str, hash_name: str) -> None:
        self._algorithm = _HASHES[hash_name]
        self._cipher = cipher
        if len(protocol_name) <= _HASH_LEN:
            self.h = protocol_name.ljust(_HASH_LEN, b"\0")
        else:
            self.h = self._hash(protocol_name)
        self.ck = self.h
        self.cs = CipherState(None, cipher)

    def _hash(self, *parts: Buffer) -> bytes:
        digest = hashes.Hash(self._algorithm())
        for part in parts:
            digest.update(part)
        return digest.finalize()

    def _hmac(self, key: bytes, *parts: Buffer) -> bytes:
        mac = hmac.HMAC(key, self._algorithm())
        for part in parts:
            mac.update(part)
        return mac.finalize()

    def _hkdf(self, ikm: Buffer, outputs: int) -> list[bytes]:
        """HKDF as the specification defines it (section 4.3), 2 or 3 outputs."""
        temp_key = self._hmac(self.ck, ikm)
        out = [self._hmac(temp_key, b"\x01")]
        for i in range(2, outputs + 1):
            out.append(self._hmac(temp_key, out[-1], bytes((i,))))
        return out

    def mix_key(self, ikm: Buffer) -> None:
        self.ck, temp_k = self._hkdf(ikm, 2)
        self.cs = CipherState(temp_k[:_KEY_LEN], self._cipher)

    def mix_hash(self, data: Buffer) -> None:
        self.h = self._hash(self.h, data)

    def mix_key_and_hash(self, ikm: Buffer) -> None:
        self.ck, temp_h, temp_k = self._hkdf(ikm, 3)
        self.mix_hash(temp_h)
        self.cs = CipherState(temp_k[:_KEY_LEN], self._cipher)

    def encrypt_and_hash(self, plaintext: Buffer) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: Buffer) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = self._hkdf(b"", 2)
        return (
            CipherState(temp_k1[:_KEY_LEN], self._cipher),
            CipherState(temp_k2[:_KEY_LEN], self._cipher),
        )


# -------------------------------------------------------------------- patterns

# Every pattern as printed in the specification: pre-messages, "...", messages.
# Fundamental (7.4), one-way (7.2) and deferred (18.2) patterns.
_PATTERN_TEXT: Final[dict[str, str]] = {
    # one-way
    "N": "<- s | ... | -> e, es",
    "K": "-> s | <- s | ... | -> e, es, ss",
    "X": "<- s | ... | -> e, es, s, ss",
    # interactive, fundamental
    "NN": "-> e | <- e, ee",
    "NK": "<- s | ... | -> e, es | <- e, ee",
    "NX": "-> e | <- e, ee, s, es",
    "KN": "-> s | ... | -> e | <- e, ee, se",
    "KK": "-> s | <- s | ... | -> e, es, ss | <- e, ee, se",
    "KX": "-> s | ... | -> e | <- e, ee, se, s, es",
    "XN": "-> e | <- e, ee | -> s, se",
    "XK": "<- s | ... | -> e, es | <- e, ee | -> s, se",
    "XX": "-> e | <- e, ee, s, es | -> s, se",
    "IN": "-> e, s | <- e, ee, se",
    "IK": "<- s | ... | -> e, es, s, ss | <- e, ee, se",
    "IX": "-> e, s | <- e, ee, se, s, es",
    # interactive, deferred
    "NK1": "<- s | ... | -> e | <- e, ee, es",
    "NX1": "-> e | <- e, ee, s | -> es",
    "X1N": "-> e | <- e, ee | -> s | <- se",
    "X1K": "<- s | ... | -> e, es | <- e, ee | -> s | <- se",
    "XK1": "<- s | ... | -> e | <- e, ee, es | -> s, se",
    "X1K1": "<- s | ... | -> e | <- e, ee, es | -> s | <- se",
    "X1X": "-> e | <- e, ee, s, es | -> s | <- se",
    "XX1": "-> e | <- e, ee, s | -> es, s, se",
    "X1X1": "-> e | <- e, ee, s | -> es, s | <- se",
    "K1N": "-> s | ... | -> e | <- e, ee | -> se",
    "K1K": "-> s | <- s | ... | -> e, es | <- e, ee | -> se",
    "KK1": "-> s | <- s | ... | -> e | <- e, ee, se, es",
    "K1K1": "-> s | <- s | ... | -> e | <- e, ee, es | -> se",
    "K1X": "-> s | ... | -> e | <- e, ee, s, es | -> se",
    "KX1": "-> s | ... | -> e | <- e, ee, se, s | -> es",
    "K1X1": "-> s | ... | -> e | <- e, ee, s | -> se, es",
    "I1N": "-> e, s | <- e, ee | -> se",
    "I1K": "<- s | ... | -> e, es, s | <- e, ee | -> se",
    "IK1": "<- s | ... | -> e, s | <- e, ee, se, es",
    "I1K1": "<- s | ... | -> e, s | <- e, ee, es | -> se",
    "I1X": "-> e, s | <- e, ee, s, es | -> se",
    "IX1": "-> e, s | <- e, ee, se, s | -> es",
    "I1X1": "-> e, s | <- e, ee, s | -> se, es",
}

_MESSAGE_TOKENS: Final = frozenset({"e", "s", "ee", "es", "se", "ss", "psk"})
_PRE_MESSAGE_TOKENS: Final = frozenset({"e", "s"})


@dataclass(frozen=True)
class _Pattern:
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    # Messages alternate initiator, responder, ... (one-way: a single initiator message).
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        return len(self.messages) == 1


def _parse_pattern(text: str) -> _Pattern:
    lines = [line.strip() for line in text.split("|")]
    if "..." in lines:
        split_at = lines.index("...")
        pre, lines = lines[:split_at], lines[split_at + 1 :]
    else:
        pre = []
    pre_tokens: dict[str, tuple[str, ...]] = {"->": (), "<-": ()}
    for line in pre:
        arrow, _, rest = line.partition(" ")
        tokens = tuple(t.strip() for t in rest.split(","))
        assert arrow in pre_tokens and set(tokens) <= _PRE_MESSAGE_TOKENS, text
        pre_tokens[arrow] = tokens
    messages = []
    for i, line in enumerate(lines):
        arrow, _, rest = line.partition(" ")
        tokens = tuple(t.strip() for t in rest.split(","))
        assert arrow == ("->" if i % 2 == 0 else "<-"), text
        assert set(tokens) <= _MESSAGE_TOKENS, text
        messages.append(tokens)
    return _Pattern(pre_tokens["->"], pre_tokens["<-"], tuple(messages))


_PATTERNS: Final[dict[str, _Pattern]] = {
    name: _parse_pattern(text) for name, text in _PATTERN_TEXT.items()
}


def _apply_modifiers(pattern: _Pattern, modifiers: Sequence[str]) -> _Pattern:
    messages = [list(m) for m in pattern.messages]
    for modifier in modifiers:
        if not modifier.startswith("psk") or not modifier[3:].isdigit():
            raise LocalProtocolError(f"unsupported pattern modifier {modifier!r}")
        position = int(modifier[3:])
        if position > len(messages):
            raise LocalProtocolError(f"{modifier} is past the pattern's last message")
        if position == 0:
            messages[0].insert(0, "psk")
        else:
            messages[position - 1].append("psk")
    return _Pattern(pattern.initiator_pre, pattern.responder_pre, tuple(map(tuple, messages)))


def _parse_protocol_name(name: str) -> tuple[_Pattern, bool, str, str]:
    """(pattern with modifiers applied, psk mode, cipher, hash) or LocalProtocolError."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise LocalProtocolError(f"not a Noise protocol name: {name!r}")
    _, full_pattern, dh, cipher, hash_name = parts
    # Modifiers start at the first lowercase letter ("XXpsk3", "NNpsk0+psk2").
    cut = next((i for i, c in enumerate(full_pattern) if c.islower()), len(full_pattern))
    base, modifier_text = full_pattern[:cut], full_pattern[cut:]
    if base not in _PATTERNS:
        raise LocalProtocolError(f"unsupported handshake pattern {base!r}")
    if dh != "25519":
        raise LocalProtocolError(f"unsupported DH function {dh!r}")
    if cipher not in _CIPHERS:
        raise LocalProtocolError(f"unsupported cipher {cipher!r}")
    if hash_name not in _HASHES:
        raise LocalProtocolError(f"unsupported hash {hash_name!r}")
    modifiers = modifier_text.split("+") if modifier_text else []
    pattern = _apply_modifiers(_PATTERNS[base], modifiers)
    return pattern, bool(modifiers), cipher, hash_name


# --------------------------------------------------------------- HandshakeState


class HandshakeState:
    """One side of a Noise handshake (section 5.3).

    Call :meth:`write_message` when :attr:`my_turn` is true and
    :meth:`read_message` otherwise, until :attr:`complete`; then :meth:`split`.
    ``e`` fixes the local ephemeral key and exists for test vectors only.
    ``rs``/``re`` are the peer's keys known in advance (pre-messages); to check
    a static key the pattern transmits, compare :attr:`remote_static` after the
    handshake instead.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        pattern, psk_mode, cipher, hash_name = _parse_protocol_name(protocol_name)
        self.is_initiator = initiator
        self._pattern = pattern
        self._psk_mode = psk_mode
        self._cipher = cipher
        local_pre, remote_pre = (
            (pattern.initiator_pre, pattern.responder_pre)
            if initiator
            else (pattern.responder_pre, pattern.initiator_pre)
        )
        local_messages = pattern.messages[0 if initiator else 1 :: 2]
        local_tokens = {t for m in local_messages for t in m} | set(local_pre)

        if s is None and "s" in local_tokens:
            raise LocalProtocolError(f"{protocol_name} needs a local static key")
        if "e" in local_pre and e is None:
            raise LocalProtocolError(f"{protocol_name} needs a pre-shared local ephemeral key")
        for key, token in ((rs, "s"), (re, "e")):
            if token in remote_pre:
                if key is None:
                    raise LocalProtocolError(f"{protocol_name} needs the peer's {token} in advance")
                if len(key) != DH_LEN:
                    raise LocalProtocolError(f"the peer's {token} must be {DH_LEN} bytes")
            elif key is not None:
                # Silently overwriting it later would look like key pinning and not be.
                raise LocalProtocolError(f"{protocol_name} does not take the peer's {token}")
        psk_count = sum(m.count("psk") for m in pattern.messages)
        if len(psks) != psk_count:
            raise LocalProtocolError(f"{protocol_name} needs {psk_count} pre-shared keys")
        if any(len(psk) != _KEY_LEN for psk in psks):
            raise LocalProtocolError(f"pre-shared keys must be {_KEY_LEN} bytes")

        self._s = s
        self._e = e
        self._rs = bytes(rs) if rs is not None else None
        self._re = bytes(re) if re is not None else None
        self._psks = [bytes(psk) for psk in psks]
        self._step = 0
        self._failed = False
        self._split_done = False

        self._sym = _SymmetricState(protocol_name.encode("ascii"), cipher, hash_name)
        self._sym.mix_hash(prologue)
        for pre, is_local in (
            (pattern.initiator_pre, initiator),
            (pattern.responder_pre, not initiator),
        ):
            for token in pre:
                self._sym.mix_hash(self._pre_message_key(token, is_local))

    def _pre_message_key(self, token: str, is_local: bool) -> bytes:
        key: bytes | None
        if is_local:
            pair = self._s if token == "s" else self._e
            key = pair.public if pair is not None else None
        else:
            key = self._rs if token == "s" else self._re
        assert key is not None  # checked in __init__
        return key

    # ---- state

    @property
    def complete(self) -> bool:
        return self._step >= len(self._pattern.messages)

    @property
    def my_turn(self) -> bool:
        """True when the next handshake step is :meth:`write_message` (False once complete)."""
        if self.complete:
            return False
        return (self._step % 2 == 0) == self.is_initiator

    @property
    def handshake_hash(self) -> bytes:
        """``h`` after the last message: the session's unique id (channel binding)."""
        if not self.complete:
            raise LocalProtocolError("the handshake hash is only final once the handshake is done")
        return self._sym.h

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    def _check_step(self, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise LocalProtocolError("the handshake already failed")
        if self.complete:
            raise LocalProtocolError("the handshake is already complete")
        if self.my_turn != writing:
            raise LocalProtocolError(
                "it is the peer's turn to send" if writing else "it is our turn to send"
            )
        return self._pattern.messages[self._step]

    def _overhead(self, tokens: tuple[str, ...]) -> int:
        """Bytes a message adds to its payload, so that size is checked before any state changes."""
        keyed = self._sym.cs.has_key
        overhead = 0
        for token in tokens:
            if token == "e":
                overhead += DH_LEN
                keyed = keyed or self._psk_mode
            elif token == "s":
                overhead += DH_LEN + (TAG_LEN if keyed else 0)
            else:  # every DH token and psk mixes a key in
                keyed = True
        return overhead + (TAG_LEN if keyed else 0)

    # ---- messages

    def write_message(self, payload: Buffer = b"") -> bytes:
        """The next handshake message, carrying ``payload``."""
        tokens = self._check_step(writing=True)
        if _nbytes(payload) > MAX_MESSAGE - self._overhead(tokens):
            raise LocalProtocolError(
                "handshake payload too large for one Noise message",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        # Only a DH with a low-order key the peer sent earlier can fail from here on,
        # and it would leave h and ck half-updated.
        self._failed = True
        sym = self._sym
        out = bytearray()
        for token in tokens:
            if token == "e":
                if self._e is None:
                    self._e = KeyPair.generate()
                out += self._e.public
                sym.mix_hash(self._e.public)
                if self._psk_mode:
                    sym.mix_key(self._e.public)
            elif token == "s":
                assert self._s is not None  # checked in __init__
                out += sym.encrypt_and_hash(self._s.public)
            elif token == "psk":
                sym.mix_key_and_hash(self._psks.pop(0))
            else:
                sym.mix_key(self._dh_token(token))
        out += sym.encrypt_and_hash(payload)
        self._failed = False
        self._step += 1
        return bytes(out)

    def read_message(self, message: Buffer) -> bytes:
        """Process the peer's next handshake message and return its payload."""
        tokens = self._check_step(writing=False)
        view = memoryview(message).cast("B")
        if len(view) > MAX_MESSAGE:
            raise RemoteProtocolError(
                "handshake message longer than a Noise message may be",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        # Any failure below leaves h and ck half-updated; the handshake cannot continue.
        self._failed = True
        sym = self._sym
        pos = 0
        for token in tokens:
            if token == "e":
                re = bytes(view[pos : pos + DH_LEN])
                if len(re) != DH_LEN:
                    raise RemoteProtocolError("handshake message too short")
                pos += DH_LEN
                self._re = re
                sym.mix_hash(re)
                if self._psk_mode:
                    sym.mix_key(re)
            elif token == "s":
                size = DH_LEN + (TAG_LEN if sym.cs.has_key else 0)
                if len(view) - pos < size:
                    raise RemoteProtocolError("handshake message too short")
                self._rs = sym.decrypt_and_hash(view[pos : pos + size])
                pos += size
            elif token == "psk":
                sym.mix_key_and_hash(self._psks.pop(0))
            else:
                sym.mix_key(self._dh_token(token))
        if sym.cs.has_key and len(view) - pos < TAG_LEN:
            raise RemoteProtocolError("handshake message too short")
        payload = sym.decrypt_and_hash(view[pos:])
        self._failed = False
        self._step += 1
        return payload

    def _dh_token(self, token: str) -> bytes:
        # "es" is always the initiator's e with the responder's s, and so on;
        # which of the two is ours depends on the role.
        first, second = token[0], token[1]
        if not self.is_initiator:
            first, second = second, first
        local = self._e if first == "e" else self._s
        remote = self._re if second == "e" else self._rs
        # The pattern always sends a key before a token uses it, and __init__ checked the rest.
        assert local is not None and remote is not None
        return _dh(local, remote)

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) cipher states for the transport phase, oriented for this role."""
        if not self.complete or self._failed:
            raise LocalProtocolError("split before the handshake is complete")
        if self._split_done:
            # Two sets of identical keys would reuse nonces.
            raise LocalProtocolError("split may only be called once")
        self._split_done = True
        initiator_to_responder, responder_to_initiator = self._sym.split()
        if self._pattern.one_way:
            # One-way patterns only ever send from initiator to responder (section 7.2).
            responder_to_initiator = CipherState._unusable(self._cipher)
        if self.is_initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder


# -------------------------------------------------------------- NoiseTransport


class NoiseTransport:
    """Post-handshake transport with automatic, synchronized rekeying.

    Each direction rekeys after every :data:`REKEY_INTERVAL` messages.
    Both sides count messages per direction over an ordered, reliable stream,
    so they rekey at the same message without any signalling.
    """

    __slots__ = ("_receive", "_send")

    def __init__(self, send: CipherState, receive: CipherState) -> None:
        self._send = send
        self._receive = receive

    def encrypt(self, plaintext: Buffer) -> bytes:
        """One transport message (``len(plaintext) + TAG_LEN`` bytes)."""
        if _nbytes(plaintext) > MAX_MESSAGE - TAG_LEN:
            raise LocalProtocolError(
                "plaintext too large for one Noise message", code=ErrorCode.MESSAGE_TOO_LARGE
            )
        send = self._send
        ciphertext = send.encrypt_with_ad(b"", plaintext)
        if send._n % REKEY_INTERVAL == 0:
            send.rekey()
        return ciphertext

    def decrypt(self, ciphertext: Buffer) -> bytes:
        """The plaintext of the peer's next transport message, or RemoteProtocolError."""
        size = _nbytes(ciphertext)
        if size > MAX_MESSAGE:
            raise RemoteProtocolError(
                "transport message longer than a Noise message may be",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        if size < TAG_LEN:
            raise RemoteProtocolError("transport message shorter than its tag")
        receive = self._receive
        plaintext = receive.decrypt_with_ad(b"", ciphertext)
        if receive._n % REKEY_INTERVAL == 0:
            receive.rekey()
        return plaintext
