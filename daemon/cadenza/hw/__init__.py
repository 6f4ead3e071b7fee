"""Board support: profiles of the sound cards and HATs a speaker is built on, and their
buttons, volume knob, status LED and amplifier on the GPIO header.

:mod:`~cadenza.hw.profiles` (the ``hw/boards/*.toml`` profiles, validated; detecting the
board from /proc/asound/cards and the device-tree model), :mod:`~cadenza.hw.gpio` (the
libgpiod v2 subset used, on the ``gpiod`` package, and a fake chip for tests) and
:mod:`~cadenza.hw.controls` (debouncing, long presses, the encoder, amplifier muting and
LED patterns as pure logic; :func:`~cadenza.hw.controls.run_board`, the trio service).
"""

from cadenza.hw.controls import Board, BoardActions, BoardLogic, run_board
from cadenza.hw.gpio import FakeChip, GpioChip, GpiodChip, GpioUnavailable, open_chip
from cadenza.hw.profiles import (
    Profile,
    ProfileError,
    SystemInfo,
    detect,
    load_profile,
    load_profiles,
    read_system,
    select,
)

__all__ = [
    "Board",
    "BoardActions",
    "BoardLogic",
    "FakeChip",
    "GpioChip",
    "GpioUnavailable",
    "GpiodChip",
    "Profile",
    "ProfileError",
    "SystemInfo",
    "detect",
    "load_profile",
    "load_profiles",
    "open_chip",
    "read_system",
    "run_board",
    "select",
]
