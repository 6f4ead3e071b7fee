"""GPIO through libgpiod v2: the small part of its Python API that cadenza uses.

:class:`GpioChip` and :class:`LineRequest` are that subset, with the same names and
shapes as the ``gpiod`` package (2.x)::

    request = chip.request_lines(
        {17: LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH,
                          bias=Bias.PULL_UP, active_low=True,
                          debounce_period=timedelta(milliseconds=30))},
        consumer="cadenzad",
    )
    request.get_value(17)                       # Value.ACTIVE while pressed
    if request.wait_edge_events(timedelta(milliseconds=100)):
        for event in request.read_edge_events():  # EdgeEvent(event_type, timestamp_ns, ...)
            ...
    request.set_value(22, Value.ACTIVE)
    request.release()

Values are logical, as in libgpiod: with ``active_low`` the kernel inverts them, and edge
events report the logical edge (pressing an active-low button is a ``RISING_EDGE``).
Timestamps are CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``'s clock).

:class:`GpiodChip` is the real thing on ``gpiod`` (imported lazily: without it this
module still works, with :class:`FakeChip` only). :class:`FakeChip` simulates a chip for
tests: a test drives input pins (:meth:`FakeChip.set_input`, or raw
:meth:`FakeChip.inject_edge` with chosen timestamps) and reads what was driven on
outputs (:meth:`FakeChip.output`, :meth:`FakeChip.history`).
"""

from __future__ import annotations

import enum
import errno
import glob
import importlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Bias",
    "Direction",
    "Edge",
    "EdgeEvent",
    "FakeChip",
    "FakeLineRequest",
    "GpioChip",
    "GpioUnavailable",
    "GpiodChip",
    "LineRequest",
    "LineSettings",
    "Value",
    "gpiod_available",
    "open_chip",
]


class GpioUnavailable(RuntimeError):
    """No way to reach the GPIO chip (``gpiod`` missing, or no such chip)."""


# --- the libgpiod v2 types, mirrored (same member names as gpiod.line.*)


class Direction(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class Edge(enum.Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class Bias(enum.Enum):
    AS_IS = 1
    UNKNOWN = 2
    DISABLED = 3
    PULL_UP = 4
    PULL_DOWN = 5


class Value(enum.Enum):
    INACTIVE = 0
    ACTIVE = 1


@dataclass(frozen=True)
class LineSettings:
    """``gpiod.LineSettings``' fields that cadenza sets."""

    direction: Direction = Direction.AS_IS
    edge_detection: Edge = Edge.NONE
    bias: Bias = Bias.AS_IS
    active_low: bool = False
    debounce_period: timedelta = timedelta(0)
    output_value: Value = Value.INACTIVE


@dataclass(frozen=True)
class EdgeEvent:
    """``gpiod.EdgeEvent``: one edge on one line."""

    class Type(enum.Enum):
        RISING_EDGE = 1
        FALLING_EDGE = 2

    event_type: EdgeEvent.Type
    timestamp_ns: int
    line_offset: int
    global_seqno: int = 0
    line_seqno: int = 0


class LineRequest(Protocol):
    """``gpiod.LineRequest``, the methods cadenza calls."""

    def set_value(self, line: int, value: Value) -> None: ...

    def get_value(self, line: int) -> Value: ...

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool: ...

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]: ...

    def release(self) -> None: ...


@runtime_checkable
class GpioChip(Protocol):
    """A chip to request lines from: ``gpiod.request_lines(path, ...)`` with the path bound."""

    @property
    def path(self) -> str: ...

    def request_lines(
        self, config: Mapping[int, LineSettings], *, consumer: str | None = None
    ) -> LineRequest: ...


def _seconds(timeout: timedelta | float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        return max(0.0, timeout.total_seconds())
    return max(0.0, float(timeout))


# --- the real chip (libgpiod v2 via the gpiod package)


def _gpiod() -> Any:
    # Imported by name: mypy checks this module the same with or without gpiod installed.
    try:
        gpiod = importlib.import_module("gpiod")
    except ImportError as e:
        raise GpioUnavailable(
            "the gpiod package (libgpiod v2 bindings) is not installed: pip install gpiod"
        ) from e
    if not hasattr(gpiod, "request_lines"):
        raise GpioUnavailable(f"gpiod {getattr(gpiod, '__version__', '?')} is not 2.x")
    return gpiod


def gpiod_available() -> bool:
    """Whether the libgpiod v2 bindings can be imported."""
    try:
        _gpiod()
    except GpioUnavailable:
        return False
    return True


class _GpiodRequest:
    """Adapts a ``gpiod.LineRequest`` to :class:`LineRequest` (our enums and events)."""

    def __init__(self, request: Any, gpiod: Any) -> None:
        self._request = request
        self._value = gpiod.line.Value
        self._rising = gpiod.EdgeEvent.Type.RISING_EDGE

    def set_value(self, line: int, value: Value) -> None:
        self._request.set_value(line, self._value[value.name])

    def get_value(self, line: int) -> Value:
        return Value[self._request.get_value(line).name]

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool:
        return bool(self._request.wait_edge_events(timeout))

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        return [
            EdgeEvent(
                EdgeEvent.Type.RISING_EDGE
                if e.event_type == self._rising
                else EdgeEvent.Type.FALLING_EDGE,
                e.timestamp_ns,
                e.line_offset,
                e.global_seqno,
                e.line_seqno,
            )
            for e in self._request.read_edge_events(max_events)
        ]

    def release(self) -> None:
        self._request.release()


class GpiodChip:
    """A GPIO character device (``/dev/gpiochipN``) through libgpiod v2."""

    def __init__(self, path: str) -> None:
        self._gpiod = _gpiod()
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"GpiodChip({self._path!r})"

    def request_lines(
        self, config: Mapping[int, LineSettings], *, consumer: str | None = None
    ) -> LineRequest:
        g = self._gpiod
        native = {
            line: g.LineSettings(
                direction=g.line.Direction[s.direction.name],
                edge_detection=g.line.Edge[s.edge_detection.name],
                bias=g.line.Bias[s.bias.name],
                active_low=s.active_low,
                debounce_period=s.debounce_period,
                output_value=g.line.Value[s.output_value.name],
            )
            for line, s in config.items()
        }
        request = g.request_lines(self._path, consumer=consumer, config=native)
        return _GpiodRequest(request, g)


def open_chip(chip: str = "gpiochip0", labels: Iterable[str] = ()) -> GpiodChip:
    """The real chip: the first ``/dev/gpiochip*`` whose label is one of ``labels``, else
    ``chip`` (``gpiochip0`` or a path). :class:`GpioUnavailable` when neither exists."""
    gpiod = _gpiod()
    wanted = list(labels)
    if wanted:
        for path in sorted(glob.glob("/dev/gpiochip*")):
            try:
                with gpiod.Chip(path) as c:
                    label = c.get_info().label
            except OSError:
                continue
            if label in wanted:
                return GpiodChip(path)
    path = chip if chip.startswith("/") else f"/dev/{chip}"
    if not os.path.exists(path):
        raise GpioUnavailable(
            f"no GPIO chip {path}" + (f" (nor one labelled {wanted})" if wanted else "")
        )
    return GpiodChip(path)


# --- the fake chip, for tests


@dataclass
class _FakeLine:
    level: bool = False  # the physical level on the pin
    settings: LineSettings | None = None
    owner: FakeLineRequest | None = None
    history: list[tuple[int, bool]] = field(default_factory=list)  # outputs: (ns, level)


class FakeLineRequest:
    """A request on a :class:`FakeChip`; behaves as ``gpiod.LineRequest`` does."""

    def __init__(self, chip: FakeChip, config: Mapping[int, LineSettings], consumer: str) -> None:
        self._chip = chip
        self.config = dict(config)
        self.consumer = consumer
        self.released = False
        self._events: deque[EdgeEvent] = deque()
        self._seqno = 0
        self._line_seqno: dict[int, int] = {}

    def _check(self, line: int) -> LineSettings:
        if self.released:
            raise RuntimeError("request released")  # gpiod: RequestReleasedError
        if line not in self.config:
            raise ValueError(f"line {line} is not in this request")
        return self.config[line]

    def set_value(self, line: int, value: Value) -> None:
        with self._chip._cond:
            settings = self._check(line)
            if settings.direction is not Direction.OUTPUT:
                raise PermissionError(errno.EPERM, f"line {line} is not an output")
            self._chip._drive(line, (value is Value.ACTIVE) != settings.active_low)

    def get_value(self, line: int) -> Value:
        with self._chip._cond:
            settings = self._check(line)
            level = self._chip._lines[line].level
            return Value.ACTIVE if level != settings.active_low else Value.INACTIVE

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool:
        seconds = _seconds(timeout)
        with self._chip._cond:
            if self.released:
                raise RuntimeError("request released")
            self._chip._cond.wait_for(lambda: bool(self._events) or self.released, seconds)
            return bool(self._events)

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        with self._chip._cond:
            if self.released:
                raise RuntimeError("request released")
            count = len(self._events) if max_events is None else min(max_events, len(self._events))
            return [self._events.popleft() for _ in range(count)]

    def release(self) -> None:
        with self._chip._cond:
            if self.released:
                return
            self.released = True
            for line in self.config:
                if self._chip._lines[line].owner is self:
                    self._chip._lines[line].owner = None
            self._chip._cond.notify_all()

    def _queue(self, line: int, rising: bool, timestamp_ns: int) -> None:
        self._seqno += 1
        self._line_seqno[line] = self._line_seqno.get(line, 0) + 1
        kind = EdgeEvent.Type.RISING_EDGE if rising else EdgeEvent.Type.FALLING_EDGE
        self._events.append(
            EdgeEvent(kind, timestamp_ns, line, self._seqno, self._line_seqno[line])
        )
        self._chip._cond.notify_all()


class FakeChip:
    """A simulated GPIO chip with :class:`GpioChip`'s interface, for tests.

    Pins start low, or at their bias once requested (pull-up: high). The test side:
    :meth:`set_input` drives an input pin (an edge event follows if the line's logical
    value changes and its edge detection wants it), :meth:`inject_edge` queues a raw event
    with any timestamp (bounces, missed edges), :meth:`output` / :meth:`history` read what
    the code under test drove. Thread-safe: requests are waited on from worker threads.
    """

    def __init__(self, num_lines: int = 64, path: str = "/dev/gpiochip-fake") -> None:
        self._path = path
        self.num_lines = num_lines
        self._cond = threading.Condition()
        self._lines = [_FakeLine() for _ in range(num_lines)]
        self.requests: list[FakeLineRequest] = []

    @property
    def path(self) -> str:
        return self._path

    def request_lines(
        self, config: Mapping[int, LineSettings], *, consumer: str | None = None
    ) -> FakeLineRequest:
        with self._cond:
            for line in config:
                if not 0 <= line < self.num_lines:
                    raise ValueError(f"line {line} is not on {self._path}")
                if self._lines[line].owner is not None:
                    raise OSError(errno.EBUSY, f"line {line} is busy")
            request = FakeLineRequest(self, config, consumer or "")
            for line, settings in config.items():
                state = self._lines[line]
                state.owner, state.settings = request, settings
                if settings.direction is Direction.OUTPUT:
                    active = settings.output_value is Value.ACTIVE
                    self._drive(line, active != settings.active_low)
                elif settings.bias is Bias.PULL_UP:
                    state.level = True
                elif settings.bias is Bias.PULL_DOWN:
                    state.level = False
            self.requests.append(request)
            return request

    # test side

    def set_input(self, line: int, high: bool, *, timestamp_ns: int | None = None) -> None:
        """Drive the pin of an input line to a physical level (as a button or an encoder
        contact would); queues an edge event if the logical value changes."""
        ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        with self._cond:
            state = self._lines[line]
            if state.level == high:
                return
            state.level = high
            settings, owner = state.settings, state.owner
            if owner is None or settings is None or settings.direction is not Direction.INPUT:
                return
            rising = high != settings.active_low
            edge = settings.edge_detection
            if edge is Edge.BOTH or edge is (Edge.RISING if rising else Edge.FALLING):
                owner._queue(line, rising, ts)

    def inject_edge(self, line: int, rising: bool, timestamp_ns: int) -> None:
        """Queue a raw (logical) edge event as the kernel would report it, and set the pin
        to match. Unlike :meth:`set_input` it is queued even if the level does not change."""
        with self._cond:
            state = self._lines[line]
            settings, owner = state.settings, state.owner
            if owner is None or settings is None:
                raise ValueError(f"line {line} is not requested")
            state.level = rising != settings.active_low
            owner._queue(line, rising, timestamp_ns)

    def output(self, line: int) -> bool:
        """The physical level on a pin (high = True)."""
        with self._cond:
            return self._lines[line].level

    def active(self, line: int) -> bool:
        """The logical value of a requested line (its function: lit, enabled, muted)."""
        with self._cond:
            state = self._lines[line]
            active_low = state.settings.active_low if state.settings else False
            return state.level != active_low

    def history(self, line: int) -> list[tuple[int, bool]]:
        """Every level driven on an output pin: ``(monotonic ns, high)``."""
        with self._cond:
            return list(self._lines[line].history)

    def settings(self, line: int) -> LineSettings | None:
        with self._cond:
            return self._lines[line].settings

    def owner(self, line: int) -> str | None:
        """The consumer holding a line, ``None`` when free."""
        with self._cond:
            owner = self._lines[line].owner
            return owner.consumer if owner else None

    def _drive(self, line: int, high: bool) -> None:
        state = self._lines[line]
        if not state.history or state.level != high:
            state.history.append((time.monotonic_ns(), high))
        state.level = high
