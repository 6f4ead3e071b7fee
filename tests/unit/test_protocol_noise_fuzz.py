"""Hostile input and misuse of the Noise layer.

The rule for received bytes, as everywhere in the protocol package: they are
accepted or they raise ``RemoteProtocolError``, never anything else. Misuse of
the API raises ``LocalProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.protocol.errors import LocalProtocolError, RemoteProtocolError
from cadenza.protocol.noise import (
    DH_LEN,
    MAX_MESSAGE,
    REKEY_INTERVAL,
    TAG_LEN,
    CipherState,
    HandshakeState,
    KeyPair,
    NoiseTransport,
)

XX = "Noise_XX_25519_ChaChaPoly_SHA256"
IK = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
NN_PSK = "Noise_NNpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE = b"fuzz"
PSK = bytes(range(32))
I_STATIC = KeyPair.from_private(bytes([1]) * 32)
R_STATIC = KeyPair.from_private(bytes([2]) * 32)
# X25519 public keys whose shared secret with anyone is all zeros.
LOW_ORDER_POINT = bytes(32)

# Per pattern: (handshake message count, the messages whose every byte is authenticated).
# XX's first message is an ephemeral key and a cleartext payload: nothing to authenticate yet.
PATTERNS = {XX: (3, {1, 2}), IK: (2, {0, 1}), NN_PSK: (2, {0, 1})}

FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def make_pair(name: str, *, rs: bytes | None = None) -> tuple[HandshakeState, HandshakeState]:
    needs_rs = "_IK_" in name
    psks = [PSK] if "psk" in name else []
    initiator = HandshakeState(
        name,
        initiator=True,
        prologue=PROLOGUE,
        s=I_STATIC if "NN" not in name else None,
        rs=(rs or R_STATIC.public) if needs_rs else None,
        psks=psks,
    )
    responder = HandshakeState(
        name,
        initiator=False,
        prologue=PROLOGUE,
        s=R_STATIC if "NN" not in name else None,
        psks=psks,
    )
    return initiator, responder


def run_to_step(name: str, step: int) -> tuple[HandshakeState, HandshakeState, bytes]:
    """(sender, receiver, the valid message of ``step``, not yet read by the receiver)."""
    sender, receiver = make_pair(name)
    for _ in range(step):
        receiver.read_message(sender.write_message(b"earlier"))
        sender, receiver = receiver, sender
    return sender, receiver, sender.write_message(b"payload at this step")


def handshake(name: str = XX) -> tuple[NoiseTransport, NoiseTransport]:
    sender, receiver = make_pair(name)
    initiator = sender
    while not sender.complete:
        receiver.read_message(sender.write_message())
        sender, receiver = receiver, sender
    responder = receiver if receiver is not initiator else sender
    return NoiseTransport(*initiator.split()), NoiseTransport(*responder.split())


def cipher_pair() -> tuple[CipherState, CipherState]:
    key = bytes(range(100, 132))
    return CipherState(key), CipherState(key)


@st.composite
def mutations(draw: st.DrawFn, message: bytes) -> bytes:
    """A bit flip, a truncation or an extension of ``message``: never ``message`` itself."""
    kind = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        position = draw(st.integers(0, len(message) - 1))
        bit = draw(st.integers(0, 7))
        mutated = bytearray(message)
        mutated[position] ^= 1 << bit
        return bytes(mutated)
    if kind == "truncate":
        return message[: draw(st.integers(0, len(message) - 1))]
    return message + draw(st.binary(min_size=1, max_size=64))


def read_or_remote_error(read: Callable[[bytes], bytes], data: bytes) -> bool:
    """True if ``data`` was accepted; fails the test on any exception but RemoteProtocolError."""
    try:
        read(data)
    except RemoteProtocolError:
        return False
    return True


# ------------------------------------------------------------- handshake fuzzing

handshake_steps = st.sampled_from(
    [(name, step) for name, (count, _) in PATTERNS.items() for step in range(count)]
)


@FUZZ_SETTINGS
@given(where=handshake_steps, data=st.binary(max_size=300))
def test_arbitrary_handshake_bytes(where: tuple[str, int], data: bytes) -> None:
    name, step = where
    _, receiver, _ = run_to_step(name, step)
    read_or_remote_error(receiver.read_message, data)


@FUZZ_SETTINGS
@given(where=handshake_steps, data=st.data())
def test_mutated_handshake_message(where: tuple[str, int], data: st.DataObject) -> None:
    name, step = where
    _, receiver, message = run_to_step(name, step)
    mutated = data.draw(mutations(message))
    accepted = read_or_remote_error(receiver.read_message, mutated)
    if step in PATTERNS[name][1]:
        assert not accepted, "a mutated authenticated handshake message was accepted"
    if not accepted:
        # A failed handshake stays failed: it must not be retried with other bytes.
        with pytest.raises(LocalProtocolError):
            receiver.read_message(message)


def test_valid_handshake_accepts_all_buffer_types() -> None:
    sender, receiver = make_pair(XX)
    for buffer_type in (bytes, bytearray, memoryview):
        assert receiver.read_message(buffer_type(sender.write_message(b"p"))) == b"p"
        sender, receiver = receiver, sender
    assert sender.complete and receiver.complete


# ------------------------------------------------------------- transport fuzzing


@FUZZ_SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_transport_bytes(data: bytes) -> None:
    _, responder = handshake()
    with pytest.raises(RemoteProtocolError):
        responder.decrypt(data)


@FUZZ_SETTINGS
@given(data=st.data(), plaintext=st.binary(max_size=100))
def test_mutated_transport_message(data: st.DataObject, plaintext: bytes) -> None:
    initiator, responder = handshake()
    message = initiator.encrypt(plaintext)
    with pytest.raises(RemoteProtocolError):
        responder.decrypt(data.draw(mutations(message)))
    # A rejected message does not use up the nonce: the genuine one still decrypts.
    assert responder.decrypt(message) == plaintext


def test_transport_both_ways_with_buffer_types() -> None:
    initiator, responder = handshake()
    for buffer_type in (bytes, bytearray, memoryview):
        assert responder.decrypt(buffer_type(initiator.encrypt(buffer_type(b"ab")))) == b"ab"
        assert initiator.decrypt(buffer_type(responder.encrypt(buffer_type(b"cd")))) == b"cd"


def test_replayed_transport_message_is_rejected() -> None:
    initiator, responder = handshake()
    message = initiator.encrypt(b"once")
    assert responder.decrypt(message) == b"once"
    with pytest.raises(RemoteProtocolError):
        responder.decrypt(message)


# ----------------------------------------------------------------- wrong keys


def test_ik_with_wrong_responder_static_fails_at_responder() -> None:
    initiator, responder = make_pair(IK, rs=KeyPair.generate().public)
    message = initiator.write_message(b"hello")
    with pytest.raises(RemoteProtocolError):
        responder.read_message(message)


def test_psk_mismatch_fails() -> None:
    initiator = HandshakeState(NN_PSK, initiator=True, psks=[PSK])
    responder = HandshakeState(NN_PSK, initiator=False, psks=[bytes(32)])
    with pytest.raises(RemoteProtocolError):
        responder.read_message(initiator.write_message(b"hello"))


def test_prologue_mismatch_fails() -> None:
    initiator = HandshakeState(XX, initiator=True, prologue=b"a", s=I_STATIC)
    responder = HandshakeState(XX, initiator=False, prologue=b"b", s=R_STATIC)
    responder.read_message(initiator.write_message())
    with pytest.raises(RemoteProtocolError):
        initiator.read_message(responder.write_message())


def test_low_order_ephemeral_is_refused() -> None:
    # IK: the responder's first DH uses the received ephemeral while reading.
    _, responder = make_pair(IK)
    with pytest.raises(RemoteProtocolError):
        responder.read_message(LOW_ORDER_POINT + bytes(200))
    # XX: the first message has no DH, so the refusal comes when the responder answers.
    _, responder = make_pair(XX)
    responder.read_message(LOW_ORDER_POINT)
    with pytest.raises(RemoteProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        responder.write_message()


# ------------------------------------------------------------------- nonces


def test_last_nonce_is_reserved() -> None:
    send, receive = cipher_pair()
    send.set_nonce(2**64 - 2)
    receive.set_nonce(2**64 - 2)
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"last")) == b"last"
    assert send.n == 2**64 - 1
    with pytest.raises(LocalProtocolError):
        send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", bytes(TAG_LEN + 3))
    with pytest.raises(LocalProtocolError):
        send.set_nonce(2**64)


def test_nonce_is_little_endian_counter() -> None:
    send, receive = cipher_pair()
    send.set_nonce(1)
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"x"))
    receive.set_nonce(1)
    send.set_nonce(1)
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"x")) == b"x"


# -------------------------------------------------------------------- rekey


def test_rekey_on_both_sides_interoperates() -> None:
    send, receive = cipher_pair()
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"before")) == b"before"
    send.rekey()
    receive.rekey()
    assert send.n == receive.n == 1  # rekey keeps the nonce
    assert receive.decrypt_with_ad(b"ad", send.encrypt_with_ad(b"ad", b"after")) == b"after"


def test_rekey_on_one_side_breaks_decryption() -> None:
    send, receive = cipher_pair()
    send.rekey()
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"after"))


def test_transport_rekeys_both_directions_at_the_interval() -> None:
    key_ab, key_ba = bytes(range(32)), bytes(range(32, 64))
    a_send, a_receive = CipherState(key_ab), CipherState(key_ba)
    b_send, b_receive = CipherState(key_ba), CipherState(key_ab)
    # Start just short of the interval on all four cipher states.
    for cipher in (a_send, a_receive, b_send, b_receive):
        cipher.set_nonce(REKEY_INTERVAL - 2)
    a, b = NoiseTransport(a_send, a_receive), NoiseTransport(b_send, b_receive)
    old_key, new_key = CipherState(key_ab), CipherState(key_ab)
    new_key.rekey()
    old_key.set_nonce(REKEY_INTERVAL)
    new_key.set_nonce(REKEY_INTERVAL)

    for i in range(5):
        for sender, receiver in ((a, b), (b, a)):
            payload = f"message {i}".encode()
            message = sender.encrypt(payload)
            assert receiver.decrypt(message) == payload
            if i == 2 and sender is a:
                # The first message at nonce REKEY_INTERVAL is under the new key.
                assert message != old_key.encrypt_with_ad(b"", payload)
                assert message == new_key.encrypt_with_ad(b"", payload)
    assert a_send.n == b_receive.n == REKEY_INTERVAL + 3


def test_rekey_without_key_is_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        CipherState().rekey()


# ------------------------------------------------------------------- sizes


def test_transport_message_size_limit() -> None:
    initiator, responder = handshake()
    largest = initiator.encrypt(bytes(MAX_MESSAGE - TAG_LEN))
    assert len(largest) == MAX_MESSAGE
    assert responder.decrypt(largest) == bytes(MAX_MESSAGE - TAG_LEN)
    with pytest.raises(LocalProtocolError):
        initiator.encrypt(bytes(MAX_MESSAGE - TAG_LEN + 1))
    with pytest.raises(RemoteProtocolError):
        responder.decrypt(bytes(MAX_MESSAGE + 1))
    # Neither refusal consumed a nonce.
    assert responder.decrypt(initiator.encrypt(b"next")) == b"next"


def test_handshake_message_size_limit() -> None:
    initiator, responder = make_pair(XX)
    # XX message 1 is e (32 bytes) plus a cleartext payload.
    with pytest.raises(LocalProtocolError):
        initiator.write_message(bytes(MAX_MESSAGE - DH_LEN + 1))
    message = initiator.write_message(bytes(MAX_MESSAGE - DH_LEN))  # state was untouched
    assert len(message) == MAX_MESSAGE
    with pytest.raises(RemoteProtocolError):
        responder.read_message(message + b"\0")
    # Message 2 is e, encrypted s, encrypted payload.
    _, responder = make_pair(XX)
    responder.read_message(message)
    with pytest.raises(LocalProtocolError):
        responder.write_message(bytes(MAX_MESSAGE - 2 * DH_LEN - 2 * TAG_LEN + 1))
    assert len(responder.write_message(bytes(MAX_MESSAGE - 2 * DH_LEN - 2 * TAG_LEN))) == (
        MAX_MESSAGE
    )


# ------------------------------------------------------------------ misuse


def test_turns_are_enforced() -> None:
    initiator, responder = make_pair(XX)
    assert initiator.my_turn and not responder.my_turn
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        initiator.read_message(b"")
    responder.read_message(initiator.write_message())
    with pytest.raises(LocalProtocolError):
        initiator.write_message()
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    assert initiator.complete and responder.complete
    assert not initiator.my_turn and not responder.my_turn
    with pytest.raises(LocalProtocolError):
        initiator.write_message()
    with pytest.raises(LocalProtocolError):
        responder.read_message(b"")


def test_split_only_once_and_only_when_complete() -> None:
    initiator, responder = make_pair(XX)
    with pytest.raises(LocalProtocolError):
        initiator.split()
    with pytest.raises(LocalProtocolError):
        _ = initiator.handshake_hash
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    i_send, i_receive = initiator.split()
    r_send, r_receive = responder.split()
    assert r_receive.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"i->r")) == b"i->r"
    assert i_receive.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"r->i")) == b"r->i"
    with pytest.raises(LocalProtocolError):
        initiator.split()


def test_one_way_pattern_has_no_return_direction() -> None:
    name = "Noise_N_25519_ChaChaPoly_SHA256"
    initiator = HandshakeState(name, initiator=True, rs=R_STATIC.public)
    responder = HandshakeState(name, initiator=False, s=R_STATIC)
    assert responder.read_message(initiator.write_message(b"hi")) == b"hi"
    assert initiator.complete and responder.complete
    i_send, i_receive = initiator.split()
    r_send, r_receive = responder.split()
    assert r_receive.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"x")) == b"x"
    for unusable in (i_receive, r_send):
        # Never a silent cleartext pass-through.
        with pytest.raises(LocalProtocolError):
            unusable.encrypt_with_ad(b"", b"x")
        with pytest.raises(LocalProtocolError):
            unusable.decrypt_with_ad(b"", b"x")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Noise_XX_448_ChaChaPoly_SHA256", {"s": I_STATIC}),
        ("Noise_XX_25519_ChaChaPoly_SHA512", {"s": I_STATIC}),
        ("Noise_XX_25519_Twofish_SHA256", {"s": I_STATIC}),
        ("Noise_ZZ_25519_ChaChaPoly_SHA256", {"s": I_STATIC}),
        ("Noise_XXfallback_25519_ChaChaPoly_SHA256", {"s": I_STATIC}),
        ("Noise_NNpsk3_25519_ChaChaPoly_SHA256", {"psks": [PSK]}),
        ("Noise_XX_25519_ChaChaPoly", {"s": I_STATIC}),
        ("Noise_XX_25519_ChaChaPoly_SHA256", {}),  # XX sends s
        ("Noise_IK_25519_ChaChaPoly_SHA256", {"s": I_STATIC}),  # IK needs rs in advance
        ("Noise_IK_25519_ChaChaPoly_SHA256", {"s": I_STATIC, "rs": b"short"}),
        ("Noise_XX_25519_ChaChaPoly_SHA256", {"s": I_STATIC, "rs": R_STATIC.public}),
        ("Noise_NNpsk0_25519_ChaChaPoly_SHA256", {}),  # psk missing
        ("Noise_NNpsk0_25519_ChaChaPoly_SHA256", {"psks": [b"short"]}),
        ("Noise_NN_25519_ChaChaPoly_SHA256", {"psks": [PSK]}),
    ],
)
def test_bad_configuration_is_local_error(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        HandshakeState(name, initiator=True, **kwargs)  # type: ignore[arg-type]


def test_key_pair_repr_hides_private_key() -> None:
    pair = KeyPair.generate()
    assert pair.private.hex() not in repr(pair)
    assert KeyPair.from_private(pair.private) == pair
    with pytest.raises(LocalProtocolError):
        KeyPair.from_private(b"short")
