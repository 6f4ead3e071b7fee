"""The play queue: which track is playing, which comes next, shuffle and repeat. Pure.

No trio, no player, no streams: the controller (:mod:`cadenza.speaker.controller`) asks the
queue what to play and tells it what the user changed; the queue answers with indexes. Tracks
are the service's track records (``api.LookupReply``), compared by identity: the same song
queued twice is two entries, and an entry keeps its identity through moves and shuffles.
"""

from __future__ import annotations

import enum
import random
from typing import Any

from cadenza.errors import BadPosition, BadRequest, Conflict, UnknownLink

# A track record as the service sends it (id, uri, title, artists, album, duration_ms, files…).
Track = dict[str, Any]


class Repeat(enum.StrEnum):
    OFF = "off"
    ALL = "all"
    ONE = "one"


REPEAT_MODES = tuple(m.value for m in Repeat)


class PlayQueue:
    """The tracks to play in order, the index of the current one (-1: none yet)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.tracks: list[Track] = []
        self.index = -1
        self.shuffle = False
        self.repeat = Repeat.OFF
        # With shuffle on: the upcoming tracks in the order they had before shuffling.
        self._unshuffled: list[Track] | None = None
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self.tracks)

    def replace(self, tracks: list[Track], start_index: int) -> int:
        """Play ``tracks`` from ``start_index``; returns the index to start at (with shuffle
        on, the chosen track comes first and the rest follow shuffled)."""
        if not tracks:
            raise UnknownLink("nothing to play")
        if not 0 <= start_index < len(tracks):
            raise UnknownLink(f"no track at offset {start_index} ({len(tracks)} tracks)")
        self._unshuffled = None
        if self.shuffle and len(tracks) > 1:
            rest = tracks[:start_index] + tracks[start_index + 1 :]
            self._unshuffled = list(rest)
            self._rng.shuffle(rest)
            tracks = [tracks[start_index], *rest]
            start_index = 0
        self.tracks = list(tracks)  # ours: the caller's list is left as it was
        return start_index

    def following(self, index: int, *, user: bool = False) -> int | None:
        """The index after ``index``: repeat "one" stays (unless the user skips), repeat
        "all" wraps around; None at the end."""
        if not self.tracks:
            return None
        if self.repeat == Repeat.ONE and not user and 0 <= index < len(self.tracks):
            return index
        if index + 1 < len(self.tracks):
            return index + 1
        return 0 if self.repeat == Repeat.ALL else None

    def previous(self, position_ms: int) -> int:
        """Where "previous" goes: like every player, the start of this track unless we are
        at its very beginning (the first 3 s), else the track before."""
        if not self.tracks:
            raise Conflict("the queue is empty: nothing to go back to")
        if position_ms > 3000 or self.index <= 0:
            return max(self.index, 0)
        return self.index - 1

    def set_repeat(self, mode: str) -> None:
        if mode not in REPEAT_MODES:
            raise BadRequest(
                f"repeat must be one of {', '.join(REPEAT_MODES)}, not {mode!r}", field="repeat"
            )
        self.repeat = Repeat(mode)

    def set_shuffle(self, on: bool) -> bool:
        """Shuffle what comes after the current track (restore its order when off); returns
        whether anything changed."""
        if on == self.shuffle:
            return False
        self.shuffle = on
        head, rest = self.tracks[: self.index + 1], self.tracks[self.index + 1 :]
        if on:
            self._unshuffled = list(rest)
            self._rng.shuffle(rest)
        elif self._unshuffled is not None:
            kept = {id(t) for t in rest}
            before = {id(u) for u in self._unshuffled}
            rest = [t for t in self._unshuffled if id(t) in kept] + [
                t for t in rest if id(t) not in before
            ]
            self._unshuffled = None
        self.tracks = head + rest
        return True

    def insert(self, tracks: list[Track], position: int | None) -> int:
        """Insert ``tracks`` at ``position`` (default: the end, clamped to the queue);
        returns how far the current index moved (0 or ``len(tracks)``)."""
        n = len(self.tracks)
        at = n if position is None else max(0, min(position, n))
        shift = len(tracks) if at <= self.index else 0
        self.index += shift
        self.tracks[at:at] = tracks
        if self._unshuffled is not None:
            self._unshuffled.extend(tracks)
        return shift

    def move(self, source: int, target: int, current: Track | None) -> None:
        """Move one entry; ``current`` (the entry playing) keeps being the current one."""
        n = len(self.tracks)
        if not (0 <= source < n and 0 <= target < n):
            raise BadPosition(_positions(n, source, target))
        self.tracks.insert(target, self.tracks.pop(source))
        if current is not None:
            self.index = next(i for i, t in enumerate(self.tracks) if t is current)

    def remove(self, index: int, *, playing: bool) -> None:
        """Remove one entry; not the one playing (``playing``: something is)."""
        n = len(self.tracks)
        if not 0 <= index < n:
            raise BadPosition(_positions(n, index))
        if playing and index == self.index:
            raise Conflict("that track is playing: skip it first")
        del self.tracks[index]
        if index < self.index:
            self.index -= 1

    def clear(self, *, playing: bool) -> None:
        """Remove everything but the track playing now (``playing``: something is)."""
        if playing and 0 <= self.index < len(self.tracks):
            self.tracks = [self.tracks[self.index]]
            self.index = 0
        else:
            self.tracks = []
            self.index = -1
        self._unshuffled = None


def _positions(n: int, *asked: int) -> str:
    got = " and ".join(str(a) for a in asked)
    if n == 0:
        return f"the queue is empty (asked for position {got})"
    return f"no such queue position: {got} (positions are 0..{n - 1})"
