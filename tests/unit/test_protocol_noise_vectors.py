"""Cacophony test vectors: every handshake and transport message, byte for byte.

The vectors come from an independent implementation, so a pass means our
patterns, HKDF, nonces and split match the specification, not just ourselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cadenza.protocol.noise import CipherState, HandshakeState, KeyPair

# The cacophony vectors (public domain) are kept in the repository so that every clone runs
# them; shared/ beside the checkout holds the same file.
VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "noise-vectors.json"


def _load() -> list[Any]:
    if not VECTORS_PATH.exists():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"Noise test vectors not found at {VECTORS_PATH}"),
                id="missing-vectors",
            )
        ]
    vectors = json.loads(VECTORS_PATH.read_text())["vectors"]
    return [pytest.param(v, id=f"{i:03d}-{v['protocol_name']}") for i, v in enumerate(vectors)]


def _key(vector: dict[str, Any], name: str) -> bytes | None:
    value = vector.get(name)
    return bytes.fromhex(value) if value is not None else None


def _pair(vector: dict[str, Any], name: str) -> KeyPair | None:
    private = _key(vector, name)
    return KeyPair.from_private(private) if private is not None else None


def _side(vector: dict[str, Any], prefix: str, *, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        s=_pair(vector, f"{prefix}_static"),
        e=_pair(vector, f"{prefix}_ephemeral"),
        rs=_key(vector, f"{prefix}_remote_static"),
        psks=[bytes.fromhex(p) for p in vector.get(f"{prefix}_psks", [])],
    )


@pytest.mark.parametrize("vector", _load())
def test_vector(vector: dict[str, Any]) -> None:
    initiator = _side(vector, "init", initiator=True)
    responder = _side(vector, "resp", initiator=False)
    messages = [
        (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in vector["messages"]
    ]

    # Handshake: messages alternate, initiator first.
    sender, receiver = initiator, responder
    index = 0
    while not initiator.complete:
        payload, expected = messages[index]
        assert sender.my_turn and not receiver.my_turn
        assert sender.write_message(payload) == expected, f"handshake message {index}"
        assert receiver.read_message(expected) == payload
        sender, receiver = receiver, sender
        index += 1
    assert responder.complete
    assert initiator.handshake_hash == bytes.fromhex(vector["handshake_hash"])
    assert responder.handshake_hash == initiator.handshake_hash

    # Transport: the vectors keep alternating, except that one-way patterns only
    # ever send from initiator to responder.
    handshake_length = index
    one_way = handshake_length == 1
    assert handshake_length < len(messages), "vector has no transport messages to check"
    i_send, i_receive = initiator.split()
    r_send, r_receive = responder.split()
    for index in range(handshake_length, len(messages)):
        payload, expected = messages[index]
        send: CipherState
        receive: CipherState
        if one_way or index % 2 == 0:
            send, receive = i_send, r_receive
        else:
            send, receive = r_send, i_receive
        assert send.encrypt_with_ad(b"", payload) == expected, f"transport message {index}"
        assert receive.decrypt_with_ad(b"", expected) == payload
