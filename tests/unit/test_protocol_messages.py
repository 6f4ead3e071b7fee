"""Control messages: round trips, validation, limits, and hostile bytes.

The rule for received bytes, as everywhere in the protocol package: ``decode``
returns a registered message or raises ``RemoteProtocolError``, never anything
else. Misuse on the sending side raises ``LocalProtocolError`` (or ``TypeError``
when a message class itself is malformed).

Registration is global, so the test-only messages here use type ids >= 60000.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.protocol.errors import LocalProtocolError, RemoteProtocolError
from cadenza.protocol.messages import (
    BULK_HEADER,
    MAX_DEPTH,
    MAX_MESSAGE_SIZE,
    BulkKind,
    Echo,
    ErrorReply,
    Hello,
    Message,
    decode,
    encode,
    message_types,
    pack_bulk_header,
    register,
    unpack_bulk_header,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every type id the application itself registers (test-only messages live at >= 60000).
PRODUCTION_IDS = sorted(i for i in message_types() if i < 60000)


# --- test-only messages ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Point:
    x: int
    y: float
    label: str = ""


@dataclass(frozen=True)
class Node:
    value: int
    child: Node | None = None


@register(60001)
@dataclass(frozen=True)
class AllKinds(Message):
    """One field per annotation kind that messages support."""

    count: int
    name: str
    blob: bytes
    flag: bool
    ratio: float
    nothing: None
    maybe: int | None
    either: Union[int, str]  # noqa: UP007 - typing.Union is a different origin than `|`
    legacy: Optional[bytes]  # noqa: UP045 - and so is typing.Optional
    numbers: list[int]
    names: tuple[str, ...]
    pair: tuple[int, str]
    table: dict[str, int]
    point: Point
    points: list[Point]
    color: Color
    level: Level
    anything: Any
    nested: dict[bytes, list[tuple[bool, ...]]]
    reply: ErrorReply | None
    default_int: int = 7
    default_names: tuple[str, ...] = ()
    default_list: list[int] = field(default_factory=list)


@register(60002)
@dataclass(frozen=True, slots=True)
class Chain(Message):
    """A recursive record, to nest as deep as we like."""

    root: Node | None = None


@register(60003)
@dataclass(frozen=True)
class Blob(Message):
    data: bytes = b""


@dataclass(frozen=True)
class IntKeys(Message):
    """dict keys other than str/bytes: refused at registration (they could never decode)."""

    table: dict[int, str] = field(default_factory=dict)


TEST_IDS = [AllKinds.TYPE_ID, Chain.TYPE_ID, Blob.TYPE_ID]
REQUIRED_ALLKINDS = [
    f.name
    for f in dataclasses.fields(AllKinds)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


# --- strategies --------------------------------------------------------------------------------

WIRE_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# Values msgpack round-trips unchanged (no tuples: they come back as lists).
PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | WIRE_INT | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def values_for(tp: Any, budget: int = 3) -> st.SearchStrategy[Any]:
    """Values of annotation ``tp``; ``budget`` bounds how deep containers and records go."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return PLAIN_VALUES
    if tp is int:
        return WIRE_INT
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=40)
    if tp is bool:
        return st.booleans()
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is type(None):
        return st.none()
    if origin in (Union, type(int | None)):
        if budget <= 0 and type(None) in args:
            return st.none()
        return st.one_of([values_for(a, budget) for a in args])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: values_for(hints[f.name], budget - 1) for f in dataclasses.fields(tp)}
        return st.builds(tp, **fields)
    if origin is list:
        return st.lists(values_for(args[0], budget - 1), max_size=3 if budget > 0 else 0)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(values_for(args[0], budget - 1), max_size=3 if budget > 0 else 0).map(tuple)
    if origin is tuple:
        return st.tuples(*(values_for(a, budget - 1) for a in args))
    if origin is dict:
        return st.dictionaries(
            values_for(args[0], 0), values_for(args[1], budget - 1), max_size=3 if budget else 0
        )
    raise AssertionError(f"no strategy for {tp!r}")


def messages_of(type_id: int) -> st.SearchStrategy[Message]:
    return values_for(message_types()[type_id], budget=4)


ANY_MESSAGE = st.sampled_from(PRODUCTION_IDS + TEST_IDS).flatmap(messages_of)


def wire(msg: Message) -> list[Any]:
    """The decoded msgpack structure of an encoded message: [type_id, body]."""
    obj: list[Any] = msgpack.unpackb(encode(msg), raw=False)
    return obj


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def decode_or_reject(data: bytes | bytearray | memoryview) -> Message | None:
    """The fuzz rule: a registered message, or RemoteProtocolError; anything else escapes."""
    try:
        msg = decode(data)
    except RemoteProtocolError:
        return None
    assert message_types()[msg.TYPE_ID] is type(msg)
    # Whatever we accept, we can say again, and it means the same thing.
    again = encode(msg)
    assert encode(decode(again)) == again
    return msg


def sample_allkinds() -> AllKinds:
    return AllKinds(
        count=-5,
        name="né",
        blob=b"\x00\xff",
        flag=False,
        ratio=0.25,
        nothing=None,
        maybe=None,
        either="x",
        legacy=b"old",
        numbers=[1, 2, 3],
        names=("a", "b"),
        pair=(1, "one"),
        table={"k": 1},
        point=Point(1, 2.5, "p"),
        points=[Point(0, 0.0)],
        color=Color.GREEN,
        level=Level.HIGH,
        anything={"a": [1, b"2", None]},
        nested={b"k": [(True, False), ()]},
        reply=ErrorReply("nope", "really"),
    )


def chain(n: int) -> Chain:
    node = None
    for i in range(n):
        node = Node(i, node)
    return Chain(node)


# --- round trips -------------------------------------------------------------------------------


def test_there_are_production_messages() -> None:
    assert {ErrorReply.TYPE_ID, Hello.TYPE_ID, Echo.TYPE_ID} <= set(PRODUCTION_IDS)


@pytest.mark.parametrize("type_id", PRODUCTION_IDS + TEST_IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_registered_type(type_id: int, data: st.DataObject) -> None:
    msg = data.draw(messages_of(type_id))
    encoded = encode(msg)
    assert isinstance(encoded, bytes)
    back = decode(encoded)
    assert type(back) is type(msg)
    assert back == msg
    assert encode(back) == encoded
    assert wire(msg)[0] == type_id


def test_round_trip_by_hand_keeps_container_types() -> None:
    msg = sample_allkinds()
    back = decode(encode(msg))
    assert back == msg
    assert isinstance(back, AllKinds)
    assert type(back.names) is tuple and type(back.pair) is tuple
    assert type(back.numbers) is list and type(back.points) is list
    assert back.nested[b"k"] == [(True, False), ()] and type(back.nested[b"k"][0]) is tuple
    assert back.color is Color.GREEN and back.level is Level.HIGH
    assert type(back.point) is Point and type(back.reply) is ErrorReply


def test_wire_format_is_type_id_and_field_map() -> None:
    assert msgpack.unpackb(encode(ErrorReply("busy", "try later"))) == [
        1,
        {"code": "busy", "message": "try later"},
    ]
    body = wire(sample_allkinds())[1]
    assert body["color"] == "green" and body["level"] == 2
    assert body["point"] == {"x": 1, "y": 2.5, "label": "p"}
    assert body["pair"] == [1, "one"]


def test_decode_accepts_any_buffer() -> None:
    data = encode(Echo(b"ping"))
    for buf in (data, bytearray(data), memoryview(data)):
        assert decode(buf) == Echo(b"ping")


def test_encode_converts_buffers_to_bytes() -> None:
    assert decode(encode(Echo(bytearray(b"ab")))) == Echo(b"ab")
    assert decode(encode(Echo(memoryview(b"cd")))) == Echo(b"cd")


def test_float_field_accepts_integer_on_the_wire() -> None:
    body = wire(sample_allkinds())[1]
    body["ratio"] = 3
    msg = decode(pack([AllKinds.TYPE_ID, body]))
    assert isinstance(msg, AllKinds)
    assert msg.ratio == 3.0 and type(msg.ratio) is float


# --- fields: unknown, missing, wrong ------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    body = {"agent": "cadenza/9", "protocol": 2, "from_the_future": [1, {"x": b"y"}], "z": None}
    assert decode(pack([Hello.TYPE_ID, body])) == Hello("cadenza/9", protocol=2)


def test_missing_optional_fields_get_their_defaults() -> None:
    assert decode(pack([Hello.TYPE_ID, {"agent": "a"}])) == Hello("a", 1, None, ())
    assert decode(pack([Echo.TYPE_ID, {}])) == Echo(b"")
    body = wire(sample_allkinds())[1]
    for name in ("default_int", "default_names", "default_list"):
        del body[name]
    msg = decode(pack([AllKinds.TYPE_ID, body]))
    assert isinstance(msg, AllKinds)
    assert (msg.default_int, msg.default_names, msg.default_list) == (7, (), [])


@pytest.mark.parametrize("name", REQUIRED_ALLKINDS)
def test_missing_required_field_is_named(name: str) -> None:
    body = wire(sample_allkinds())[1]
    del body[name]
    with pytest.raises(RemoteProtocolError, match=f"missing field '{name}'"):
        decode(pack([AllKinds.TYPE_ID, body]))


def test_missing_required_field_of_production_message() -> None:
    with pytest.raises(RemoteProtocolError, match="missing field 'agent'"):
        decode(pack([Hello.TYPE_ID, {"protocol": 1}]))


def test_missing_field_of_nested_record() -> None:
    body = wire(sample_allkinds())[1]
    del body["point"]["x"]
    with pytest.raises(RemoteProtocolError, match="missing field 'x'"):
        decode(pack([AllKinds.TYPE_ID, body]))


# (field, wrong value on the wire, text the error must contain)
WRONG_VALUES = [
    ("count", "1", "AllKinds.count"),
    ("count", True, "AllKinds.count"),
    ("count", 1.0, "AllKinds.count"),
    ("count", None, "AllKinds.count"),
    ("name", b"x", "AllKinds.name"),
    ("name", 1, "AllKinds.name"),
    ("blob", "x", "AllKinds.blob"),
    ("blob", [1], "AllKinds.blob"),
    ("flag", 1, "AllKinds.flag"),
    ("flag", "true", "AllKinds.flag"),
    ("flag", None, "AllKinds.flag"),
    ("ratio", "1.0", "AllKinds.ratio"),
    ("ratio", True, "AllKinds.ratio"),
    ("ratio", None, "AllKinds.ratio"),
    ("nothing", 0, "AllKinds.nothing"),
    ("nothing", False, "AllKinds.nothing"),
    ("maybe", "1", "AllKinds.maybe"),
    ("maybe", 1.0, "AllKinds.maybe"),
    ("either", 1.5, "AllKinds.either"),
    ("either", None, "AllKinds.either"),
    ("either", [1], "AllKinds.either"),
    ("legacy", "x", "AllKinds.legacy"),
    ("numbers", 1, "AllKinds.numbers"),
    ("numbers", "12", "AllKinds.numbers"),
    ("numbers", {"a": 1}, "AllKinds.numbers"),
    ("numbers", [1, "2"], "AllKinds.numbers[]"),
    ("numbers", [True], "AllKinds.numbers[]"),
    ("names", "ab", "AllKinds.names"),
    ("names", [1], "AllKinds.names[]"),
    ("pair", [1], "AllKinds.pair"),
    ("pair", [1, "a", 2], "AllKinds.pair"),
    ("pair", ["a", 1], "AllKinds.pair[0]"),
    ("pair", {"0": 1}, "AllKinds.pair"),
    ("table", [["a", 1]], "AllKinds.table"),
    ("table", {"a": "1"}, "AllKinds.table{}"),
    ("table", {b"a": 1}, "AllKinds.table{key}"),
    ("point", [1, 2.0], "AllKinds.point"),
    ("point", {"x": "1", "y": 1.0}, "Point.x"),
    ("point", {"x": 1, "y": None}, "Point.y"),
    ("points", [{"x": 1, "y": 1.0, "label": 5}], "Point.label"),
    ("points", [None], "AllKinds.points[]"),
    ("color", "blue", "AllKinds.color"),
    ("color", None, "AllKinds.color"),
    ("color", [1], "AllKinds.color"),
    ("color", {"a": 1}, "AllKinds.color"),
    ("level", 3, "AllKinds.level"),
    ("level", "1", "AllKinds.level"),
    ("level", None, "AllKinds.level"),
    ("nested", {"k": []}, "AllKinds.nested{key}"),
    ("nested", {b"k": [[1]]}, "AllKinds.nested{}[][]"),
    ("nested", {b"k": [1]}, "AllKinds.nested{}[]"),
    ("reply", {"message": "no code"}, "AllKinds.reply"),
    ("reply", "boom", "AllKinds.reply"),
    ("default_int", "7", "AllKinds.default_int"),
    ("default_list", [None], "AllKinds.default_list[]"),
]


@pytest.mark.parametrize(("name", "value", "where"), WRONG_VALUES)
def test_wrong_value_type_is_rejected_and_named(name: str, value: Any, where: str) -> None:
    body = wire(sample_allkinds())[1]
    body[name] = value
    with pytest.raises(RemoteProtocolError) as info:
        decode(pack([AllKinds.TYPE_ID, body]))
    assert where in str(info.value)


def test_wrong_value_type_in_production_message() -> None:
    with pytest.raises(RemoteProtocolError, match=r"Hello\.features"):
        decode(pack([Hello.TYPE_ID, {"agent": "a", "features": "fast"}]))
    with pytest.raises(RemoteProtocolError, match=r"Hello\.certificate"):
        decode(pack([Hello.TYPE_ID, {"agent": "a", "certificate": "pem text"}]))
    with pytest.raises(RemoteProtocolError, match=r"Echo\.payload"):
        decode(pack([Echo.TYPE_ID, {"payload": "text, not bytes"}]))


# --- envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_id", [0, -1, 59999, 2**32, 2**64 - 1])
def test_unknown_type_id_is_rejected(type_id: int) -> None:
    assert type_id not in message_types()
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        decode(pack([type_id, {}]))


@pytest.mark.parametrize(
    "obj",
    [
        None,
        3,
        "hello",
        {},
        [],
        [3],
        [3, {}, {}],
        ["3", {}],
        [True, {}],
        [3.0, {}],
        [None, {}],
        [3, []],
        [3, None],
        [3, b"payload"],
        {"type": 3, "body": {}},
    ],
)
def test_malformed_envelope_is_rejected(obj: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(pack(obj))


def test_non_string_map_keys_are_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(pack([Echo.TYPE_ID, {1: b"x"}]))


@pytest.mark.parametrize("code", [0, 5, 127])
def test_msgpack_extension_types_are_refused(code: int) -> None:
    ext = msgpack.ExtType(code, b"data")
    for obj in ([Echo.TYPE_ID, {"payload": ext}], [Echo.TYPE_ID, {"unknown": ext}], ext):
        with pytest.raises(RemoteProtocolError, match="extension"):
            decode(pack(obj))


def test_msgpack_timestamp_extension() -> None:
    # msgpack decodes ext type -1 (timestamp) itself; in an ignored field it is ignored like
    # any other unknown value, in a typed field it is refused.
    data = pack([Echo.TYPE_ID, {"unknown": msgpack.Timestamp(1, 0)}])
    assert decode(data) == Echo()
    with pytest.raises(RemoteProtocolError, match="payload"):
        decode(pack([Echo.TYPE_ID, {"payload": msgpack.Timestamp(1, 0)}]))


def test_dict_with_int_keys_is_refused_at_registration() -> None:
    # Decoding uses strict_map_key, so such a map could never be decoded: fail on our side.
    with pytest.raises(TypeError, match="map keys"):
        register(60004)(IntKeys)
    assert 60004 not in message_types()


def test_empty_and_garbage_input() -> None:
    for data in (b"", b"\xc1", b"\x92", b"\x92\x03", pack([3, {}]) + b"\x00"):
        with pytest.raises(RemoteProtocolError):
            decode(data)


def test_invalid_utf8_is_rejected() -> None:
    # [3, {"payload": <str with a lone continuation byte>}]
    data = b"\x92\x03\x81\xa7payload\xa1\x80"
    with pytest.raises(RemoteProtocolError):
        decode(data)


# --- limits ------------------------------------------------------------------------------------


def _echo_overhead() -> int:
    n = 100_000  # big enough for bin32, like every payload near the limit
    return len(encode(Echo(bytes(n)))) - n


def test_message_of_exactly_the_limit_round_trips() -> None:
    msg = Echo(bytes(MAX_MESSAGE_SIZE - _echo_overhead()))
    data = encode(msg)
    assert len(data) == MAX_MESSAGE_SIZE
    assert decode(data) == msg


def test_oversized_message_is_refused_on_encode() -> None:
    with pytest.raises(LocalProtocolError, match="limit"):
        encode(Echo(bytes(MAX_MESSAGE_SIZE - _echo_overhead() + 1)))


def test_oversized_message_is_refused_on_decode() -> None:
    data = pack([Echo.TYPE_ID, {"payload": bytes(MAX_MESSAGE_SIZE - _echo_overhead() + 1)}])
    assert len(data) == MAX_MESSAGE_SIZE + 1
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        decode(bytes(MAX_MESSAGE_SIZE + 1))
    with pytest.raises(RemoteProtocolError):
        decode(memoryview(bytes(2 * MAX_MESSAGE_SIZE)))


def test_nesting_up_to_max_depth_is_accepted() -> None:
    msg = chain(MAX_DEPTH)
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("extra", [1, 2, 50])
def test_deeper_nesting_is_rejected(extra: int) -> None:
    data = encode(chain(MAX_DEPTH + extra))
    with pytest.raises(RemoteProtocolError, match=r"Chain\.root"):
        decode(data)


def test_deeply_nested_containers_are_rejected() -> None:
    body = wire(sample_allkinds())[1]
    deep: Any = [True]
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    body["nested"] = {b"k": deep}
    with pytest.raises(RemoteProtocolError, match=r"AllKinds\.nested"):
        decode(pack([AllKinds.TYPE_ID, body]))
    body = wire(sample_allkinds())[1]
    table: Any = {"leaf": 1}
    for _ in range(MAX_DEPTH + 5):
        table = {"t": table}
    body["table"] = table
    with pytest.raises(RemoteProtocolError, match=r"AllKinds\.table"):
        decode(pack([AllKinds.TYPE_ID, body]))


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_absurd_nesting_in_raw_bytes_is_rejected(depth: int) -> None:
    # fixarray(1) repeated: too deep for msgpack's own stack, never reaches the validators.
    for payload in (b"\x91" * depth + b"\xc0", b"\x81\xa1k" * depth + b"\xc0"):
        data = b"\x92\x03\x81\xa7payload" + payload
        with pytest.raises(RemoteProtocolError):
            decode(data)


# --- registration and local misuse -------------------------------------------------------------


def test_register_refuses_a_mutable_dataclass() -> None:
    with pytest.raises(TypeError, match="frozen"):

        @register(60100)
        @dataclass
        class Loose(Message):
            x: int

    assert 60100 not in message_types()


def test_register_refuses_a_plain_class() -> None:
    with pytest.raises(TypeError, match="frozen"):

        @register(60101)
        class NotADataclass(Message):
            pass

    assert 60101 not in message_types()


@pytest.mark.parametrize("taken", [ErrorReply.TYPE_ID, AllKinds.TYPE_ID])
def test_register_refuses_a_taken_id(taken: int) -> None:
    owner = message_types()[taken]
    with pytest.raises(TypeError, match="already taken"):

        @register(taken)
        @dataclass(frozen=True)
        class Usurper(Message):
            x: int = 0

    assert message_types()[taken] is owner


def test_message_types_is_a_copy() -> None:
    types = message_types()
    types.pop(ErrorReply.TYPE_ID)
    assert message_types()[ErrorReply.TYPE_ID] is ErrorReply


def test_encoding_an_unregistered_message_is_a_local_error() -> None:
    @dataclass(frozen=True)
    class Stray(Message):
        x: int = 0

    @dataclass(frozen=True)
    class EchoChild(Echo):  # inherits TYPE_ID but was never registered
        pass

    for msg in (Stray(), EchoChild(b"x")):
        with pytest.raises(LocalProtocolError, match="not a registered message"):
            encode(msg)


# --- fuzz: parse it or raise RemoteProtocolError -------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    decode_or_reject(data)


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | WIRE_INT | st.floats() | st.text() | st.binary(),
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.dictionaries(st.text() | st.binary() | st.integers(-5, 5), inner, max_size=5)
        ),
        max_leaves=20,
    )
)
def test_fuzz_arbitrary_msgpack_objects(obj: Any) -> None:
    decode_or_reject(pack(obj))


def _field_names() -> list[str]:
    names = {"unknown", ""}
    for cls in message_types().values():
        names.update(f.name for f in dataclasses.fields(cls))
    return sorted(names)


SMALL_SCALARS = (
    st.none() | st.booleans() | WIRE_INT | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
)
ANY_OBJECT = st.recursive(
    SMALL_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(_field_names()) | st.binary(max_size=3), inner, max_size=4
        )
    ),
    max_leaves=15,
)


@FUZZ
@given(
    st.sampled_from(sorted(message_types())),
    st.dictionaries(st.sampled_from(_field_names()), ANY_OBJECT, max_size=8),
)
def test_fuzz_bodies_of_known_types(type_id: int, body: dict[str, Any]) -> None:
    decode_or_reject(pack([type_id, body]))


@FUZZ
@given(ANY_MESSAGE, st.data())
def test_fuzz_one_field_replaced(msg: Message, data: st.DataObject) -> None:
    type_id, body = wire(msg)
    if body:
        name = data.draw(st.sampled_from(sorted(body)))
        body[name] = data.draw(ANY_OBJECT)
    decode_or_reject(pack([type_id, body]))


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 8)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
)


def mutate(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        if not buf:
            break
        i = op[1] % len(buf)
        if op[0] == "flip":
            buf[i] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[i:]
        elif op[0] == "insert":
            buf[i:i] = op[2]
        elif op[0] == "delete":
            del buf[i : i + op[2]]
        else:
            buf[i] = op[2]
    return bytes(buf)


@FUZZ
@given(ANY_MESSAGE, st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_mutated_valid_encodings(msg: Message, ops: list[tuple[Any, ...]]) -> None:
    decode_or_reject(mutate(encode(msg), ops))


@settings(max_examples=100, deadline=None)
@given(ANY_MESSAGE)
def test_every_truncation_is_rejected(msg: Message) -> None:
    data = encode(msg)
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode(data[:end])


# --- bulk header -------------------------------------------------------------------------------


@given(st.sampled_from(list(BulkKind)) | st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_bulk_header_round_trip(kind: int, index: int) -> None:
    header = pack_bulk_header(kind, index)
    assert len(header) == BULK_HEADER.size == 5
    assert unpack_bulk_header(header) == (kind, index)
    # The payload follows the header; it does not confuse the parser.
    assert unpack_bulk_header(memoryview(header + b"audio")) == (kind, index)


def test_bulk_header_is_big_endian() -> None:
    assert pack_bulk_header(BulkKind.OPAQUE, 0x01020304) == b"\x01\x01\x02\x03\x04"
    assert unpack_bulk_header(b"\x00\xff\xff\xff\xfe") == (BulkKind.CHUNK, 0xFFFFFFFE)


@pytest.mark.parametrize("size", range(BULK_HEADER.size))
def test_short_bulk_header_is_a_remote_error(size: int) -> None:
    with pytest.raises(RemoteProtocolError, match="shorter"):
        unpack_bulk_header(bytes(size))
    with pytest.raises(RemoteProtocolError):
        unpack_bulk_header(memoryview(bytes(size)))
