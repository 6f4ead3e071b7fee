"""run_board under trio against a GPIO chip: buttons and encoder turns call the speaker's
actions, the LED and the amplifier lines follow its state, and everything is muted and
released on the way out.

Two rigs run the same tests: :class:`FakeChip` (always), and the kernel's gpio-sim
through the real libgpiod implementation (when the kernel has it and we are root; else
skipped, saying why). A rig drives input pins by their physical level and reads outputs.
"""

from __future__ import annotations

import errno
import itertools
import os
import platform
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import cache, partial
from pathlib import Path
from typing import Protocol

import pytest
import trio

from cadenza.hw.controls import Board, run_board
from cadenza.hw.gpio import (
    Direction,
    Edge,
    FakeChip,
    GpioChip,
    GpiodChip,
    LineSettings,
    gpiod_available,
)
from cadenza.hw.profiles import Profile, load_profile, load_profiles

BOARDS = Path(__file__).resolve().parents[2] / "hw" / "boards"

PROFILE = """\
[board]
name = "test-rig"
description = "every feature the profiles have"

[board.detect]
card_ids = ["TestCard"]

[audio]
device = "plughw:CARD=TestCard,DEV=0"

[gpio]
chip = "gpiochip0"
idle_mute_s = 0.4
unmute_lead_ms = 80
amp_enable = { line = 25 }
mute = { line = 22, active_low = true }
led = { line = 17 }

[gpio.buttons]
long_press_ms = 400
volume_step = 5
play_pause = { line = 5, debounce_ms = 10 }
next = { line = 16, debounce_ms = 10 }
volume_up = { line = 26, debounce_ms = 10 }
volume_down = { line = 6, debounce_ms = 10 }

[gpio.encoder]
a = 23
b = 24
volume_step = 2
button = { line = 27, debounce_ms = 10 }
"""

PLAY, NEXT, VOL_UP, VOL_DOWN, ENC_A, ENC_B, ENC_PUSH = 5, 16, 26, 6, 23, 24, 27
AMP, MUTE, LED = 25, 22, 17


# --- rigs


class Rig(Protocol):
    name: str
    chip: GpioChip
    timestamps: bool  # can inject edges with chosen timestamps

    def set_input(self, line: int, high: bool) -> None: ...

    def output(self, line: int) -> bool: ...

    def close(self) -> None: ...


class FakeRig:
    name = "fake"
    timestamps = True

    def __init__(self) -> None:
        self.fake = FakeChip()
        self.chip: GpioChip = self.fake

    def set_input(self, line: int, high: bool) -> None:
        self.fake.set_input(line, high)

    def output(self, line: int) -> bool:
        return self.fake.output(line)

    def close(self) -> None:
        pass


CONFIGFS = Path("/sys/kernel/config")
_sim_names = itertools.count()


@cache
def gpio_sim_unavailable() -> str | None:
    """Why gpio-sim cannot be used here, or ``None`` when it can."""
    if not gpiod_available():
        return "the gpiod package (libgpiod v2) is not installed"
    if os.geteuid() != 0:
        return "gpio-sim needs root"
    try:
        modprobe = subprocess.run(
            ["modprobe", "gpio-sim"], capture_output=True, text=True, timeout=30, check=False
        )
        loaded = modprobe.returncode == 0
        why = modprobe.stderr.strip() or f"exit {modprobe.returncode}"
    except (OSError, subprocess.TimeoutExpired) as e:
        loaded, why = False, str(e)
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "configfs" not in filesystems:
        return f"kernel {platform.release()} has no configfs (modprobe gpio-sim: {why})"
    if not (CONFIGFS / "gpio-sim").is_dir() and CONFIGFS.is_dir() and not CONFIGFS.is_mount():
        subprocess.run(["mount", "-t", "configfs", "none", str(CONFIGFS)], check=False)
    if not (CONFIGFS / "gpio-sim").is_dir():
        state = "loaded" if loaded else f"not loaded: {why}"
        return f"kernel {platform.release()} has no gpio-sim in {CONFIGFS} (module {state})"
    return None


class SimRig:
    """A gpio-sim chip (configfs), used through the real gpiod implementation; inputs are
    driven with the simulator's pull, outputs read from its value files."""

    name = "gpio-sim"
    timestamps = False

    def __init__(self) -> None:
        self.root = CONFIGFS / "gpio-sim" / f"cadenza-{os.getpid()}-{next(_sim_names)}"
        self.bank = self.root / "gpio-bank0"
        self.root.mkdir()
        self.bank.mkdir()
        (self.bank / "num_lines").write_text("32")
        (self.bank / "label").write_text("cadenza-test")
        (self.root / "live").write_text("1")
        device = (self.root / "dev_name").read_text().strip()
        chip_name = (self.bank / "chip_name").read_text().strip()
        self.sysfs = Path("/sys/devices/platform") / device / chip_name
        self.chip: GpioChip = GpiodChip(f"/dev/{chip_name}")

    def set_input(self, line: int, high: bool) -> None:
        (self.sysfs / f"sim_gpio{line}" / "pull").write_text("pull-up" if high else "pull-down")

    def output(self, line: int) -> bool:
        return (self.sysfs / f"sim_gpio{line}" / "value").read_text().strip() == "1"

    def close(self) -> None:
        (self.root / "live").write_text("0")
        self.bank.rmdir()
        self.root.rmdir()


@pytest.fixture(params=["fake", "gpio-sim"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made: Rig
    if request.param == "fake":
        made = FakeRig()
    else:
        reason = gpio_sim_unavailable()
        if reason is not None:
            pytest.skip(reason)
        made = SimRig()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def fake() -> FakeRig:
    return FakeRig()


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    path = tmp_path / "test-rig.toml"
    path.write_text(PROFILE)
    return load_profile(path)


# --- the speaker side


class Actions:
    """Records what the board asked for; ``current`` is the state it reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int] | tuple[str]] = []
        self.current = "stopped"
        self.failures = 0

    async def play_pause(self) -> None:
        self.calls.append(("play_pause",))

    async def next(self) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the service is unreachable")
        self.calls.append(("next",))

    async def volume_step(self, delta: int) -> None:
        self.calls.append(("volume_step", delta))

    async def approve_pairing(self) -> None:
        self.calls.append(("approve_pairing",))

    def state(self) -> str:
        return self.current

    def volume(self) -> int:
        return sum(c[1] for c in self.calls if c[0] == "volume_step")  # type: ignore[misc]


@asynccontextmanager
async def running(profile: Profile, chip: GpioChip, actions: Actions) -> AsyncIterator[Board]:
    async with trio.open_nursery() as nursery:
        board = await nursery.start(partial(run_board, state_poll=0.02), profile, chip, actions)
        yield board
        nursery.cancel_scope.cancel()


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - pins and calls polled from outside
            await trio.sleep(0.005)


async def tap(rig: Rig, line: int, *, held: float = 0.06, bounces: int = 0) -> None:
    """Press and release an active-low button, its contacts chattering ``bounces`` times."""
    for _ in range(bounces):
        rig.set_input(line, False)
        rig.set_input(line, True)
    rig.set_input(line, False)
    await trio.sleep(held)
    for _ in range(bounces):
        rig.set_input(line, True)
        rig.set_input(line, False)
    rig.set_input(line, True)


# Physical levels through one clockwise detent of an encoder that shorts to ground
# (active low, pull-ups): rest is both high; A closes first.
CW_PINS = [(ENC_A, False), (ENC_B, False), (ENC_A, True), (ENC_B, True)]
CCW_PINS = [(ENC_B, False), (ENC_A, False), (ENC_B, True), (ENC_A, True)]


async def turn(rig: Rig, steps: list[tuple[int, bool]], detents: int) -> None:
    for _ in range(detents):
        for i, (line, high) in enumerate(steps):
            if i == 1:  # contact bounce on the second contact, mid-click
                rig.set_input(line, high)
                rig.set_input(line, not high)
            rig.set_input(line, high)
            await trio.sleep(0.002)


# --- tests


async def test_start_state(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions):
        await trio.sleep(0.05)
        # Amplifier disabled (high = enabled) and muted (mute is active low), LED off.
        assert not rig.output(AMP)
        assert not rig.output(MUTE)
        assert not rig.output(LED)
    assert actions.calls == []


async def test_requested_line_settings(fake: FakeRig, profile: Profile) -> None:
    async with running(profile, fake.chip, Actions()):
        chip = fake.fake
        assert {chip.owner(line) for line in (PLAY, ENC_A, AMP, LED)} == {"cadenzad"}
        button = chip.settings(PLAY)
        assert button is not None
        assert button.direction is Direction.INPUT and button.edge_detection is Edge.BOTH
        assert button.active_low and button.debounce_period == timedelta(milliseconds=10)
        mute = chip.settings(MUTE)
        assert mute is not None and mute.direction is Direction.OUTPUT and mute.active_low
        assert chip.history(MUTE)[0][1] is False  # muted from the moment it was requested


async def test_buttons_call_the_actions(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions):
        await tap(rig, PLAY, bounces=3)
        await eventually(lambda: actions.calls == [("play_pause",)])
        await tap(rig, NEXT, bounces=2)
        await eventually(lambda: actions.calls[-1:] == [("next",)])
        await tap(rig, VOL_UP)
        await eventually(lambda: actions.calls[-1:] == [("volume_step", 5)])
        await tap(rig, VOL_DOWN)
        await eventually(lambda: actions.calls[-1:] == [("volume_step", -5)])
        await tap(rig, ENC_PUSH)  # the knob's push switch plays/pauses too
        await eventually(lambda: actions.calls[-1:] == [("play_pause",)])
        await trio.sleep(0.1)
    assert actions.calls == [
        ("play_pause",),
        ("next",),
        ("volume_step", 5),
        ("volume_step", -5),
        ("play_pause",),
    ]


async def test_long_press_approves_a_pairing_request(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    actions.current = "pairing"
    async with running(profile, rig.chip, actions):
        rig.set_input(PLAY, False)
        start = trio.current_time()
        await eventually(lambda: actions.calls == [("approve_pairing",)])
        assert trio.current_time() - start >= 0.35  # long_press_ms = 400
        rig.set_input(PLAY, True)  # released after: not also a play/pause
        await trio.sleep(0.1)
    assert actions.calls == [("approve_pairing",)]


async def test_encoder_turns_step_the_volume(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions):
        await turn(rig, CW_PINS, 3)
        await eventually(lambda: actions.volume() == 6)
        await turn(rig, CCW_PINS, 2)
        await eventually(lambda: actions.volume() == 2)
        await trio.sleep(0.1)
    assert actions.volume() == 2
    assert all(c[0] == "volume_step" for c in actions.calls)


async def test_edges_with_their_own_timestamps(fake: FakeRig, profile: Profile) -> None:
    """Events carry the kernel's timestamps: a glitch shorter than the debounce is no
    press even when both edges are read long after, and a turn fed in one burst counts."""
    actions = Actions()
    chip = fake.fake
    async with running(profile, fake.chip, actions):
        t = time.monotonic_ns()
        chip.inject_edge(NEXT, True, t)  # logical: pressed ...
        chip.inject_edge(NEXT, False, t + 3_000_000)  # ... for 3 ms (< 10 ms debounce)
        await trio.sleep(0.1)
        assert actions.calls == []
        t = time.monotonic_ns()
        for i, (line, high) in enumerate(CCW_PINS * 2):
            chip.inject_edge(line, not high, t + i * 1_000_000)
        await eventually(lambda: actions.volume() == -4)


async def test_led_follows_the_speaker_state(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions):
        actions.current = "playing"
        await eventually(lambda: rig.output(LED))
        actions.current = "stopped"
        await eventually(lambda: not rig.output(LED))
        actions.current = "offline"  # fast blink: 100 ms on, 100 ms off
        seen = []
        with trio.move_on_after(0.7):
            while True:
                seen.append(rig.output(LED))
                await trio.sleep(0.01)
        changes = sum(1 for a, b in itertools.pairwise(seen) if a != b)
        assert 4 <= changes <= 9, seen
        actions.current = "paused"  # slow blink starts lit and stays so for a second
        await eventually(lambda: rig.output(LED))
        await trio.sleep(0.3)
        assert rig.output(LED)


async def test_amplifier_on_while_playing_muted_when_idle(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions):
        await trio.sleep(0.1)
        assert not rig.output(AMP) and not rig.output(MUTE)  # stopped: off
        actions.current = "playing"
        await eventually(lambda: rig.output(AMP) and rig.output(MUTE))  # on, unmuted
        actions.current = "paused"
        await trio.sleep(0.2)
        assert rig.output(AMP) and rig.output(MUTE)  # a short pause: still on
        await eventually(lambda: not rig.output(MUTE) and not rig.output(AMP), timeout=1.0)
        actions.current = "loading"  # a track is coming: on before it plays
        await eventually(lambda: rig.output(AMP) and rig.output(MUTE))


async def test_amplifier_switching_order(fake: FakeRig, profile: Profile) -> None:
    """Enable before unmuting, mute before disabling: no pop."""
    actions = Actions()
    chip = fake.fake
    async with running(profile, fake.chip, actions):
        actions.current = "playing"
        await eventually(lambda: chip.output(MUTE))
        actions.current = "stopped"
        await eventually(lambda: not chip.output(AMP), timeout=1.0)
    enable, mute = chip.history(AMP), chip.history(MUTE)
    assert [level for _, level in enable] == [False, True, False]
    assert [level for _, level in mute] == [False, True, False]
    assert enable[1][0] <= mute[1][0]  # on: enabled first
    assert mute[2][0] <= enable[2][0]  # off: muted first


async def test_audio_starting_unmutes_ahead_of_the_audio(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    async with running(profile, rig.chip, actions) as board:
        await trio.sleep(0.05)
        start = trio.current_time()
        await board.audio_starting()
        assert trio.current_time() - start >= 0.075  # unmute_lead_ms = 80
        assert rig.output(AMP) and rig.output(MUTE)
        start = trio.current_time()
        await board.audio_starting()  # already on: no wait
        assert trio.current_time() - start < 0.05
        # No audio came after all: muted again after idle_mute_s.
        await eventually(lambda: not rig.output(MUTE), timeout=1.5)


async def test_stopping_mutes_and_releases(rig: Rig, profile: Profile) -> None:
    actions = Actions()
    actions.current = "playing"
    async with running(profile, rig.chip, actions):
        await eventually(lambda: rig.output(LED) and rig.output(MUTE))
    assert not rig.output(LED)
    assert not rig.output(MUTE) and not rig.output(AMP)
    # Released: the lines can be requested again.
    request = rig.chip.request_lines(
        {PLAY: LineSettings(direction=Direction.INPUT), LED: LineSettings()}, consumer="again"
    )
    request.release()


async def test_busy_lines_fail_the_start(fake: FakeRig, profile: Profile) -> None:
    held = fake.chip.request_lines({LED: LineSettings(direction=Direction.OUTPUT)}, consumer="x")
    with pytest.raises(OSError) as info:
        await run_board(profile, fake.chip, Actions())
    assert info.value.errno == errno.EBUSY
    held.release()
    assert fake.fake.owner(PLAY) is None  # the inputs it had taken were given back


async def test_a_failing_action_does_not_stop_the_board(fake: FakeRig, profile: Profile) -> None:
    actions = Actions()
    actions.failures = 1
    async with running(profile, fake.chip, actions):
        await tap(fake, NEXT)
        await trio.sleep(0.1)
        assert actions.calls == []
        await tap(fake, NEXT)
        await eventually(lambda: actions.calls == [("next",)])


async def test_a_state_that_cannot_be_read_shows_offline(fake: FakeRig, profile: Profile) -> None:
    class Broken(Actions):
        def state(self) -> str:
            raise RuntimeError("no player")

    async with running(profile, fake.chip, Broken()):
        seen = set()
        with trio.move_on_after(0.5):
            while True:
                seen.add(fake.output(LED))
                await trio.sleep(0.01)
        assert seen == {True, False}  # blinking fast


async def test_boards_without_gpio_need_no_chip() -> None:
    boards = load_profiles(BOARDS)
    chip = FakeChip()
    for name in ("pi-headphones", "usb-dac", "hifiberry-dacplus"):
        async with running(boards[name], chip, Actions()) as board:
            assert board.logic is None
            await board.audio_starting()  # nothing to unmute
    assert chip.requests == []


async def test_a_shipped_profile_runs(fake: FakeRig) -> None:
    """The Pirate Audio's own profile: its four buttons and amplifier on the fake chip."""
    pirate = load_profiles(BOARDS)["pimoroni-pirate-audio"]
    actions = Actions()
    async with running(pirate, fake.chip, actions):
        for line in (5, 16, 24, 6):  # A, X, Y, B
            await tap(fake, line, held=0.08)
        await eventually(lambda: len(actions.calls) == 4)
        actions.current = "playing"
        await eventually(lambda: fake.output(25))
    assert actions.calls == [("play_pause",), ("next",), ("volume_step", 5), ("volume_step", -5)]
    assert not fake.output(25)
