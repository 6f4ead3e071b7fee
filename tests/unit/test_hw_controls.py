"""The board's pure logic: encoder decoding (both directions, bounce, missed edges),
button debouncing and long presses, amplifier muting times, LED patterns, and how a
profile's lines become commands and output levels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.hw.controls import (
    LED_PATTERNS,
    AmpPolicy,
    BoardLogic,
    Button,
    Command,
    Led,
    QuadratureDecoder,
    led_level,
    led_next_change,
    led_pattern,
)
from cadenza.hw.gpio import Bias, Direction, Edge, Value
from cadenza.hw.profiles import ButtonLine, EncoderLines, GpioProfile, OutputLine

# --- rotary encoder

# One clockwise detent from rest 00: A rises, B rises, A falls, B falls (A leads B).
CW = [("a", True), ("b", True), ("a", False), ("b", False)]
CCW = [("b", True), ("a", True), ("b", False), ("a", False)]


def feed(decoder: QuadratureDecoder, steps: list[tuple[str, bool]]) -> list[int]:
    return [d for which, level in steps if (d := decoder.update_line(which, level))]


def test_encoder_counts_detents_both_ways() -> None:
    decoder = QuadratureDecoder(False, False)
    assert feed(decoder, CW * 3) == [1, 1, 1]
    assert feed(decoder, CCW * 2) == [-1, -1]
    assert feed(decoder, CW + CCW + CW) == [1, -1, 1]
    assert decoder.invalid == 0


def test_a_detent_counts_only_when_the_knob_is_back_at_rest() -> None:
    decoder = QuadratureDecoder(False, False)
    assert feed(decoder, CW[:3]) == []  # three quarters of the way
    assert feed(decoder, CW[3:]) == [1]


def test_encoder_ignores_contact_bounce() -> None:
    decoder = QuadratureDecoder(False, False)
    # A chatters as it closes at the start, B chatters mid-cycle, A chatters at the end.
    bouncy = [
        ("a", True), ("a", False), ("a", True), ("a", False), ("a", True),
        ("b", True), ("b", False), ("b", True),
        ("a", False),
        ("b", False), ("b", True), ("b", False),
    ]  # fmt: skip
    assert feed(decoder, bouncy) == [1]
    assert feed(decoder, [("b", True), ("b", False)] * 5) == []  # chatter at rest: nothing


def test_turning_half_way_and_back_counts_nothing() -> None:
    decoder = QuadratureDecoder(False, False)
    assert feed(decoder, [*CW[:2], ("b", False), ("a", False)]) == []
    assert feed(decoder, [*CCW[:3], ("b", True), ("a", False), ("b", False)]) == []
    assert feed(decoder, CW) == [1]


def test_a_missed_edge_is_ignored_not_guessed() -> None:
    decoder = QuadratureDecoder(False, False)
    # 00 -> 10 -> 11 -> (01 missed) -> 00: the last transition changes both contacts.
    assert decoder.update(True, False) == 0
    assert decoder.update(True, True) == 0
    assert decoder.update(False, False) == 0
    assert decoder.invalid == 1
    assert feed(decoder, CW) == [1]  # and the next detent counts again
    assert decoder.update(False, False) == 0  # no change at all: nothing


def test_encoder_resting_at_11_and_inverted() -> None:
    # Without active_low the contacts read high at rest.
    decoder = QuadratureDecoder(True, True)
    flipped = [(which, not level) for which, level in CW]
    assert feed(decoder, flipped * 2) == [1, 1]
    inverted = QuadratureDecoder(False, False, invert=True)
    assert feed(inverted, CW) == [-1]
    assert feed(inverted, CCW) == [1]


@pytest.mark.parametrize(("steps", "expected"), [(2, [1, 1]), (1, [1, 1, 1, 1])])
def test_half_and_quarter_cycle_encoders(steps: int, expected: list[int]) -> None:
    decoder = QuadratureDecoder(False, False, steps_per_detent=steps)
    assert feed(decoder, CW) == expected
    assert feed(decoder, CCW) == [-d for d in expected]
    with pytest.raises(ValueError):
        QuadratureDecoder(False, False, steps_per_detent=3)


@st.composite
def turns(draw: st.DrawFn) -> tuple[list[tuple[str, bool]], int]:
    """Detents in random directions with bounces (a contact flipping and back) anywhere."""
    directions = draw(st.lists(st.sampled_from([1, -1]), max_size=12))
    levels = {"a": False, "b": False}
    steps: list[tuple[str, bool]] = []
    for direction in directions:
        for which, level in CW if direction == 1 else CCW:
            if draw(st.booleans()):
                for _ in range(draw(st.integers(1, 3))):
                    bouncer = draw(st.sampled_from(["a", "b"]))
                    steps += [(bouncer, not levels[bouncer]), (bouncer, levels[bouncer])]
            steps.append((which, level))
            levels[which] = level
    return steps, sum(directions)


@given(turns())
@settings(max_examples=300, deadline=None)
def test_encoder_net_count_survives_any_bounce(case: tuple[list[tuple[str, bool]], int]) -> None:
    steps, net = case
    decoder = QuadratureDecoder(False, False)
    assert sum(feed(decoder, steps)) == net
    assert decoder.state == (False, False)


# --- buttons


def test_short_press_after_debounce() -> None:
    button = Button(debounce=0.03, long_press=1.5)
    button.edge(True, 10.0)
    assert button.poll(10.02) == []
    assert button.deadline() == pytest.approx(10.03)
    assert button.poll(10.03) == []  # pressed now, but a press is only short on release
    assert button.pressed
    assert button.deadline() == pytest.approx(11.5)  # the long press
    button.edge(False, 10.2)
    assert button.poll(10.22) == []
    assert button.poll(10.24) == ["short"]
    assert not button.pressed and button.deadline() is None


def test_bouncy_contacts_make_one_press() -> None:
    button = Button(debounce=0.03, long_press=1.5)
    t = 5.0
    for i in range(6):  # closing: 6 changes 2 ms apart, ending pressed
        button.edge(i % 2 == 0, t + i * 0.002)
    button.edge(True, t + 0.012)
    assert button.poll(t + 0.03) == []  # the last change was 18 ms ago: not yet
    assert button.poll(t + 0.05) == []
    assert button.pressed
    for i in range(5):  # opening, bouncing
        button.edge(i % 2 == 1, t + 0.3 + i * 0.003)
    button.edge(False, t + 0.315)
    assert button.poll(t + 0.4) == ["short"]
    assert button.poll(t + 1.0) == []


def test_a_glitch_shorter_than_debounce_is_no_press() -> None:
    button = Button(debounce=0.03)
    button.edge(True, 1.0)
    button.edge(False, 1.01)
    assert button.poll(2.0) == []
    assert not button.pressed


def test_long_press_fires_while_held_and_no_short_follows() -> None:
    button = Button(debounce=0.03, long_press=1.5)
    button.edge(True, 0.0)
    assert button.poll(1.49) == []
    assert button.poll(1.5) == ["long"]  # measured from the edge, not the debounce
    assert button.poll(3.0) == []
    button.edge(False, 4.0)
    assert button.poll(4.1) == []


def test_late_delivery_gives_the_same_answer() -> None:
    # Both edges arrive in one batch, long after: the press still was 2 s long.
    button = Button(debounce=0.03, long_press=1.5)
    button.edge(True, 0.0)
    button.edge(False, 2.0)
    assert button.poll(9.0) == ["long"]
    quick = Button(debounce=0.03, long_press=1.5)
    quick.edge(True, 0.0)
    quick.edge(False, 0.4)
    assert quick.poll(9.0) == ["short"]


def test_repeat_while_held() -> None:
    button = Button(debounce=0.02, repeat=(0.5, 0.15))
    button.edge(True, 0.0)
    assert button.poll(0.02) == ["press"]
    assert button.poll(0.49) == []
    assert button.poll(0.96) == ["repeat"] * 4  # 0.5, 0.65, 0.8, 0.95
    button.edge(False, 1.0)
    assert button.poll(2.0) == []
    with pytest.raises(ValueError):
        Button(long_press=1.0, repeat=(0.5, 0.1))


def test_plain_button_and_one_held_at_start() -> None:
    button = Button(debounce=0.02)
    button.edge(True, 0.0)
    assert button.poll(0.05) == ["press"]
    button.edge(False, 0.1)
    assert button.poll(0.2) == []
    held = Button(debounce=0.02, long_press=1.0, pressed=True)
    assert held.poll(5.0) == []  # held since before we looked: neither long ...
    held.edge(False, 6.0)
    assert held.poll(6.1) == []  # ... nor short


# --- amplifier


def test_amp_unmutes_for_audio_and_mutes_after_idle() -> None:
    amp = AmpPolicy(idle_mute=10.0, lead=0.15)
    assert not amp.update(0.0, False)  # starts muted, stays muted while idle
    assert amp.deadline() is None
    assert amp.update(1.0, True)
    assert amp.deadline() is None  # playing: no mute scheduled
    assert amp.update(30.0, True)
    assert amp.update(31.0, False)  # paused at 31
    assert amp.deadline() == 41.0
    assert amp.update(40.9, False)
    assert not amp.update(41.0, False)  # 10 s idle: muted
    assert amp.deadline() is None


def test_amp_idle_timer_restarts_when_audio_resumes() -> None:
    amp = AmpPolicy(idle_mute=10.0)
    amp.update(0.0, True)
    amp.update(5.0, False)
    amp.update(12.0, True)  # resumed before the 10 s ran out
    amp.update(13.0, False)
    assert amp.update(22.9, False)
    assert not amp.update(23.0, False)


def test_amp_wake_before_audio() -> None:
    amp = AmpPolicy(idle_mute=5.0, lead=0.15)
    assert amp.wake(100.0) == 0.15  # was muted: wait for it to settle
    assert amp.on
    assert amp.wake(100.1) == 0.0  # already on: no wait
    # No audio after all: muted idle_mute after the (last) wake.
    assert amp.update(105.0, False)
    assert not amp.update(105.1, False)


# --- LED


def levels(state: str, times: list[float]) -> list[bool]:
    return [led_level(led_pattern(state), t) for t in times]


def test_led_patterns() -> None:
    assert set(LED_PATTERNS) >= {"playing", "paused", "stopped", "offline", "pairing"}
    assert levels("playing", [0, 0.5, 7.3]) == [True] * 3
    assert levels("stopped", [0, 0.5, 7.3]) == [False] * 3
    assert levels("no-such-state", [0, 3]) == [False] * 2
    assert levels("paused", [0, 0.99, 1.0, 1.99, 2.0]) == [True, True, False, False, True]
    fast = levels("offline", [i * 0.1 + 0.05 for i in range(6)])
    assert fast == [True, False] * 3
    # Double blink: on, off, on, then a long off; 1.25 s a cycle.
    pairing = levels("pairing", [0.1, 0.2, 0.35, 0.5, 1.0, 1.3, 1.45, 1.6])
    assert pairing == [True, False, True, False, False, True, False, True]
    assert led_next_change(led_pattern("playing"), 3.0) is None
    assert led_next_change(led_pattern("paused"), 0.25) == pytest.approx(0.75)
    assert led_next_change(led_pattern("pairing"), 0.5) == pytest.approx(0.75)


def test_led_restarts_its_pattern_on_a_new_state() -> None:
    led = Led()
    assert led.update(0.0, "paused")
    assert led.deadline(0.0) == pytest.approx(1.0)
    assert not led.update(1.5, "paused")
    assert led.update(1.6, "pairing")  # a pairing request: the double blink starts now
    assert not led.update(1.8, "pairing")
    assert led.update(1.95, "pairing")
    assert led.update(2.0, "playing")
    assert led.deadline(2.0) is None


# --- a board's lines


def profile(**overrides: object) -> GpioProfile:
    base: dict[str, object] = {
        "amp_enable": OutputLine(25),
        "mute": OutputLine(22, active_low=True),
        "led": OutputLine(17),
        "buttons": {
            "play_pause": ButtonLine(5, debounce_ms=20),
            "next": ButtonLine(16, debounce_ms=20),
            "volume_up": ButtonLine(24, debounce_ms=20),
            "volume_down": ButtonLine(6, debounce_ms=20),
        },
        "encoder": EncoderLines(12, 13, volume_step=3, button=ButtonLine(27, debounce_ms=20)),
        "long_press_ms": 1000,
        "button_volume_step": 5,
        "idle_mute_s": 10.0,
        "unmute_lead_ms": 100,
    }
    base.update(overrides)
    return GpioProfile(**base)  # type: ignore[arg-type]


def press(logic: BoardLogic, line: int, t: float, held: float = 0.1) -> None:
    logic.edge(line, True, t)
    logic.edge(line, False, t + held)


def test_line_settings() -> None:
    logic = BoardLogic(profile())
    inputs = logic.input_settings()
    assert set(inputs) == {5, 16, 24, 6, 12, 13, 27}
    button = inputs[5]
    assert button.direction is Direction.INPUT and button.edge_detection is Edge.BOTH
    assert button.bias is Bias.PULL_UP and button.active_low
    assert button.debounce_period.total_seconds() == pytest.approx(0.02)
    assert inputs[12].debounce_period.total_seconds() == 0
    outputs = logic.output_settings()
    assert set(outputs) == {25, 22, 17}
    assert all(s.direction is Direction.OUTPUT for s in outputs.values())
    # Start: LED off, amplifier disabled and muted (mute is active low: driven low).
    assert outputs[17].output_value is Value.INACTIVE
    assert outputs[25].output_value is Value.INACTIVE
    assert outputs[22].output_value is Value.ACTIVE and outputs[22].active_low


def test_buttons_and_knob_become_commands() -> None:
    logic = BoardLogic(profile())
    assert logic.step(0.0, "stopped").commands == []
    press(logic, 5, 1.0)  # play/pause, short
    press(logic, 16, 2.0)  # next
    press(logic, 24, 3.0)  # volume up
    press(logic, 6, 4.0)  # volume down
    press(logic, 27, 5.0)  # the encoder's push: play/pause too
    for which, level in CW * 2:  # two clicks clockwise: 2 x 3
        logic.edge(12 if which == "a" else 13, level, 6.0)
    assert logic.step(7.0, "playing").commands == [
        Command("play_pause"),
        Command("next"),
        Command("volume_step", 5),
        Command("volume_step", -5),
        Command("play_pause"),
        Command("volume_step", 6),
    ]
    for which, level in CCW:
        logic.edge(12 if which == "a" else 13, level, 8.0)
    assert logic.step(8.1, "playing").commands == [Command("volume_step", -3)]


def test_long_press_approves_pairing() -> None:
    logic = BoardLogic(profile())
    logic.edge(5, True, 1.0)
    step = logic.step(1.5, "pairing")
    assert step.commands == []
    assert step.deadline is not None and step.deadline <= 2.0
    assert logic.step(2.0, "pairing").commands == [Command("approve_pairing")]
    logic.edge(5, False, 3.0)
    assert logic.step(3.5, "pairing").commands == []


def test_held_volume_button_repeats() -> None:
    logic = BoardLogic(profile())
    logic.edge(24, True, 0.0)
    assert logic.step(0.1, "playing").commands == [Command("volume_step", 5)]
    assert len(logic.step(1.0, "playing").commands) == 4  # 0.5, 0.65, 0.8, 0.95


def test_amp_and_led_outputs_in_order_and_only_on_change() -> None:
    logic = BoardLogic(profile(idle_mute_s=2.0))
    assert logic.step(0.0, "stopped").outputs == []  # as requested: all off
    # Playing: amplifier enabled, then unmuted; LED on.
    assert logic.step(1.0, "playing").outputs == [(25, True), (22, False), (17, True)]
    assert logic.step(1.1, "playing").outputs == []
    step = logic.step(2.0, "paused")  # the slow blink starts lit: nothing to change yet
    assert step.outputs == []
    assert step.deadline == pytest.approx(3.0)  # the LED's next change
    assert logic.step(3.0, "paused").outputs == [(17, False)]
    # Idle 2 s: muted first, then disabled.
    assert logic.step(4.0, "paused").outputs == [(22, True), (25, False), (17, True)]
    lead, outputs = logic.wake_amp(10.0)
    assert lead == pytest.approx(0.1) and outputs == [(25, True), (22, False)]
    assert logic.shutdown_outputs() == [(22, True), (25, False), (17, False)]


def test_a_board_without_amp_or_led() -> None:
    logic = BoardLogic(profile(amp_enable=None, mute=None, led=None, encoder=None))
    assert logic.output_settings() == {}
    assert logic.step(0.0, "playing").outputs == []
    assert logic.wake_amp(0.0) == (0.0, [])
