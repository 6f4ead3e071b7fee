"""Control messages and bulk chunks.

Control messages are frozen dataclasses registered under a numeric type id and
encoded with msgpack as ``[type_id, {field: value, ...}]``. Decoding ignores
fields it does not know (a newer peer may add some), fills missing optional
fields with their defaults, checks every value against the field's annotation
and rejects unknown type ids. Anything wrong with received bytes raises
:class:`RemoteProtocolError` and nothing else.

Bulk data (16 KiB audio chunks) is never re-encoded: it travels as raw bytes
behind :data:`BULK_HEADER` (kind, index).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError

# A control message is metadata, never audio; 1 MiB holds a large search result.
MAX_MESSAGE_SIZE = 1 << 20
# Nested containers deeper than this are not something we ever send.
MAX_DEPTH = 16

# kind (u8), index (u32): what the raw bytes after it are and where they belong.
BULK_HEADER = struct.Struct(">BI")


class BulkKind(enum.IntEnum):
    """What a bulk payload holds."""

    CHUNK = 0  # one 16 KiB chunk of an encoded file (the last may be shorter)
    OPAQUE = 1  # test and benchmark payloads


class Priority(enum.IntEnum):
    """Send priority of a message; lower value is more urgent."""

    CONTROL = 0
    PLAYING = 1
    PREFETCH = 2
    OFFLINE = 3


class Message:
    """Base of every control message. Subclasses are frozen dataclasses."""

    TYPE_ID: ClassVar[int]


M = TypeVar("M", bound=type[Message])

_REGISTRY: dict[int, type[Message]] = {}
_Validator = Callable[[Any, int], Any]
_FIELDS: dict[type[Message], tuple[tuple[str, _Validator, bool], ...]] = {}


def register(type_id: int) -> Callable[[M], M]:
    """Class decorator: register a frozen dataclass as message ``type_id``."""

    def wrap(cls: M) -> M:
        params = getattr(cls, "__dataclass_params__", None)
        if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        if type_id in _REGISTRY:
            raise TypeError(
                f"message type {type_id} already taken by {_REGISTRY[type_id].__name__}"
            )
        # Unsupported annotations fail here, at import, not in a peer's decode; a forward
        # reference (e.g. a recursive record) cannot be resolved yet and is checked on first use.
        with contextlib.suppress(NameError):
            _fields(cls)
        cls.TYPE_ID = type_id
        _REGISTRY[type_id] = cls
        return cls

    return wrap


def message_types() -> dict[int, type[Message]]:
    """A copy of the registry: type id -> class."""
    return dict(_REGISTRY)


# Each message class's field names, looked up once (dataclasses.fields is slow, and every
# request, reply and push is encoded).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def encode(msg: Message) -> bytes:
    """Encode a registered message."""
    cls = type(msg)
    if _REGISTRY.get(getattr(cls, "TYPE_ID", -1)) is not cls:
        raise LocalProtocolError(f"{cls.__name__} is not a registered message")
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(msg))  # type: ignore[arg-type]
    body = {name: _to_wire(getattr(msg, name)) for name in names}
    data: bytes = msgpack.packb([cls.TYPE_ID, body], use_bin_type=True)
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(
            f"{cls.__name__} encodes to {len(data)} bytes (limit {MAX_MESSAGE_SIZE})"
        )
    return data


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message; raises RemoteProtocolError on anything malformed."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except RemoteProtocolError:
        raise
    except Exception as exc:  # msgpack raises several types (ValueError, StackError, ...)
        raise RemoteProtocolError(f"message is not valid msgpack: {exc}") from None
    if not (isinstance(obj, list) and len(obj) == 2):
        raise RemoteProtocolError("message must be a [type, body] pair")
    type_id, body = obj
    if type(type_id) is not int:
        raise RemoteProtocolError("message type must be an integer")
    cls = _REGISTRY.get(type_id)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {type_id}")
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"{cls.__name__}: body must be a map")
    msg: Message = _build(cls, body, 0)
    return msg


def pack_bulk_header(kind: int, index: int) -> bytes:
    return BULK_HEADER.pack(kind, index)


def unpack_bulk_header(data: bytes | memoryview) -> tuple[int, int]:
    if len(data) < BULK_HEADER.size:
        raise RemoteProtocolError(f"bulk message shorter than its {BULK_HEADER.size}-byte header")
    kind, index = BULK_HEADER.unpack_from(data)
    return kind, index


# --- encoding helpers -------------------------------------------------------------------------


def _refuse_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed")


def _to_wire(value: Any) -> Any:
    if isinstance(value, Message):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def _fields(cls: type[Any]) -> tuple[tuple[str, _Validator, bool], ...]:
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((f.name, _validator(hints[f.name], f"{cls.__name__}.{f.name}"), required))
        cached = tuple(out)
        _FIELDS[cls] = cached
    return cached


def _build(cls: type[Any], body: dict[str, Any], depth: int) -> Any:
    kwargs = {}
    for name, check, required in _fields(cls):
        if name in body:
            kwargs[name] = check(body[name], depth + 1)
        elif required:
            raise RemoteProtocolError(f"{cls.__name__}: missing field {name!r}")
    return cls(**kwargs)


def _validator(tp: Any, where: str) -> _Validator:
    """Build a function that checks (and converts) a decoded value against annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(what: str) -> typing.NoReturn:
        raise RemoteProtocolError(f"{where}: {what}")

    def depth_guard(depth: int) -> None:
        if depth > MAX_DEPTH:
            fail("nested too deeply")

    if tp is Any:
        return lambda v, d: v
    if tp in (int, str, bytes, bool):

        def check_scalar(v: Any, d: int) -> Any:
            if type(v) is not tp:
                fail(f"expected {tp.__name__}, got {type(v).__name__}")
            return v

        return check_scalar
    if tp is float:

        def check_float(v: Any, d: int) -> Any:
            if type(v) not in (float, int):
                fail(f"expected float, got {type(v).__name__}")
            return float(v)

        return check_float
    if tp is type(None):

        def check_none(v: Any, d: int) -> Any:
            if v is not None:
                fail("expected nil")
            return None

        return check_none
    if origin in (typing.Union, types.UnionType):
        options = [_validator(a, where) for a in args]
        none_ok = type(None) in args

        def check_union(v: Any, d: int) -> Any:
            if v is None:
                if none_ok:
                    return None
                fail("unexpected nil")
            for opt in options:
                try:
                    return opt(v, d)
                except RemoteProtocolError:
                    continue
            fail(f"value of type {type(v).__name__} matches no option")

        return check_union
    if isinstance(tp, type) and issubclass(tp, enum.Enum):

        def check_enum(v: Any, d: int) -> Any:
            try:
                return tp(v)
            except (ValueError, TypeError):
                fail(f"{v!r} is not a valid {tp.__name__}")

        return check_enum
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):

        def check_record(v: Any, d: int) -> Any:
            depth_guard(d)
            if not isinstance(v, dict):
                fail(f"expected a map for {tp.__name__}")
            return _build(tp, v, d)

        return check_record
    if origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        item = _validator(args[0], where + "[]")
        container = tuple if origin is tuple else list

        def check_seq(v: Any, d: int) -> Any:
            depth_guard(d)
            if not isinstance(v, list):
                fail(f"expected an array, got {type(v).__name__}")
            return container(item(x, d + 1) for x in v)

        return check_seq
    if origin is tuple:
        items = [_validator(a, f"{where}[{i}]") for i, a in enumerate(args)]

        def check_tuple(v: Any, d: int) -> Any:
            depth_guard(d)
            if not isinstance(v, list) or len(v) != len(items):
                fail(f"expected an array of {len(items)}")
            return tuple(check(x, d + 1) for check, x in zip(items, v, strict=True))

        return check_tuple
    if origin is dict:
        if args[0] not in (str, bytes):
            # Decoding uses strict_map_key (no hash-flooding with exotic keys): such a map
            # would encode but never decode.
            raise TypeError(f"{where}: map keys must be str or bytes, not {args[0]!r}")
        key = _validator(args[0], where + "{key}")
        val = _validator(args[1], where + "{}")

        def check_map(v: Any, d: int) -> Any:
            depth_guard(d)
            if not isinstance(v, dict):
                fail(f"expected a map, got {type(v).__name__}")
            return {key(k, d + 1): val(x, d + 1) for k, x in v.items()}

        return check_map
    raise TypeError(f"{where}: annotation {tp!r} is not supported in messages")


# --- messages every connection understands -----------------------------------------------------


@register(1)
@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A request failed; ``code`` is machine-readable, ``message`` is for people."""

    code: str
    message: str = ""


@register(2)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Handshake payload: who we are and what we speak (carried inside the Noise handshake)."""

    agent: str
    protocol: int = 1
    certificate: bytes | None = None
    features: tuple[str, ...] = ()


@register(3)
@dataclass(frozen=True, slots=True)
class Echo(Message):
    """Asks the peer to send the same payload back (diagnostics, tests, benchmarks)."""

    payload: bytes = b""
