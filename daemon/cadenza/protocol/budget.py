"""What a peer may make a connection hold: a budget per connection and a pool per process.

Every listener assumes the internet. Flow control alone bounds what a peer can park on one
connection at channels x window (128 x 512 KiB = 64 MiB), which is what a legitimate peer
that streams from us needs on the channels *we* open, and far more than anyone needs on the
channels the *peer* opens: those carry requests of a few hundred bytes. So the channels the
peer opens get a :class:`Budget` of their own, set by the application as trust grows:

* before login or admission (:data:`PRE_AUTH`): two channels, messages of 4 KiB, 8 KiB held
  (a ``Login`` is under 2 KiB);
* after it, whatever the role needs (:data:`LOGGED_IN` at the access point, :data:`PEER`
  between speakers, :data:`SERVICE_PUSHES` for what an access point sends a speaker).

"Held" is what the peer sent on its channels that the application has not consumed yet:
fragments of unfinished messages and whole messages not yet taken. A peer that goes over
its budget has broken the protocol (``OVER_BUDGET``) and the connection ends.

A :class:`MemoryPool` shared by every connection of a process bounds their sum: when a
charge would take it over its limit, the connection holding the most is shed (the oldest
among equals): a flood of connections that each stay within their budget still cannot add
up. Pure: the pool tells the member it sheds (``shed``), and the member tells its I/O layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .errors import ErrorCode, RemoteProtocolError


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on the channels the peer opens towards us."""

    channels: int  # open at once; more are refused (RESET), not queued
    message: int  # the largest message, in bytes
    held: int  # bytes received on them and not yet consumed, fragments included


# Before login/admission: enough for one Login (or Hello-sized request) and a spare channel.
PRE_AUTH: Final = Budget(channels=2, message=4 * 1024, held=8 * 1024)
# A logged-in speaker at the access point: requests, announcements of up to 1,000 file ids
# (~50 KB), playlist edits; many may be in flight while a stream and a prefetch run.
LOGGED_IN: Final = Budget(channels=64, message=256 * 1024, held=1024 * 1024)
# An admitted peer: it asks for manifests and chunks and relays searches (all small); a few
# streams and searches at once.
PEER: Final = Budget(channels=64, message=64 * 1024, held=256 * 1024)
# An access point's pushes to a speaker (bans, playlist changes, session notices).
SERVICE_PUSHES: Final = Budget(channels=32, message=256 * 1024, held=1024 * 1024)
# No budget beyond flow control (the side that dialled a service it trusts).
UNLIMITED: Final = Budget(channels=128, message=1 << 20, held=1 << 62)


class Member(Protocol):
    """What the pool asks of a connection it sheds."""

    def shed(self, reason: str) -> None: ...


class MemoryPool:
    """The bytes held by all connections of a process, bounded; see the module docstring."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.shed_count = 0
        # Held bytes per member; insertion order is age (the oldest first among equals).
        self._held: dict[Member, int] = {}

    def join(self, member: Member) -> None:
        self._held.setdefault(member, 0)

    def leave(self, member: Member) -> None:
        """``member`` is gone: what it held is free."""
        self.total -= self._held.pop(member, 0)

    def charge(self, member: Member, n: int) -> None:
        """``member`` is about to hold ``n`` more bytes; sheds others (or refuses) to fit."""
        while self.total + n > self.limit:
            victim = max(self._held, key=self._held.__getitem__, default=None)
            if victim is None or victim is member or self._held[victim] == 0:
                raise RemoteProtocolError(
                    f"the peers of this process hold {self.total} bytes and may hold"
                    f" {self.limit}: this connection is shed",
                    code=ErrorCode.OVER_BUDGET,
                )
            self.shed_count += 1
            self.leave(victim)
            victim.shed(f"shed: the peers of this process hold more than {self.limit} bytes")
        if member in self._held:
            self._held[member] += n
            self.total += n

    def release(self, member: Member, n: int) -> None:
        if member in self._held:
            self._held[member] -= n
            self.total -= n

    def held(self, member: Member) -> int:
        return self._held.get(member, 0)
