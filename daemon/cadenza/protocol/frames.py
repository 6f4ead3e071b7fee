"""Frames: the units multiplexed inside Noise transport messages.

On the wire every Noise message (handshake or transport) is preceded by its
length as a big-endian u16. The plaintext of a transport message is one or
more frames back to back::

    type u8 | flags u8 | channel u32 | length u16 | payload[length]

DATA frames carry fragments of a message on a channel; the others manage
channels (WINDOW_UPDATE, RESET) and the connection (PING, GOAWAY).
"""

from __future__ import annotations

import enum
import struct

from .errors import ErrorCode, RemoteProtocolError

FRAME_HEADER = struct.Struct(">BBIH")
LENGTH_PREFIX = struct.Struct(">H")
U32 = struct.Struct(">I")
# Noise's own bound on a message (ciphertext + 16-byte tag).
MAX_NOISE_MESSAGE = 65535
MAX_PLAINTEXT = MAX_NOISE_MESSAGE - 16
# A 16 KiB audio chunk plus its bulk header travels as a single frame.
MAX_FRAME_PAYLOAD = 16 * 1024 + 64
# Reasons in RESET and GOAWAY are for logs, not essays.
MAX_REASON = 256
# Channel ids are u32; 0 addresses the connection itself.
MAX_CHANNEL_ID = 0xFFFFFFFF
# Sent in clear before the first handshake message: magic, version, pattern.
PREAMBLE = struct.Struct(">3sBB")
MAGIC = b"CDZ"
VERSION = 1


class FrameType(enum.IntEnum):
    DATA = 0
    WINDOW_UPDATE = 1
    RESET = 2
    PING = 3
    GOAWAY = 4


class Pattern(enum.IntEnum):
    """Noise handshake pattern announced in the preamble."""

    XX = 1
    IK = 2


# DATA flags
END_MESSAGE = 0x01
END_CHANNEL = 0x02
BULK = 0x04
PRIORITY_SHIFT = 4
PRIORITY_MASK = 0x30
KNOWN_DATA_FLAGS = END_MESSAGE | END_CHANNEL | BULK | PRIORITY_MASK
# PING flags
ACK = 0x01


def data_flags(priority: int, *, bulk: bool, end_message: bool, end_channel: bool) -> int:
    return (
        (priority << PRIORITY_SHIFT)
        | (BULK if bulk else 0)
        | (END_MESSAGE if end_message else 0)
        | (END_CHANNEL if end_channel else 0)
    )


def encode_frame(ftype: int, flags: int, channel: int, payload: bytes = b"") -> bytes:
    return FRAME_HEADER.pack(ftype, flags, channel, len(payload)) + payload


def window_update(channel: int, increment: int) -> bytes:
    return encode_frame(FrameType.WINDOW_UPDATE, 0, channel, U32.pack(increment))


def reset(channel: int, code: ErrorCode, reason: str = "") -> bytes:
    text = reason.encode("utf-8", "replace")[:MAX_REASON]
    return encode_frame(FrameType.RESET, 0, channel, bytes([code]) + text)


def ping(payload: bytes, *, ack: bool = False) -> bytes:
    return encode_frame(FrameType.PING, ACK if ack else 0, 0, payload)


def goaway(last_channel: int, code: ErrorCode, reason: str = "") -> bytes:
    text = reason.encode("utf-8", "replace")[:MAX_REASON]
    return encode_frame(FrameType.GOAWAY, 0, 0, U32.pack(last_channel) + bytes([code]) + text)


def parse_code(raw: int) -> ErrorCode:
    try:
        return ErrorCode(raw)
    except ValueError:
        # Codes from a newer peer: treat as a generic protocol error rather than failing.
        return ErrorCode.PROTOCOL_ERROR


def parse_reason(data: bytes | memoryview) -> str:
    if len(data) > MAX_REASON:
        raise RemoteProtocolError(f"reason text of {len(data)} bytes exceeds {MAX_REASON}")
    return bytes(data).decode("utf-8", "replace")
