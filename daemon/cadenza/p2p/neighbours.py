"""Overlay neighbours: a utility score per neighbour, and a bounded table that evicts the least
useful ones (DESIGN.md, "Overlay").

Pure: no I/O, no clock; every call takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PeerId = bytes

# Usefulness halves every 10 minutes: "useful recently" means the last few tracks, so a neighbour
# that helped an hour ago counts for 1/64 of one that helps now.
HALF_LIFE_S = 600.0
# Bytes we sent them and bytes they sent us count alike: downloads spare the service, uploads keep
# the overlay reciprocal (and they are why the peer keeps us as a neighbour).
UPLOAD_WEIGHT = 1.0
DOWNLOAD_WEIGHT = 1.0
# A search answer that led to a download is credited with half the bytes of that download: the
# bytes themselves are credited to whoever served them, the answer only found the source.
SEARCH_WEIGHT = 0.5
# A LAN neighbour is worth this much extra (in bytes, never decays): its transfers use neither the
# household's uplink nor the service, and are fast. 1 MiB is about 25 s of 320 kbps audio, so a
# WAN neighbour that recently served a track still outranks an idle LAN one.
LAN_BONUS = 1024 * 1024.0
# A new neighbour cannot be evicted for a minute: it has had no chance to be useful yet.
GRACE_S = 60.0
# Defaults for a Pi: the paper used soft 50 / hard 60 on desktops; every connection costs memory,
# a socket and keep-alives, and a few dozen neighbours already reach thousands of peers in 2 hops.
DEFAULT_SOFT_MAX = 20
DEFAULT_HARD_MAX = 30


def decay(value: float, elapsed: float) -> float:
    """``value`` after ``elapsed`` seconds of exponential decay (no growth if time runs back)."""
    if elapsed <= 0:
        return value
    return value * math.exp2(-elapsed / HALF_LIFE_S)


@dataclass
class UtilityScore:
    """Exponentially decayed usefulness of one neighbour; values are in byte-equivalents."""

    lan: bool = False
    uploads: float = 0.0
    downloads: float = 0.0
    searches: float = 0.0
    updated: float = 0.0

    def _advance(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.uploads = decay(self.uploads, elapsed)
            self.downloads = decay(self.downloads, elapsed)
            self.searches = decay(self.searches, elapsed)
            self.updated = now

    def record_upload(self, nbytes: int, now: float) -> None:
        """We sent them ``nbytes``."""
        self._advance(now)
        self.uploads += max(0, nbytes)

    def record_download(self, nbytes: int, now: float) -> None:
        """They sent us ``nbytes``."""
        self._advance(now)
        self.downloads += max(0, nbytes)

    def record_search_hit(self, nbytes: int, now: float) -> None:
        """Their search answer led to a download of ``nbytes``."""
        self._advance(now)
        self.searches += max(0, nbytes)

    def value(self, now: float) -> float:
        """The score at ``now`` (does not change the stored state)."""
        elapsed = now - self.updated
        activity = (
            UPLOAD_WEIGHT * self.uploads
            + DOWNLOAD_WEIGHT * self.downloads
            + SEARCH_WEIGHT * self.searches
        )
        return decay(activity, elapsed) + (LAN_BONUS if self.lan else 0.0)


class TableFull(Exception):
    """A neighbour was refused: the table is at its hard maximum."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Entry:
    score: UtilityScore
    added: float
    busy: bool = False


@dataclass
class NeighbourTable:
    """The neighbours of this speaker, at most ``hard_max``, trimmed back to ``soft_max``.

    Above the soft maximum the least useful neighbours are evicted, except busy ones (a transfer
    in progress) and new ones (within ``GRACE_S``); so the table can stay above the soft maximum
    for a while, but never goes above the hard one: at the hard maximum a newcomer takes the
    place of the least useful evictable neighbour, and is refused only if there is none.
    """

    soft_max: int = DEFAULT_SOFT_MAX
    hard_max: int = DEFAULT_HARD_MAX
    _entries: dict[PeerId, _Entry] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.soft_max <= self.hard_max:
            raise ValueError(f"need 0 < soft_max <= hard_max, got {self.soft_max}, {self.hard_max}")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def peers(self) -> list[PeerId]:
        return list(self._entries)

    def add(self, peer_id: PeerId, now: float, lan: bool) -> list[PeerId]:
        """Add a neighbour; returns the neighbours evicted to make room (to be disconnected).

        Raises :class:`TableFull` at the hard maximum. Adding a known neighbour only updates
        its LAN flag.
        """
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.score.lan = lan
            return []
        evicted: list[PeerId] = []
        if len(self._entries) >= self.hard_max:
            # Full: the least useful neighbour past its grace makes room. Refusing before
            # trying let anyone who filled the table (a flood of idle links of one account)
            # keep every newcomer out for as long as it liked.
            candidates = self.evict_candidates(now)
            if not candidates:
                raise TableFull(
                    f"neighbour table full ({self.hard_max} neighbours, none evictable)"
                )
            del self._entries[candidates[0]]
            evicted.append(candidates[0])
        self._entries[peer_id] = _Entry(UtilityScore(lan=lan, updated=now), added=now)
        while len(self._entries) > self.soft_max:
            candidates = [p for p in self.evict_candidates(now) if p != peer_id]
            if not candidates:
                break
            del self._entries[candidates[0]]
            evicted.append(candidates[0])
        return evicted

    def remove(self, peer_id: PeerId) -> None:
        """Forget a neighbour (disconnected); no error if unknown."""
        self._entries.pop(peer_id, None)

    def set_busy(self, peer_id: PeerId, busy: bool) -> None:
        """Mark a neighbour as having a transfer in progress (not evictable while busy)."""
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.busy = busy

    def record_upload(self, peer_id: PeerId, nbytes: int, now: float) -> None:
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.score.record_upload(nbytes, now)

    def record_download(self, peer_id: PeerId, nbytes: int, now: float) -> None:
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.score.record_download(nbytes, now)

    def record_search_hit(self, peer_id: PeerId, nbytes: int, now: float) -> None:
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.score.record_search_hit(nbytes, now)

    def score(self, peer_id: PeerId, now: float) -> float:
        """The neighbour's utility at ``now``; KeyError if unknown."""
        return self._entries[peer_id].score.value(now)

    def evict_candidates(self, now: float) -> list[PeerId]:
        """Neighbours that may be evicted, least useful first (ties: oldest first)."""
        candidates = [
            (e.score.value(now), e.added, p)
            for p, e in self._entries.items()
            if not e.busy and now - e.added >= GRACE_S
        ]
        candidates.sort()
        return [p for _, _, p in candidates]
