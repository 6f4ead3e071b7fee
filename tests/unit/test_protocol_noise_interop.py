"""Interoperability with the independent ``noiseprotocol`` package.

Each case runs a full handshake between our implementation and theirs, in both
roles, with a prologue and non-empty payloads, then transport messages both
ways (including an empty one, a ~60 KB one and a rekey on both sides).
"""

from __future__ import annotations

import os
from typing import Protocol

import pytest

from cadenza.protocol.noise import (
    MAX_MESSAGE,
    TAG_LEN,
    CipherState,
    HandshakeState,
    KeyPair,
    NoiseTransport,
)

noise_connection = pytest.importorskip("noise.connection", reason="noiseprotocol is not installed")
NoiseConnection = noise_connection.NoiseConnection
Keypair = noise_connection.Keypair

PROLOGUE = b"cadenza interop prologue"
PROTOCOLS = [
    "Noise_XX_25519_ChaChaPoly_SHA256",
    "Noise_IK_25519_ChaChaPoly_SHA256",
    # Not in the cacophony vector file, so this is their only outside check.
    "Noise_XX_25519_AESGCM_SHA256",
    "Noise_IK_25519_ChaChaPoly_BLAKE2s",
]
TRANSPORT_PAYLOADS = [
    b"hello",
    b"",
    os.urandom(60 * 1024),
    os.urandom(MAX_MESSAGE - TAG_LEN),
    b"after the big one",
]


class Side(Protocol):
    """What the handshake driver needs from either implementation."""

    def write(self, payload: bytes) -> bytes: ...
    def read(self, message: bytes) -> bytes: ...
    def encrypt(self, plaintext: bytes) -> bytes: ...
    def decrypt(self, ciphertext: bytes) -> bytes: ...
    def rekey(self) -> None: ...
    @property
    def complete(self) -> bool: ...
    @property
    def handshake_hash(self) -> bytes: ...
    @property
    def remote_static(self) -> bytes: ...


class Ours:
    def __init__(self, name: str, *, initiator: bool, s: KeyPair, rs: bytes | None) -> None:
        self.hs = HandshakeState(name, initiator=initiator, prologue=PROLOGUE, s=s, rs=rs)
        self.ciphers: tuple[CipherState, CipherState] | None = None
        self.transport: NoiseTransport | None = None

    def write(self, payload: bytes) -> bytes:
        assert self.hs.my_turn
        message = self.hs.write_message(payload)
        self._split_when_complete()
        return message

    def read(self, message: bytes) -> bytes:
        assert not self.hs.my_turn
        payload = self.hs.read_message(message)
        self._split_when_complete()
        return payload

    def _split_when_complete(self) -> None:
        if self.hs.complete:
            self.ciphers = self.hs.split()
            self.transport = NoiseTransport(*self.ciphers)

    def encrypt(self, plaintext: bytes) -> bytes:
        assert self.transport is not None
        return self.transport.encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        assert self.transport is not None
        return self.transport.decrypt(ciphertext)

    def rekey(self) -> None:
        assert self.ciphers is not None
        for cipher in self.ciphers:
            cipher.rekey()

    @property
    def complete(self) -> bool:
        return self.hs.complete

    @property
    def handshake_hash(self) -> bytes:
        return self.hs.handshake_hash

    @property
    def remote_static(self) -> bytes:
        assert self.hs.remote_static is not None
        return self.hs.remote_static


class Theirs:
    def __init__(self, name: str, *, initiator: bool, s: KeyPair, rs: bytes | None) -> None:
        self.conn = NoiseConnection.from_name(name.encode())
        if initiator:
            self.conn.set_as_initiator()
        else:
            self.conn.set_as_responder()
        self.conn.set_prologue(PROLOGUE)
        self.conn.set_keypair_from_private_bytes(Keypair.STATIC, s.private)
        if rs is not None:
            self.conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, rs)
        self.conn.start_handshake()
        # noiseprotocol deletes its handshake state (and the peer's static key with
        # it) as the last message is processed; catch the key on the way out.
        self._remote_static: bytes | None = None
        protocol = self.conn.noise_protocol
        handshake_done = protocol.handshake_done

        def capture_then_done() -> None:
            self._remote_static = bytes(protocol.handshake_state.rs.public_bytes)
            handshake_done()

        protocol.handshake_done = capture_then_done

    def write(self, payload: bytes) -> bytes:
        return bytes(self.conn.write_message(payload))

    def read(self, message: bytes) -> bytes:
        return bytes(self.conn.read_message(message))

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(self.conn.encrypt(plaintext))

    def decrypt(self, ciphertext: bytes) -> bytes:
        return bytes(self.conn.decrypt(ciphertext))

    def rekey(self) -> None:
        self.conn.rekey_outbound_cipher()
        self.conn.rekey_inbound_cipher()

    @property
    def complete(self) -> bool:
        return bool(self.conn.handshake_finished)

    @property
    def handshake_hash(self) -> bytes:
        return bytes(self.conn.get_handshake_hash())

    @property
    def remote_static(self) -> bytes:
        assert self._remote_static is not None
        return self._remote_static


def _exchange(sender: Side, receiver: Side, payload: bytes) -> None:
    message = sender.encrypt(payload)
    assert len(message) == len(payload) + TAG_LEN
    assert receiver.decrypt(message) == payload


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours-initiator", "ours-responder"])
@pytest.mark.parametrize("name", PROTOCOLS)
def test_handshake_and_transport(name: str, ours_initiates: bool) -> None:
    i_static, r_static = KeyPair.generate(), KeyPair.generate()
    # IK: the initiator knows the responder's static key in advance.
    i_rs = r_static.public if "_IK_" in name else None
    initiator_cls, responder_cls = (Ours, Theirs) if ours_initiates else (Theirs, Ours)
    initiator: Side = initiator_cls(name, initiator=True, s=i_static, rs=i_rs)
    responder: Side = responder_cls(name, initiator=False, s=r_static, rs=None)

    sender, receiver = initiator, responder
    step = 0
    while not (initiator.complete and responder.complete):
        payload = f"handshake payload {step}".encode() * (step + 1)
        assert receiver.read(sender.write(payload)) == payload
        sender, receiver = receiver, sender
        step += 1
    assert step == (3 if "_XX_" in name else 2)

    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == r_static.public
    assert responder.remote_static == i_static.public

    for payload in TRANSPORT_PAYLOADS:
        _exchange(initiator, responder, payload)
        _exchange(responder, initiator, payload[::-1])

    # Rekey (section 11.3) is not covered by the vector file: both sides rekey
    # both directions and must still agree.
    initiator.rekey()
    responder.rekey()
    for payload in TRANSPORT_PAYLOADS[:2]:
        _exchange(initiator, responder, payload)
        _exchange(responder, initiator, payload)
