"""The speaker's buttons, volume knob, status LED and amplifier: decisions, then a thin loop.

Everything but :func:`run_board` is pure: it is fed edges (line, logical level, time in
seconds on the monotonic clock) and asked what to do at a time ``now``, so tests give it
any timeline they like.

* :class:`Button`: debounced (a level counts once it has held ``debounce`` seconds),
  then a *short* press (released before ``long_press``), a *long* press (reported as soon
  as it has been held that long, not at release), or *press* + *repeat* for keys that
  act at once and repeat while held (volume).
* :class:`QuadratureDecoder`: a rotary encoder's two contacts as a Gray-code state
  machine. Each valid transition moves one step around the cycle 00 → 10 → 11 → 01 (A
  leading B is clockwise, +1); a detent counts when the contacts are back at a rest state
  a full ``steps_per_detent`` away from the last one, in one direction. Contact bounce
  (a step forward and back), and transitions that skip a state (a missed edge) count
  nothing.
* :class:`AmpPolicy`: the amplifier is unmuted as soon as audio is coming ("loading",
  "buffering", "playing", or :meth:`AmpPolicy.wake` from the player just before it opens
  the device, which then waits ``lead`` seconds so the amplifier's turn-on thump is not
  in the music) and muted after ``idle_mute`` seconds without audio: no hiss while idle.
* :class:`Led`: a pattern per speaker state (:data:`LED_PATTERNS`): playing on, paused
  a slow blink, offline a fast blink, a pairing request waiting a double blink, stopped
  off. A new state starts its pattern from the beginning.
* :class:`BoardLogic`: the above for one board profile's lines: edges in, then
  :meth:`BoardLogic.step` gives the commands (play/pause, next, volume, approve pairing),
  the output levels to set, and when to be asked again.

:func:`run_board` is the trio service: a worker thread waits for edge events on the input
lines (with a timeout, so it notices its cancel flag) and hands them over; the trio side
runs :class:`BoardLogic`, drives the LED and amplifier lines and calls the actions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import trio

from cadenza import blocking
from cadenza.hw.gpio import (
    Bias,
    Direction,
    Edge,
    EdgeEvent,
    GpioChip,
    LineRequest,
    LineSettings,
    Value,
)
from cadenza.hw.profiles import ButtonLine, GpioProfile, Profile

__all__ = [
    "ACTIVE_STATES",
    "LED_PATTERNS",
    "AmpPolicy",
    "Board",
    "BoardActions",
    "BoardLogic",
    "Button",
    "Command",
    "Led",
    "QuadratureDecoder",
    "Step",
    "led_level",
    "led_next_change",
    "led_pattern",
    "run_board",
]

log = logging.getLogger("cadenza.hw")

ACTIVE_STATES = frozenset({"playing", "loading", "buffering"})
"""Speaker states in which audio is (about to be) coming out: the amplifier is on."""


_EPS = 1e-9  # times are float seconds: 10.03 - 10.0 < 0.03 must still count as 30 ms

# --- buttons


class Button:
    """One push button's debounced presses.

    ``long_press`` (seconds) set: a press reports ``"long"`` once held that long, else
    ``"short"`` when released. ``repeat`` = (delay, interval) set instead: ``"press"`` at
    once, then ``"repeat"`` after ``delay`` and every ``interval`` while held. Neither:
    ``"press"`` only. Times are those of the edges, so late delivery does not change what
    a press was; :meth:`poll` returns what became true by ``now``.
    """

    def __init__(
        self,
        *,
        debounce: float = 0.03,
        long_press: float | None = None,
        repeat: tuple[float, float] | None = None,
        pressed: bool = False,
    ) -> None:
        if long_press is not None and repeat is not None:
            raise ValueError("a button either long-presses or repeats")
        self.debounce = debounce
        self.long_press = long_press
        self.repeat = repeat
        self._raw = pressed
        self._raw_since = -math.inf
        self.pressed = pressed  # the debounced level
        self._pressed_at = -math.inf
        self._long_done = pressed  # held at start: not a press of ours
        self._next_repeat = math.inf
        self._out: list[str] = []

    def edge(self, pressed: bool, t: float) -> None:
        """The raw (logical) level became ``pressed`` at time ``t``."""
        self._advance(t)
        if pressed != self._raw:
            self._raw, self._raw_since = pressed, t

    def poll(self, now: float) -> list[str]:
        """What happened up to ``now``: ``"short"``, ``"long"``, ``"press"``, ``"repeat"``."""
        self._advance(now)
        out, self._out = self._out, []
        return out

    def deadline(self) -> float | None:
        """When :meth:`poll` may next have something (``None``: only after an edge)."""
        times = []
        if self._raw != self.pressed:
            times.append(self._raw_since + self.debounce)
        if self.pressed and self.long_press is not None and not self._long_done:
            times.append(self._pressed_at + self.long_press)
        if self.pressed and self.repeat is not None:
            times.append(self._next_repeat)
        return min(times) if times else None

    def _advance(self, now: float) -> None:
        # Long presses and repeats that fall before a level change come first.
        if self._raw != self.pressed and now - self._raw_since >= self.debounce - _EPS:
            self._held_until(self._raw_since)
            self.pressed = self._raw
            if self.pressed:
                self._press(self._raw_since)
            else:
                self._release()
        self._held_until(now)

    def _held_until(self, now: float) -> None:
        if not self.pressed:
            return
        long_press = self.long_press
        if (
            long_press is not None
            and not self._long_done
            and now - self._pressed_at >= long_press - _EPS
        ):
            self._long_done = True
            self._out.append("long")
        if self.repeat is not None:
            while now >= self._next_repeat - _EPS:
                self._out.append("repeat")
                self._next_repeat += self.repeat[1]

    def _press(self, t: float) -> None:
        self._pressed_at = t
        self._long_done = False
        if self.repeat is not None:
            self._out.append("press")
            self._next_repeat = t + self.repeat[0]
        elif self.long_press is None:
            self._out.append("press")

    def _release(self) -> None:
        if self.long_press is not None and not self._long_done:
            self._out.append("short")
        self._long_done = True
        self._next_repeat = math.inf


# --- rotary encoder

# States are (A << 1) | B; clockwise (A leads) runs 00 → 10 → 11 → 01 → 00.
_CYCLE = (0b00, 0b10, 0b11, 0b01)
_POSITION = {state: i for i, state in enumerate(_CYCLE)}


class QuadratureDecoder:
    """Counts a rotary encoder's detents from its two contacts' levels.

    ``a``/``b`` are the levels at rest (the state the knob sits in at a detent when the
    decoder is made). ``steps_per_detent``: 4 for most encoders (one full Gray cycle per
    click), 2 or 1 for half- and quarter-cycle ones. ``invert`` swaps the directions.
    """

    def __init__(
        self, a: bool, b: bool, *, steps_per_detent: int = 4, invert: bool = False
    ) -> None:
        if steps_per_detent not in (1, 2, 4):
            raise ValueError("steps_per_detent must be 1, 2 or 4")
        self.steps = steps_per_detent
        self.sign = -1 if invert else 1
        self._state = (int(a) << 1) | int(b)
        self._rest = _POSITION[self._state]
        self._acc = 0
        self.invalid = 0  # transitions that skipped a state (both contacts changed)

    @property
    def state(self) -> tuple[bool, bool]:
        return bool(self._state & 0b10), bool(self._state & 0b01)

    def update(self, a: bool, b: bool) -> int:
        """The contacts are now ``a``/``b``: the detents this completes (-1, 0 or +1)."""
        new = (int(a) << 1) | int(b)
        old, self._state = self._state, new
        if new == old:
            return 0
        delta = (_POSITION[new] - _POSITION[old]) % 4
        if delta == 2:  # both changed: an edge was missed, direction unknown
            self.invalid += 1
            return 0
        self._acc += 1 if delta == 1 else -1
        if (_POSITION[new] - self._rest) % self.steps != 0:
            return 0  # between detents
        detent = 0
        if self._acc >= self.steps:
            detent = 1
        elif self._acc <= -self.steps:
            detent = -1
        self._acc = 0  # at a rest state: whatever did not complete was bounce
        return detent * self.sign

    def update_line(self, which: str, level: bool) -> int:
        """One contact (``"a"`` or ``"b"``) changed to ``level``."""
        a, b = self.state
        return self.update(level, b) if which == "a" else self.update(a, level)


# --- amplifier


class AmpPolicy:
    """When the amplifier is on. It starts muted (``on`` False)."""

    def __init__(self, *, idle_mute: float = 10.0, lead: float = 0.15) -> None:
        self.idle_mute = idle_mute
        self.lead = lead
        self.on = False
        self._idle_since: float | None = None

    def update(self, now: float, active: bool) -> bool:
        """Audio is (``active``) or is not coming at ``now``: whether the amp is on."""
        if active:
            self.on = True
            self._idle_since = None
        else:
            if self._idle_since is None:
                self._idle_since = now
            if self.on and now - self._idle_since >= self.idle_mute - _EPS:
                self.on = False
        return self.on

    def wake(self, now: float) -> float:
        """Audio is about to start: the amp goes on now; returns how long to wait before
        the first sample (``lead`` if it was off, else 0). If no audio follows it goes off
        again ``idle_mute`` later."""
        was_on = self.on
        self.on = True
        self._idle_since = now
        return 0.0 if was_on else self.lead

    def deadline(self) -> float | None:
        if self.on and self._idle_since is not None:
            return self._idle_since + self.idle_mute
        return None


# --- LED

Pattern = tuple[tuple[bool, float], ...]
"""Segments (lit, seconds), repeated; a single segment is a steady level."""

LED_PATTERNS: dict[str, Pattern] = {
    "playing": ((True, 1.0),),
    "loading": ((True, 1.0),),
    "buffering": ((True, 1.0),),
    "paused": ((True, 1.0), (False, 1.0)),  # slow blink
    "offline": ((True, 0.1), (False, 0.1)),  # fast blink
    "pairing": ((True, 0.15), (False, 0.15), (True, 0.15), (False, 0.8)),  # double blink
    "stopped": ((False, 1.0),),
}
_OFF: Pattern = ((False, 1.0),)


def led_pattern(state: str) -> Pattern:
    """The pattern for a speaker state (unknown states: off)."""
    return LED_PATTERNS.get(state, _OFF)


def led_level(pattern: Pattern, elapsed: float) -> bool:
    """Whether the LED is lit ``elapsed`` seconds into ``pattern``."""
    if len(pattern) == 1:
        return pattern[0][0]
    t = elapsed % sum(d for _, d in pattern)
    for lit, duration in pattern:
        if t < duration:
            return lit
        t -= duration
    return pattern[-1][0]


def led_next_change(pattern: Pattern, elapsed: float) -> float | None:
    """Seconds from ``elapsed`` to the pattern's next segment boundary (``None``: steady)."""
    if len(pattern) == 1:
        return None
    t = elapsed % sum(d for _, d in pattern)
    for _, duration in pattern:
        if t < duration:
            return duration - t
        t -= duration
    return pattern[0][1]


class Led:
    """The status LED: the pattern of the current state, restarted when it changes."""

    def __init__(self) -> None:
        self.state: str | None = None
        self._since = 0.0

    def update(self, now: float, state: str) -> bool:
        """Whether the LED is lit at ``now`` in ``state``."""
        if state != self.state:
            self.state, self._since = state, now
        return led_level(led_pattern(state), now - self._since)

    def deadline(self, now: float) -> float | None:
        if self.state is None:
            return None
        wait = led_next_change(led_pattern(self.state), now - self._since)
        return None if wait is None else now + wait


# --- a whole board


@dataclass(frozen=True)
class Command:
    """What the buttons and knob ask for: ``play_pause``, ``next``, ``volume_step`` (by
    ``delta``) or ``approve_pairing``."""

    name: str
    delta: int = 0


@dataclass
class Step:
    """:meth:`BoardLogic.step`'s answer: commands, output lines to set (in order, logical
    values: True = lit / enabled / muted), and when to step again (``None``: on an edge)."""

    commands: list[Command] = field(default_factory=list)
    outputs: list[tuple[int, bool]] = field(default_factory=list)
    deadline: float | None = None


@dataclass(frozen=True)
class _Input:
    role: str  # a button name, "encoder_a", "encoder_b" or "encoder_button"
    settings: LineSettings


def _bias(name: str) -> Bias:
    return {
        "pull-up": Bias.PULL_UP,
        "pull-down": Bias.PULL_DOWN,
        "disabled": Bias.DISABLED,
        "as-is": Bias.AS_IS,
    }[name]


def _button_settings(button: ButtonLine) -> LineSettings:
    return LineSettings(
        direction=Direction.INPUT,
        edge_detection=Edge.BOTH,
        bias=_bias(button.bias),
        active_low=button.active_low,
        debounce_period=timedelta(milliseconds=button.debounce_ms),
    )


class BoardLogic:
    """A profile's buttons, encoder, LED and amplifier, without I/O.

    Made with the input lines' levels at start (logical, ``line -> active``); then fed
    :meth:`edge` and asked :meth:`step` with the speaker's state.
    """

    REPEAT = (0.5, 0.15)  # volume buttons: first repeat after, then every (seconds)

    def __init__(self, gpio: GpioProfile, levels: Mapping[int, bool] | None = None) -> None:
        levels = levels or {}
        self.gpio = gpio
        self.inputs: dict[int, _Input] = {}
        self.buttons: dict[int, tuple[str, Button]] = {}
        long_press = gpio.long_press_ms / 1000
        for name, spec in gpio.buttons.items():
            self.inputs[spec.line] = _Input(name, _button_settings(spec))
            if name == "play_pause":
                button = Button(
                    debounce=spec.debounce_ms / 1000,
                    long_press=long_press,
                    pressed=levels.get(spec.line, False),
                )
            elif name in ("volume_up", "volume_down"):
                button = Button(
                    debounce=spec.debounce_ms / 1000,
                    repeat=self.REPEAT,
                    pressed=levels.get(spec.line, False),
                )
            else:
                button = Button(
                    debounce=spec.debounce_ms / 1000, pressed=levels.get(spec.line, False)
                )
            self.buttons[spec.line] = (name, button)
        self.encoder: QuadratureDecoder | None = None
        enc = gpio.encoder
        if enc is not None:
            settings = LineSettings(
                direction=Direction.INPUT,
                edge_detection=Edge.BOTH,
                bias=_bias(enc.bias),
                active_low=enc.active_low,
                debounce_period=timedelta(milliseconds=enc.debounce_ms),
            )
            self.inputs[enc.a] = _Input("encoder_a", settings)
            self.inputs[enc.b] = _Input("encoder_b", settings)
            self.encoder = QuadratureDecoder(
                levels.get(enc.a, False),
                levels.get(enc.b, False),
                steps_per_detent=enc.steps_per_detent,
                invert=enc.invert,
            )
            if enc.button is not None:
                self.inputs[enc.button.line] = _Input(
                    "encoder_button", _button_settings(enc.button)
                )
                self.buttons[enc.button.line] = (
                    "play_pause",
                    Button(
                        debounce=enc.button.debounce_ms / 1000,
                        long_press=long_press,
                        pressed=levels.get(enc.button.line, False),
                    ),
                )
        self.amp = AmpPolicy(idle_mute=gpio.idle_mute_s, lead=gpio.unmute_lead_ms / 1000)
        self.led = Led() if gpio.led is not None else None
        self._detents = 0
        self._written: dict[int, bool] = {}
        for line, value in self.initial_outputs().items():
            self._written[line] = value

    # the lines

    def initial_outputs(self) -> dict[int, bool]:
        """The outputs' logical values at request time: LED off, amplifier off and muted."""
        out: dict[int, bool] = {}
        if self.gpio.led is not None:
            out[self.gpio.led.line] = False
        if self.gpio.amp_enable is not None:
            out[self.gpio.amp_enable.line] = False
        if self.gpio.mute is not None:
            out[self.gpio.mute.line] = True
        return out

    def shutdown_outputs(self) -> list[tuple[int, bool]]:
        """The outputs to set when stopping: amplifier muted and off, LED off."""
        out = self._amp_outputs(False) if self.gpio.has_amp else []
        if self.gpio.led is not None:
            out += self._set(self.gpio.led.line, False)
        return out

    def input_settings(self) -> dict[int, LineSettings]:
        return {line: spec.settings for line, spec in self.inputs.items()}

    def output_settings(self) -> dict[int, LineSettings]:
        out: dict[int, LineSettings] = {}
        initial = self.initial_outputs()
        for spec in (self.gpio.led, self.gpio.amp_enable, self.gpio.mute):
            if spec is not None:
                out[spec.line] = LineSettings(
                    direction=Direction.OUTPUT,
                    active_low=spec.active_low,
                    output_value=Value.ACTIVE if initial[spec.line] else Value.INACTIVE,
                )
        return out

    # events

    def edge(self, line: int, active: bool, t: float) -> None:
        """Input ``line``'s logical level became ``active`` at ``t`` (edge timestamp)."""
        spec = self.inputs.get(line)
        if spec is None:
            return
        if spec.role in ("encoder_a", "encoder_b"):
            assert self.encoder is not None
            self._detents += self.encoder.update_line(spec.role[-1], active)
        elif line in self.buttons:
            self.buttons[line][1].edge(active, t)

    def wake_amp(self, now: float) -> tuple[float, list[tuple[int, bool]]]:
        """Audio is about to start: (seconds to wait first, outputs to set)."""
        lead = self.amp.wake(now) if self.gpio.has_amp else 0.0
        return lead, self._amp_outputs(self.amp.on)

    def step(self, now: float, state: str) -> Step:
        """What to do at ``now`` with the speaker in ``state``."""
        result = Step()
        for name, button in self.buttons.values():
            for what in button.poll(now):
                result.commands.extend(self._command(name, what))
        if self._detents and self.gpio.encoder is not None:
            result.commands.append(
                Command("volume_step", self._detents * self.gpio.encoder.volume_step)
            )
            self._detents = 0
        outputs: list[tuple[int, bool]] = []
        deadlines = [b.deadline() for _, b in self.buttons.values()]
        if self.gpio.has_amp:
            outputs.extend(self._amp_outputs(self.amp.update(now, state in ACTIVE_STATES)))
            deadlines.append(self.amp.deadline())
        if self.led is not None and self.gpio.led is not None:
            outputs.extend(self._set(self.gpio.led.line, self.led.update(now, state)))
            deadlines.append(self.led.deadline(now))
        result.outputs = outputs
        pending = [d for d in deadlines if d is not None]
        result.deadline = min(pending) if pending else None
        return result

    def _command(self, name: str, what: str) -> list[Command]:
        if name == "play_pause":
            if what == "short":
                return [Command("play_pause")]
            if what == "long":
                return [Command("approve_pairing")]
        elif name == "next" and what == "press":
            return [Command("next")]
        elif name in ("volume_up", "volume_down") and what in ("press", "repeat"):
            step = self.gpio.button_volume_step
            return [Command("volume_step", step if name == "volume_up" else -step)]
        return []

    def _amp_outputs(self, on: bool) -> list[tuple[int, bool]]:
        # On: enable, then unmute. Off: mute first, then disable (no pop either way).
        out: list[tuple[int, bool]] = []
        enable, mute = self.gpio.amp_enable, self.gpio.mute
        if on:
            if enable is not None:
                out += self._set(enable.line, True)
            if mute is not None:
                out += self._set(mute.line, False)
        else:
            if mute is not None:
                out += self._set(mute.line, True)
            if enable is not None:
                out += self._set(enable.line, False)
        return out

    def _set(self, line: int, value: bool) -> list[tuple[int, bool]]:
        if self._written.get(line) == value:
            return []
        self._written[line] = value
        return [(line, value)]


# --- the trio service


class BoardActions(Protocol):
    """What the board's controls drive (the speaker): async commands, and ``state()``:
    "playing", "paused", "stopped", "offline", "pairing" (also "loading", "buffering")."""

    async def play_pause(self) -> None: ...

    async def next(self) -> None: ...

    async def volume_step(self, delta: int) -> None: ...

    async def approve_pairing(self) -> None: ...

    def state(self) -> str: ...


class Board:
    """The running board service (what ``nursery.start(run_board, ...)`` returns)."""

    def __init__(
        self,
        profile: Profile,
        logic: BoardLogic | None,
        outputs: LineRequest | None,
        clock: Callable[[], float],
    ) -> None:
        self.profile = profile
        self.logic = logic
        self._outputs = outputs
        self._clock = clock

    async def audio_starting(self) -> None:
        """Call before opening the audio device: unmutes the amplifier and returns once it
        has settled (at once if it was already on, or the board has none)."""
        if self.logic is None:
            return
        lead, outputs = self.logic.wake_amp(self._clock())
        self.write(outputs)
        if lead > 0:
            await trio.sleep(lead)

    def write(self, outputs: Sequence[tuple[int, bool]]) -> None:
        if self._outputs is None:
            return
        for line, value in outputs:
            self._outputs.set_value(line, Value.ACTIVE if value else Value.INACTIVE)


READ_TIMEOUT = 0.1
"""The reader thread's longest wait for edges before it looks at its cancel flag."""


def _read_edges(
    request: LineRequest,
    cancel: threading.Event,
    deliver: Callable[[list[EdgeEvent]], None],
) -> None:
    """The worker thread: wait for edges, hand them to trio, until ``cancel`` is set."""
    timeout = timedelta(seconds=READ_TIMEOUT)
    while not cancel.is_set():
        if not request.wait_edge_events(timeout):
            continue
        events = request.read_edge_events()
        if not events:
            continue
        try:
            trio.from_thread.run_sync(deliver, events)
        except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _perform(actions: BoardActions, commands: trio.MemoryReceiveChannel[Command]) -> None:
    """Carry out commands one at a time (a slow one delays the next, not the LED);
    volume steps queued meanwhile go as one."""
    pending: Command | None = None
    while True:
        command = pending if pending is not None else await commands.receive()
        pending = None
        if command.name != "volume_step":
            await _call(actions, command)
            continue
        delta = command.delta
        while pending is None:
            try:
                more = commands.receive_nowait()
            except trio.WouldBlock:
                break
            if more.name == "volume_step":
                delta += more.delta
            else:
                pending = more
        if delta:
            await _call(actions, Command("volume_step", delta))


async def _call(actions: BoardActions, command: Command) -> None:
    try:
        if command.name == "play_pause":
            await actions.play_pause()
        elif command.name == "next":
            await actions.next()
        elif command.name == "volume_step":
            await actions.volume_step(command.delta)
        elif command.name == "approve_pairing":
            await actions.approve_pairing()
    except Exception:
        log.exception("board control %s failed", command.name)


class _StateReader:
    """``actions.state()``, "offline" when it fails (logged once until it works again)."""

    def __init__(self, actions: BoardActions) -> None:
        self.actions = actions
        self.failing = False

    def __call__(self) -> str:
        try:
            state = self.actions.state()
        except Exception:
            if not self.failing:
                log.exception("reading the speaker's state for the board failed")
            self.failing = True
            return "offline"
        self.failing = False
        return state


async def run_board(
    profile: Profile,
    chip: GpioChip,
    actions: BoardActions,
    *,
    consumer: str = "cadenzad",
    clock: Callable[[], float] = time.monotonic,
    state_poll: float = 0.1,
    task_status: trio.TaskStatus[Board] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``profile``'s buttons, encoder, LED and amplifier on ``chip`` until cancelled.

    Started with ``board = await nursery.start(run_board, profile, chip, actions)``: the
    lines are requested (an ``OSError`` if they are busy), the amplifier muted and the LED
    off, then :class:`Board` is handed back (for :meth:`Board.audio_starting`). On the way
    out the amplifier is muted, the LED turned off and the lines released. ``clock`` must
    be CLOCK_MONOTONIC in seconds (edge timestamps are); ``state_poll`` is how often
    ``actions.state()`` is read at least.
    """
    gpio = profile.gpio
    logic = BoardLogic(gpio) if gpio is not None else None
    if logic is None or not (logic.inputs or logic.output_settings()):
        task_status.started(Board(profile, None, None, clock))
        return
    inputs: LineRequest | None = None
    outputs: LineRequest | None = None
    try:
        if logic.inputs:
            inputs = chip.request_lines(logic.input_settings(), consumer=consumer)
            levels = {line: inputs.get_value(line) is Value.ACTIVE for line in logic.inputs}
            logic = BoardLogic(logic.gpio, levels)  # the buttons' and encoder's start state
        if logic.output_settings():
            outputs = chip.request_lines(logic.output_settings(), consumer=consumer)
        board = Board(profile, logic, outputs, clock)
        log.info(
            "board %s on %s: %d input and %d output lines",
            profile.name,
            chip.path,
            len(logic.inputs),
            len(logic.output_settings()),
        )
        edges_send, edges_recv = trio.open_memory_channel[list[EdgeEvent]](math.inf)
        commands_send, commands_recv = trio.open_memory_channel[Command](math.inf)
        cancel = threading.Event()
        async with trio.open_nursery() as nursery:
            if inputs is not None:
                nursery.start_soon(
                    _reader_task, inputs, cancel, edges_send.send_nowait, name="board-edges"
                )
            nursery.start_soon(_perform, actions, commands_recv, name="board-actions")
            task_status.started(board)
            try:
                await _control_loop(
                    board, logic, actions, edges_recv, commands_send, clock, state_poll
                )
            finally:
                cancel.set()
    finally:
        if outputs is not None:
            try:
                for line, value in logic.shutdown_outputs():
                    outputs.set_value(line, Value.ACTIVE if value else Value.INACTIVE)
            except Exception:
                log.exception("could not mute the amplifier / turn the LED off")
        for request in (inputs, outputs):
            if request is not None:
                try:
                    request.release()
                except Exception:
                    log.exception("releasing GPIO lines failed")


async def _reader_task(
    request: LineRequest,
    cancel: threading.Event,
    deliver: Callable[[list[EdgeEvent]], None],
) -> None:
    # Not abandoned on cancel: the thread owns the request until it sees the flag (within
    # READ_TIMEOUT), so the lines are never released under it.
    await blocking.run_sync(
        _read_edges, request, cancel, deliver, abandon_on_cancel=False, waits=True
    )


async def _control_loop(
    board: Board,
    logic: BoardLogic,
    actions: BoardActions,
    edges: trio.MemoryReceiveChannel[list[EdgeEvent]],
    commands: trio.MemorySendChannel[Command],
    clock: Callable[[], float],
    state_poll: float,
) -> None:
    rising = EdgeEvent.Type.RISING_EDGE
    state = _StateReader(actions)
    while True:
        now = clock()
        step = logic.step(now, state())
        board.write(step.outputs)
        for command in step.commands:
            commands.send_nowait(command)
        timeout = state_poll
        if step.deadline is not None:
            timeout = min(timeout, max(0.0, step.deadline - now) + 0.001)
        batches: list[list[EdgeEvent]] = []
        with trio.move_on_after(timeout):
            batches.append(await edges.receive())
        while True:
            try:
                batches.append(edges.receive_nowait())
            except trio.WouldBlock:
                break
        for batch in batches:
            for event in batch:
                logic.edge(event.line_offset, event.event_type is rising, event.timestamp_ns / 1e9)
