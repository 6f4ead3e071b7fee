"""What can be asked of the speaker: one value per command.

Every caller (the HTTP API, the board's buttons, the simulator's listeners, a reload of the
configuration) hands one of these to the controller (``Controller.execute``),
the only code that acts on them. Values rather than method calls: a command can be logged,
queued, or sent to another speaker as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.speaker.queue import Track


@dataclass(frozen=True)
class Command:
    """A request to the speaker's controller."""


@dataclass(frozen=True)
class Play(Command):
    """Replace the queue with ``tracks`` and play the one at ``start_index``."""

    tracks: list[Track]
    start_index: int = 0
    position_ms: int = 0


class Next(Command):
    """Skip to the entry after the current one (repeat "one" does not hold a skip)."""


class Previous(Command):
    """Back to the start of this entry, or to the one before in its first 3 s."""


class Pause(Command):
    """Hold playback (also while a start is loading: it holds when ready)."""


class Resume(Command):
    """Go on after a pause."""


@dataclass(frozen=True)
class Seek(Command):
    position_ms: int


@dataclass(frozen=True)
class SetVolume(Command):
    volume: int | None  # None: keep it (under a new ceiling)
    max_volume: int | None = None  # a new ceiling too (settings, configuration reload)


@dataclass(frozen=True)
class SetRepeat(Command):
    mode: str


@dataclass(frozen=True)
class SetShuffle(Command):
    on: bool


@dataclass(frozen=True)
class Insert(Command):
    """Queue ``tracks`` at ``position`` (None: at the end)."""

    tracks: list[Track]
    position: int | None = None


@dataclass(frozen=True)
class Move(Command):
    source: int
    target: int


@dataclass(frozen=True)
class Remove(Command):
    index: int


class Clear(Command):
    """Remove every entry but the one playing."""
