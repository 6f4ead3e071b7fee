"""Bookkeeping of the search flooded 2 hops through the overlay (DESIGN.md, "Streaming a track").

A query starts with TTL 2 at its origin and is sent to a few neighbours (hop 1); each of them
looks in its cache, answers if it holds the file, and forwards with TTL 1 (hop 2); those answer
but forward no further. Every query id is remembered for a while, so a query that arrives again
by another path is dropped, and answers can be sent back the way the query came.

Pure: no I/O, no clock (every call takes ``now``), randomness from an injectable ``rng``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PeerId = bytes

QUERY_ID_LEN = 16
# Two hops: with ~20 neighbours each that reaches a few hundred speakers, enough for the popular
# tracks peers are likely to hold, without flooding the whole overlay for every track.
MAX_TTL = 2
# Neighbours a query goes to at each hop: bounds the flood at 4 + 4 * 4 = 20 speakers asked.
DEFAULT_MAX_FANOUT = 4
# Query ids remembered: far more than a speaker sees in SEEN_TTL_S (one search per track played,
# plus those it relays), so a duplicate is never forgotten early.
DEFAULT_SEEN_CAPACITY = 1024
# A flood is over in well under a second; answers arriving a minute later are useless (playback
# has either started from other sources or the track has changed).
SEEN_TTL_S = 60.0
# Answers kept per query: the tracker returns up to 10 peers, a search need not find more.
MAX_ANSWERS = 10


@dataclass(frozen=True)
class Query:
    """A search we started: send ``id``, ``file_id``, ``ttl`` to each of ``send_to``."""

    id: bytes
    file_id: str
    ttl: int = MAX_TTL
    send_to: tuple[PeerId, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What to do with a query received from a neighbour.

    ``answer_locally``: look the file up in the cache and answer if it is held whole.
    ``forward_to``: neighbours to forward the query to, with TTL ``forward_ttl``.
    ``drop_reason``: why the query was dropped (then nothing else is to be done).
    """

    answer_locally: bool
    forward_to: list[PeerId]
    drop_reason: str | None = None
    forward_ttl: int = 0


@dataclass
class _Seen:
    expires: float
    from_peer: PeerId | None  # None: our own query
    answers: list[PeerId] = field(default_factory=list)


def _drop(reason: str) -> Decision:
    return Decision(answer_locally=False, forward_to=[], drop_reason=reason)


class SearchRouter:
    """Duplicate suppression, TTL and fan-out for 2-hop searches."""

    def __init__(
        self,
        max_fanout: int = DEFAULT_MAX_FANOUT,
        seen_capacity: int = DEFAULT_SEEN_CAPACITY,
        *,
        seen_ttl: float = SEEN_TTL_S,
        rng: Callable[[int], bytes] | None = None,
    ) -> None:
        if max_fanout < 0 or seen_capacity < 1 or seen_ttl <= 0:
            raise ValueError("need max_fanout >= 0, seen_capacity >= 1, seen_ttl > 0")
        self.max_fanout = max_fanout
        self.seen_capacity = seen_capacity
        self.seen_ttl = seen_ttl
        self._rng = rng if rng is not None else os.urandom  # looked up now, not at import
        # Insertion order is expiry order (entries are never refreshed), oldest first.
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            qid, entry = next(iter(self._seen.items()))
            if entry.expires > now:
                break
            del self._seen[qid]

    def _remember(self, query_id: bytes, from_peer: PeerId | None, now: float) -> None:
        self._seen[query_id] = _Seen(now + self.seen_ttl, from_peer)
        while len(self._seen) > self.seen_capacity:
            self._seen.popitem(last=False)

    def _targets(self, neighbours: Sequence[PeerId], exclude: PeerId | None) -> list[PeerId]:
        out: list[PeerId] = []
        for peer in neighbours:
            if len(out) >= self.max_fanout:
                break
            if peer != exclude and peer not in out:
                out.append(peer)
        return out

    def seen(self, query_id: bytes, now: float) -> bool:
        self._expire(now)
        return query_id in self._seen

    def new_query(self, file_id: str, now: float, neighbours: Sequence[PeerId] = ()) -> Query:
        """Start a search: a fresh id (remembered, so echoes are dropped) and its first hop.

        ``neighbours`` in order of preference (most useful first).
        """
        self._expire(now)
        query_id = self._rng(QUERY_ID_LEN)
        if len(query_id) != QUERY_ID_LEN:
            raise ValueError(f"rng returned {len(query_id)} bytes, need {QUERY_ID_LEN}")
        self._remember(query_id, None, now)
        return Query(query_id, file_id, MAX_TTL, tuple(self._targets(neighbours, None)))

    def on_query(
        self,
        query_id: bytes,
        file_id: str,
        ttl: int,
        from_peer: PeerId,
        now: float,
        neighbours: Sequence[PeerId] = (),
    ) -> Decision:
        """A neighbour sent us a query. ``neighbours`` in order of preference."""
        self._expire(now)
        if len(query_id) != QUERY_ID_LEN:
            return _drop("bad query id")
        if not file_id:
            return _drop("no file id")
        if ttl < 1:
            return _drop("ttl expired")
        if query_id in self._seen:
            return _drop("duplicate")
        self._remember(query_id, from_peer, now)
        # A TTL above the maximum is clamped: 2 hops from the origin, whatever a peer claims.
        forward_ttl = min(ttl, MAX_TTL) - 1
        forward_to = self._targets(neighbours, from_peer) if forward_ttl >= 1 else []
        return Decision(answer_locally=True, forward_to=forward_to, forward_ttl=forward_ttl)

    def record_answer(self, query_id: bytes, peer: PeerId, now: float) -> bool:
        """``peer`` holds the file asked for; False if the query is unknown or expired."""
        self._expire(now)
        entry = self._seen.get(query_id)
        if entry is None:
            return False
        if peer not in entry.answers and len(entry.answers) < MAX_ANSWERS:
            entry.answers.append(peer)
        return True

    def answers(self, query_id: bytes, now: float) -> list[PeerId]:
        """Peers that answered ``query_id`` so far (empty if unknown or expired)."""
        self._expire(now)
        entry = self._seen.get(query_id)
        return list(entry.answers) if entry is not None else []

    def reply_to(self, query_id: bytes, now: float) -> PeerId | None:
        """The neighbour to relay answers to (None: our own query, or unknown/expired)."""
        self._expire(now)
        entry = self._seen.get(query_id)
        return entry.from_peer if entry is not None else None
